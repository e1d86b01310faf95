"""``kokorozoo chat``: talk to a counselor model (you are the client). The models load only when
the command runs, so ``kokorozoo --help`` stays fast."""

from __future__ import annotations

import argparse
import sys

from kokorozoo.cli.common import add_endpoint_options, at_least, endpoint_settings, interruptible


def _chat(args: argparse.Namespace) -> int:
    from kokorozoo.generation import Sampling
    from kokorozoo.interactive.chat import Chat, run_chat
    from kokorozoo.interactive.models import Rater
    from kokorozoo.interactive.remote import find_speaker, load_speaker, report_usage

    settings = endpoint_settings(args)
    counselor = find_speaker(args.model, "counselor", "the chat's model", settings, args.system_prompt)
    rater = Rater.find(args.rate) if args.rate else None
    terminal = sys.stdin.isatty() and sys.stdout.isatty()
    if terminal:
        print(f"loading {args.model} ...", file=sys.stderr)
    counselor, rater = load_speaker(counselor), rater and Rater.load(rater)
    counselor.decode_with(args.max_new_tokens, Sampling(args.temperature, args.seed))
    try:
        return run_chat(Chat(counselor, rater, opening=args.opening, terminal=terminal))
    finally:
        report_usage(counselor)


def add_parser(commands: argparse._SubParsersAction) -> None:
    from kokorozoo.interactive.sessions import OPENING

    chat = commands.add_parser(
        "chat",
        help="talk to a counselor model (you are the client)",
        description="Talk to a counselor model: you are the client. The model's replies stream as they are "
        "generated (greedy and the model's own max_new_tokens unless --temperature and --max-new-tokens say "
        "otherwise), each prompted with the session so far as its training prompted it. Commands: /retry (a new "
        "reply to your last turn), /reset, /save FILE (a KokoroChat-format JSON file), /quit; end of input also "
        "ends the chat. At the prompt Ctrl-C clears the line and a second Ctrl-C ends the chat. Without a "
        "terminal, each stdin line is a client turn and each reply one line on stdout.",
    )
    chat.add_argument(
        "model",
        help="an exported response model (kokorozoo export), a .ckpt of one, or MODEL@URL: a model behind an"
        " OpenAI-compatible endpoint (kokorozoo serve, vLLM, an API)",
    )
    chat.add_argument(
        "--system-prompt",
        metavar="TEXT",
        help="for a MODEL@URL: the system message before the session (default: none; a kokorozoo serve model then"
        " uses the one it was trained with)",
    )
    chat.add_argument(
        "--rate",
        metavar="SCORER",
        help="rate each saved session with this score model "
        "(an export or .ckpt of score-heads or score) and print the 20 items and the total",
    )
    chat.add_argument(
        "--opening", default=OPENING, help=f"the counselor's first turn ('' to let the client open; default: {OPENING})"
    )
    chat.add_argument(
        "--temperature",
        type=at_least(0.0, float),
        default=0.0,
        help="0 (default) decodes greedily, as the model was evaluated; above 0 samples each token from the "
        "softmax of the logits divided by it",
    )
    chat.add_argument(
        "--seed", type=int, default=0, help="the sampling's seed: the same seed, the same replies (default: 0)"
    )
    chat.add_argument(
        "--max-new-tokens",
        type=at_least(1, int),
        metavar="N",
        help="the longest reply in tokens (default: the model's own, as it was trained and tested)",
    )
    add_endpoint_options(chat)
    chat.set_defaults(handler=interruptible(_chat))
