"""``kokorozoo chat`` and ``kokorozoo simulate``: their options and handlers (the models load only
when a command runs, so ``kokorozoo --help`` stays fast)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from kokorozoo.errors import UsageError

#: The exit status after Ctrl-C (128 + SIGINT, as shells report it and ``kokorozoo fit`` exits).
INTERRUPTED = 130


def _interruptible(handler):
    """Ctrl-C, while a model loads or a reply streams or at the prompt, ends the command in one
    line (a file is never half-written: each is written whole, then moved into place)."""

    def run(args: argparse.Namespace) -> int:
        try:
            return handler(args)
        except KeyboardInterrupt:
            print("\nkokorozoo: interrupted", file=sys.stderr)
            return INTERRUPTED

    return run


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


def add_chat_parser(commands: argparse._SubParsersAction) -> None:
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
    chat.add_argument("--rate", metavar="SCORER", help="rate each saved session with this score model "
                      "(an export or .ckpt of score-heads or score) and print the 20 items and the total")
    chat.add_argument("--opening", default=OPENING, help="the counselor's first turn ('' to let the client open;"
                      f" default: {OPENING})")
    chat.set_defaults(handler=_interruptible(_chat))


def _simulate(args: argparse.Namespace) -> int:
    from kokorozoo.data.kokorochat import load_kokorochat
    from kokorozoo.interactive.models import Rater, Speaker
    from kokorozoo.interactive.simulate import SESSIONS_FOLDER, check_settings, simulate

    check_settings(args.sessions, args.turns, args.opening_turns)
    out = Path(args.out)
    folder = out / SESSIONS_FOLDER
    if folder.is_dir() and any(folder.iterdir()) and not args.overwrite:
        raise UsageError(f"{folder} already holds sessions: choose a new --out, or pass --overwrite")
    counselor = Speaker.find(args.counselor, "counselor", "--counselor")
    client = Speaker.find(args.client, "client", "--client")
    rater = Rater.find(args.scorer) if args.scorer else None
    data = load_kokorochat(args.root)
    counselor, client, rater = Speaker.load(counselor), Speaker.load(client), rater and Rater.load(rater)
    if args.overwrite and folder.is_dir():
        for old in folder.glob("*.json"):
            old.unlink()
    result = simulate(data.dialogues, counselor, client, rater, args.sessions, args.turns, args.opening_turns,
                      args.seed, out, args.batch_size)
    summary, timing = result["summary"], result["timing"]
    print(f"{summary['sessions']} sessions ({summary['ended']}), {timing['rounds']} rounds in {timing['seconds']:.1f} s:"
          f" {timing['seconds_per_round']:.2f} s per round, {timing['turns_per_second']:.2f} turns/s")
    scores = summary.get("scores")
    if scores and scores.get("rated"):
        print(f"predicted total {scores['predicted']['total_mean']:.1f} against {scores['real']['total_mean']:.1f} for the"
              f" real dialogues they opened from (items MAE {scores['difference']['items_mae']:.3f})")
    print(f"wrote {folder}, {'scores.csv, ' if rater else ''}summary.json in {out}")
    return 0


def add_simulate_parser(commands: argparse._SubParsersAction) -> None:
    sim = commands.add_parser(
        "simulate",
        help="sessions between a counselor model and a client model, rated by a score model",
        description="Simulated sessions: each opens from a real test dialogue (score >= 99, drawn with --seed: "
        "its topic and first --opening-turns turns), then the counselor and client models alternate until "
        "--turns turns or the counselor closes (a turn with a closing phrase such as ありがとうございました). All "
        "open sessions advance together, each reusing its computed history. Writes OUT/kokorochat_dialogues/ "
        "(KokoroChat JSON files), OUT/scores.csv and OUT/summary.json (with --scorer: predicted against real "
        "scores). Deterministic for a seed.",
    )
    sim.add_argument("--counselor", required=True, help="an exported counselor model (or its .ckpt)")
    sim.add_argument("--client", required=True, help="an exported client model (data.init_args.role: client)")
    sim.add_argument("--scorer", help="an exported score-heads (or score) model rating every finished session")
    sim.add_argument("--sessions", type=int, default=8, help="how many sessions (default: 8)")
    sim.add_argument("--turns", type=int, default=40, help="the longest session in merged turns, opening included"
                     " (default: 40)")
    sim.add_argument("--opening-turns", type=int, default=4, help="turns of the real dialogue each session opens"
                     " with (default: 4)")
    sim.add_argument("--seed", type=int, default=0, help="chooses the opening dialogues (default: 0)")
    sim.add_argument("--batch-size", type=int, default=0, help="sessions generated together per model (default 0:"
                     " all open sessions; 1: one at a time)")
    sim.add_argument("--out", default="runs/simulate", help="the output folder (default: runs/simulate)")
    sim.add_argument("--overwrite", action="store_true", help="replace the sessions of an earlier run in --out")
    sim.add_argument("--root", help="the KokoroChat folder (default: searched, see kokorozoo data stats --help)")
    sim.set_defaults(handler=_interruptible(_simulate))
