"""The ``kokorozoo`` command: one module a command, this one only dispatches.

``kokorozoo fit|validate|test|predict`` go to LightningCLI (:mod:`kokorozoo.cli.lightning`); the
other commands are argparse subcommands, each with its parser and handler in its own module. A
user's mistake (bad data, a missing file, a wrong option) ends in one line on stderr and exit
code 2, never a traceback.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from kokorozoo.cli import baseline, chat, data, export, report, seeds, serve, simulate, tasks
from kokorozoo.cli.common import USAGE_ERROR, fail, quiet_foreign_noise
from kokorozoo.data.validation import DataError
from kokorozoo.errors import UsageError
from kokorozoo.registry import RegistryError

#: The commands LightningCLI runs (its own ``subcommands()``; named here so that dispatching
#: imports neither torch nor Lightning).
LIGHTNING_COMMANDS = ("fit", "validate", "test", "predict")
#: What ``kokorozoo --help`` says of each of them.
LIGHTNING_SUMMARIES = {
    "fit": "train a task from a config, then test its best checkpoint (resume with --ckpt_path)",
    "validate": "validate a checkpoint",
    "test": "test a checkpoint: metrics.json beside every baseline, and its rows",
    "predict": "predict with a checkpoint: its rows only",
}
assert tuple(LIGHTNING_SUMMARIES) == LIGHTNING_COMMANDS
#: The other commands, in the order ``kokorozoo --help`` lists them.
COMMANDS = (data, export, tasks, report, chat, simulate, serve, baseline, seeds)


def _user_errors() -> tuple[type[BaseException], ...]:
    """The errors that are a user's mistake; the backbone's only once it is imported (it imports
    torch, which the light commands never need). A model file's problems are UsageErrors."""
    errors: list[type[BaseException]] = [DataError, FileNotFoundError, UsageError, RegistryError]
    if "kokorozoo.backbone" in sys.modules:
        errors.append(sys.modules["kokorozoo.backbone"].BackboneError)
    return tuple(errors)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="kokorozoo",
        description="Japanese counseling-dialogue models on KokoroChat.",
        epilog="fit, validate, test and predict take a config (--config FILE) and LightningCLI's options: "
        "`kokorozoo fit --help`. Environment: KOKOROCHAT_ROOT (the data), KOKOROZOO_CACHE (built models "
        "and baselines), HF_HUB_OFFLINE=1 (never reach the hub); settings from PL_* environment "
        "variables (LightningCLI's default_env) are off: a run is its config and command line.",
    )
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, summary in LIGHTNING_SUMMARIES.items():  # listed here, run by LightningCLI (see main)
        commands.add_parser(name, help=summary, add_help=False)
    for command in COMMANDS:
        command.add_parser(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    quiet_foreign_noise()
    try:
        if args and args[0] in LIGHTNING_COMMANDS:
            from kokorozoo.cli.lightning import run_lightning_cli

            return run_lightning_cli(None if argv is None else args)
        parser = build_parser()
        parsed = parser.parse_args(args)
        if parsed.command is None:
            parser.print_help()
            return USAGE_ERROR
        return parsed.handler(parsed)
    except _user_errors() as e:
        return fail(str(e))
