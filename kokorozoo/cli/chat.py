"""``kokorozoo chat``: talk to a counselor model (you are the client). The models load only when
the command runs, so ``kokorozoo --help`` stays fast."""

from __future__ import annotations

import argparse
import sys

from kokorozoo.cli.common import interruptible


def _chat(args: argparse.Namespace) -> int:
    from kokorozoo.interactive.chat import Chat, run_chat
    from kokorozoo.interactive.models import Rater, Speaker

    counselor = Speaker.find(args.model, "counselor", "the chat's model")
    rater = Rater.find(args.rate) if args.rate else None
    terminal = sys.stdin.isatty() and sys.stdout.isatty()
    if terminal:
        print(f"loading {args.model} ...", file=sys.stderr)
    counselor, rater = Speaker.load(counselor), rater and Rater.load(rater)
    return run_chat(Chat(counselor, rater, opening=args.opening, terminal=terminal))


def add_parser(commands: argparse._SubParsersAction) -> None:
    from kokorozoo.interactive.sessions import OPENING

    chat = commands.add_parser(
        "chat",
        help="talk to a counselor model (you are the client)",
        description="Talk to a counselor model: you are the client. The model's replies stream as they are "
        "generated (greedy, the model's own max_new_tokens), each prompted with the session so far as its "
        "training prompted it. Commands: /reset, /save FILE (a KokoroChat-format JSON file), /quit; Ctrl-C or "
        "end of input also end the chat. Without a terminal, each stdin line is a client turn and each reply "
        "one line on stdout.",
    )
    chat.add_argument("model", help="an exported response model (kokorozoo export) or a .ckpt of one")
    chat.add_argument(
        "--rate",
        metavar="SCORER",
        help="rate each saved session with this score model "
        "(an export or .ckpt of score-heads or score) and print the 20 items and the total",
    )
    chat.add_argument(
        "--opening", default=OPENING, help=f"the counselor's first turn ('' to let the client open; default: {OPENING})"
    )
    chat.set_defaults(handler=interruptible(_chat))
