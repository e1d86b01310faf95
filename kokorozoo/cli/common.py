"""What every ``kokorozoo`` command shares: its exit statuses, how a mistake is said, how Ctrl-C
ends it, and the rule that no command writes into a folder holding earlier results unless asked."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path

from kokorozoo.errors import UsageError

#: A user's mistake (bad data, a missing file, a wrong option): one line on stderr, never a traceback.
USAGE_ERROR = 2
#: The exit status of a command stopped by Ctrl-C (128 + SIGINT, as shells report it).
INTERRUPTED = 130

Handler = Callable[[argparse.Namespace], int]


def fail(message: str) -> int:
    """Say ``message`` as the one line of a user's mistake; the exit status to return."""
    print(f"kokorozoo: error: {message}", file=sys.stderr)
    return USAGE_ERROR


def interruptible(handler: Handler) -> Handler:
    """Ctrl-C, while a model loads or a reply streams or at the prompt, ends the command in one
    line (a file is never half-written: each is written whole, then moved into place)."""

    def run(args: argparse.Namespace) -> int:
        try:
            return handler(args)
        except KeyboardInterrupt:
            print("\nkokorozoo: interrupted", file=sys.stderr)
            return INTERRUPTED

    return run


def output_folder(out: str | Path, overwrite: bool) -> Path:
    """``out``, refused when it is a file, or a folder that already holds files and ``overwrite``
    is not given: a command never replaces earlier results silently."""
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise UsageError(f"{out}: exists and is not a folder")
    if out.is_dir() and any(out.iterdir()) and not overwrite:
        raise UsageError(f"{out}: not empty (pass --overwrite to write into it anyway)")
    return out


def add_output_options(parser: argparse.ArgumentParser, default: str) -> None:
    """``--out DIR`` (``default`` says where it goes without one) and ``--overwrite``, for a
    command that writes a report folder (see :func:`output_folder`)."""
    parser.add_argument("--out", metavar="DIR", help=f"the report's folder (default: {default})")
    parser.add_argument("--overwrite", action="store_true", help="write into --out even when it already holds files")
