"""What every ``kokorozoo`` command shares: its exit statuses, how a mistake is said, how Ctrl-C
ends it, and the rule that no command writes into a folder holding earlier results unless asked."""

from __future__ import annotations

import argparse
import logging
import os
import sys
import warnings
from collections.abc import Callable
from pathlib import Path

from kokorozoo.errors import UsageError

#: A user's mistake (bad data, a missing file, a wrong option): one line on stderr, never a traceback.
USAGE_ERROR = 2
#: The exit status of a command stopped by Ctrl-C (128 + SIGINT, as shells report it).
INTERRUPTED = 130

Handler = Callable[[argparse.Namespace], int]


#: Warnings from the libraries underneath that say nothing a kokorozoo user can act on: each is
#: about a call kokorozoo does not make itself (a deprecation inside peft, transformers or
#: Lightning) and is fixed by their next releases.
FOREIGN_WARNINGS = (
    (FutureWarning, r"`is_gradient_checkpointing` is deprecated"),  # transformers, asked by peft
    (FutureWarning, r"`isinstance\(treespec, LeafSpec\)` is deprecated"),  # torch, from Lightning's pytree use
)
#: Log records of the same kind, by logger and message start.
FOREIGN_LOG_LINES = (
    (
        "bitsandbytes.backends.cpu.ops",
        "Failed to load CPU gemm_4bit_forward from kernels-community",
    ),  # a hub kernel, never fetched
)
#: Lightning's advertisement, dropped at the handler Lightning gives its logger (see
#: :func:`kokorozoo.cli.lightning.lightning_messages_to_stdout`).
LIGHTNING_ADVERT = "💡 Tip:"


class DropLines(logging.Filter):
    """Drops the log records whose message starts with ``start``."""

    def __init__(self, start: str):
        super().__init__()
        self.start = start

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith(self.start)


def quiet_foreign_noise() -> None:
    """A user sees what concerns them: the :data:`FOREIGN_WARNINGS` and :data:`FOREIGN_LOG_LINES`
    are dropped (nothing else: a warning about the user's settings still shows), and the
    transformers weight-loading bar is shown on a terminal only, never written into a log file."""
    for category, message in FOREIGN_WARNINGS:
        warnings.filterwarnings("ignore", message=message, category=category)
    for name, start in FOREIGN_LOG_LINES:
        logging.getLogger(name).addFilter(DropLines(start))
    if not sys.stderr.isatty():  # read by huggingface_hub and transformers when they are imported
        os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")


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


def at_least(lowest, kind):
    """An argparse type: a number of ``kind`` no smaller than ``lowest`` (argparse's one-line error)."""

    def parse(text: str):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
        if value < lowest:
            raise argparse.ArgumentTypeError(f"must be {lowest} or more, got {text}")
        return value

    return parse


def add_endpoint_options(parser: argparse.ArgumentParser) -> None:
    """How a model given as ``MODEL@URL`` (an OpenAI-compatible endpoint) is reached; see
    :class:`kokorozoo.endpoints.client.Endpoint`."""
    group = parser.add_argument_group(
        "models behind an OpenAI-compatible endpoint",
        "A model given as MODEL@URL (gpt-4o@https://api.openai.com/v1, or a kokorozoo serve / vLLM server) is asked"
        " over the API; answers are cached on disk (KOKOROZOO_ENDPOINT_CACHE, default in KOKOROZOO_CACHE), so a"
        " rerun sends only what was not answered before.",
    )
    group.add_argument(
        "--api-key-env",
        default="OPENAI_API_KEY",
        metavar="VAR",
        help="the environment variable holding the key (default: OPENAI_API_KEY; a server on this machine needs none)",
    )
    group.add_argument(
        "--concurrency", type=at_least(1, int), default=4, help="requests in flight at once (default: 4)"
    )
    group.add_argument(
        "--request-timeout",
        type=at_least(1.0, float),
        default=120.0,
        metavar="SECONDS",
        help="the longest one request may take (default: 120)",
    )
    group.add_argument(
        "--max-retries",
        type=at_least(0, int),
        default=5,
        help="retries of a request answered 408/409/429/5xx or cut off, with backoff and Retry-After (default: 5)",
    )


def endpoint_settings(args: argparse.Namespace) -> dict:
    return {
        "api_key_env": args.api_key_env,
        "concurrency": args.concurrency,
        "timeout": args.request_timeout,
        "max_retries": args.max_retries,
    }
