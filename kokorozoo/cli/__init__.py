"""The ``kokorozoo`` command.

``kokorozoo fit|validate|test|predict`` go to LightningCLI; ``kokorozoo data``, ``export`` and
``tasks`` are plain subcommands. A user's mistake (bad data, a missing file, a wrong option) ends
in one line on stderr and exit code 2, never a traceback.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Sequence

from kokorozoo.data.kokorochat import DEFAULT_SEARCH_PATHS_DOC, DataError
from kokorozoo.errors import UsageError
from kokorozoo.cli.report import add_data_report_parser, add_report_parser
from kokorozoo.cli.chat import add_chat_parser, add_simulate_parser
from kokorozoo.registry import RegistryError, TaskEntry, scan_tasks

USAGE_ERROR = 2
LIGHTNING_COMMANDS = ("fit", "validate", "test", "predict")


def _user_errors() -> tuple[type[BaseException], ...]:
    """The errors that are a user's mistake; the backbone's only once it is imported (torch)."""
    errors: list[type[BaseException]] = [DataError, FileNotFoundError, UsageError, RegistryError]
    if "kokorozoo.backbone" in sys.modules:
        errors.append(sys.modules["kokorozoo.backbone"].BackboneError)
    if "kokorozoo.tasks.base" in sys.modules:
        errors.append(sys.modules["kokorozoo.tasks.base"].CheckpointError)
    return tuple(errors)


def _config_error_line(message: str) -> str:
    """jsonargparse explains a bad config over many lines; keep the key and the deepest reason."""
    lines = [line for line in message.splitlines() if line.strip()]
    noise = ("Subtypes:", "Errors:", "Given value", "- Expected a <class 'NoneType'>")
    reasons = [line for line in lines[1:] if not line.strip().startswith(noise)]
    if not reasons:
        return lines[0] if lines else message
    deepest = max(reasons, key=lambda line: len(line) - len(line.lstrip()))
    return f"{lines[0].strip()} {deepest.strip().lstrip('- ')}"


def _fail(message: str) -> int:
    print(f"kokorozoo: error: {message}", file=sys.stderr)
    return USAGE_ERROR


# ---------------------------------------------------------------------------------------------
# kokorozoo data


def _data_stats(args: argparse.Namespace) -> int:
    from kokorozoo.data import dataset_stats, format_stats, in_subset, load_kokorochat

    data = load_kokorochat(args.root, on_error=args.on_error, progress=not args.json and sys.stderr.isatty())
    for error in data.skipped:
        print(f"kokorozoo: skipped {error}", file=sys.stderr)
    dialogues = [d for d in data if in_subset(d.score, args.subset)]
    stats = dataset_stats(dialogues)
    if args.json:
        stats = {"root": data.root, "subset": args.subset, "skipped_files": len(data.skipped), **stats}
        print(json.dumps(stats, ensure_ascii=False))
    else:
        skipped = f", {len(data.skipped)} invalid files skipped" if data.skipped else ""
        print(format_stats(stats, f"KokoroChat ({args.subset}) from {data.root}{skipped}"))
    return 0


def _add_data_parser(commands: argparse._SubParsersAction) -> None:
    data = commands.add_parser("data", help="inspect the KokoroChat data", description="Inspect the KokoroChat data.")
    data_commands = data.add_subparsers(dest="data_command", metavar="COMMAND", required=True)
    stats = data_commands.add_parser(
        "stats",
        help="the paper's Table 3 figures and more",
        description="Dataset statistics: the paper's Table 3 (dialogues, speakers, utterances, averages), merged "
        "turns, total-score distribution, screening flags and topics. Every file is validated first.",
        epilog=DEFAULT_SEARCH_PATHS_DOC,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    stats.add_argument("--root", help="the KokoroChat folder (default: searched, see below)")
    stats.add_argument(
        "--subset",
        choices=("all", "low", "high", "full", "test"),
        default="all",
        help="response-generation subset by total score: low <70, high 70-98, full <=98, test >=99 (default: all)",
    )
    stats.add_argument("--json", action="store_true", help="print one JSON object (snake_case keys)")
    stats.add_argument(
        "--on-error",
        choices=("raise", "skip"),
        default="raise",
        help="on an invalid file: stop with its name and field (raise, default) or report and skip it",
    )
    stats.set_defaults(handler=_data_stats)
    add_data_report_parser(data_commands)


# ---------------------------------------------------------------------------------------------
# kokorozoo export


def _export(args: argparse.Namespace) -> int:
    from pathlib import Path

    from kokorozoo.tasks.base import load_task

    out_dir = Path(args.out_dir)
    if out_dir.is_dir() and any(out_dir.iterdir()) and not args.overwrite:
        raise UsageError(f"{out_dir} is not empty (an earlier export?): choose a new folder, or pass --overwrite")
    if out_dir.exists() and not out_dir.is_dir():
        raise UsageError(f"{out_dir} is a file, not a folder")
    try:
        task = load_task(args.checkpoint)
    except ValueError as e:
        raise UsageError(str(e)) from None
    out = task.export(out_dir)
    print(f"wrote the PEFT adapter, tokenizer and kokorozoo.json of {args.checkpoint} to {out}")
    return 0


def _add_export_parser(commands: argparse._SubParsersAction) -> None:
    export = commands.add_parser(
        "export",
        help="write a checkpoint's adapter as a PEFT folder",
        description="Write the trained adapter of a kokorozoo checkpoint as a PEFT adapter folder (load it with "
        "PeftModel.from_pretrained(base_model, OUT_DIR)), with the tokenizer and kokorozoo.json (the task and "
        "its settings).",
    )
    export.add_argument("checkpoint", help="a .ckpt written by kokorozoo fit (e.g. best-*.ckpt or last.ckpt)")
    export.add_argument("out_dir", help="the folder to write (new or empty)")
    export.add_argument("--overwrite", action="store_true", help="write into a folder that is not empty")
    export.set_defaults(handler=_export)


# ---------------------------------------------------------------------------------------------
# kokorozoo tasks


def _tasks(args: argparse.Namespace) -> int:
    entries = scan_tasks()
    if args.json:
        rows = [
            {
                "name": e.name,
                "class": e.class_name,
                "class_path": e.class_path,
                "distribution": e.distribution,
                "version": e.version,
                "core": e.is_core,
                "status": "ok" if e.ok else "error",
                "error": e.error,
                "conflict": e.conflict,
            }
            for e in entries
        ]
        print(json.dumps(rows, ensure_ascii=False))
    else:
        print(format_tasks(entries))
    conflicts = [e.conflict for e in entries if e.conflict]
    if conflicts:
        raise RegistryError("; ".join(conflicts))
    return 0


def format_tasks(entries: Sequence[TaskEntry]) -> str:
    """The ``kokorozoo tasks`` table: name, class (what a config writes as ``class_path``), the
    distribution providing it, and ``ok`` or the reason it cannot be used."""
    if not entries:
        return "no tasks registered (is kokorozoo installed? pip install -e .)"
    rows = [("NAME", "CLASS", "PROVIDED BY", "STATUS")]
    rows += [(e.name, e.class_name, e.provider, "ok" if e.ok else f"error: {e.error}") for e in entries]
    widths = [max(len(row[i]) for row in rows) for i in range(3)]
    lines = ["  ".join([*(cell.ljust(width) for cell, width in zip(row, widths)), row[3]]) for row in rows]
    lines += ["", "A config names a task by its class, e.g. model: {class_path: ResponseTask}."]
    return "\n".join(lines)


def _add_tasks_parser(commands: argparse._SubParsersAction) -> None:
    tasks = commands.add_parser(
        "tasks",
        help="list the registered tasks, core and plugins",
        description="List every task registered under the kokorozoo.tasks entry points (core and installed "
        "plugins): its name, its class (what a config gives as model.class_path), the distribution providing "
        "it, and ok or why it cannot be used. A plugin that fails to import is listed with its error (exit 0); "
        "a plugin that shadows a core task is an error (exit 2).",
    )
    tasks.add_argument("--json", action="store_true", help="print one JSON list")
    tasks.set_defaults(handler=_tasks)


# ---------------------------------------------------------------------------------------------
# Entry point


def _add_baseline_parser(commands: argparse._SubParsersAction) -> None:
    from kokorozoo.cli.baseline import add_baseline_parser

    add_baseline_parser(commands)


SUBCOMMAND_PARSERS: list[Callable[[argparse._SubParsersAction], None]] = [
    _add_data_parser,
    _add_export_parser,
    _add_tasks_parser,
    add_report_parser,
    add_chat_parser,
    add_simulate_parser,
    _add_baseline_parser,
]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="kokorozoo",
        description="Japanese counseling-dialogue models on KokoroChat.",
        epilog="Training and evaluation: kokorozoo {fit,validate,test,predict} --config FILE "
        "(see `kokorozoo fit --help`).",
    )
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    for add in SUBCOMMAND_PARSERS:
        add(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if args and args[0] in LIGHTNING_COMMANDS:
        from kokorozoo.cli.lightning import run_lightning_cli

        try:
            return run_lightning_cli(None if argv is None else args)
        except argparse.ArgumentError as e:
            return _fail(_config_error_line(str(e)))
        except _user_errors() as e:
            return _fail(str(e))
    parser = build_parser()
    parsed = parser.parse_args(args)
    if parsed.command is None:
        parser.print_help()
        return USAGE_ERROR
    try:
        return parsed.handler(parsed)
    except _user_errors() as e:
        return _fail(str(e))


if __name__ == "__main__":
    sys.exit(main())
