"""``kokorozoo simulate``: sessions between a counselor model and a client model, rated by a score
model. The models load only when the command runs, so ``kokorozoo --help`` stays fast."""

from __future__ import annotations

import argparse
from pathlib import Path

from kokorozoo.cli.common import add_endpoint_options, endpoint_settings, interruptible, output_folder
from kokorozoo.errors import UsageError


def _simulate(args: argparse.Namespace) -> int:
    from kokorozoo.data import load_kokorochat
    from kokorozoo.endpoints.client import Endpoint
    from kokorozoo.interactive.models import Rater
    from kokorozoo.interactive.remote import connect, find_speaker, load_speaker, report_usage
    from kokorozoo.interactive.simulate import SESSIONS_FOLDER, check_settings, simulate

    check_settings(args.sessions, args.turns, args.opening_turns)
    out = Path(args.out)
    folder = output_folder(out / SESSIONS_FOLDER, args.overwrite)
    from kokorozoo.interactive.judged import CLIENT_PROMPT, Judge

    settings = endpoint_settings(args)
    prompted = args.client_prompt == "appendix-e"
    if prompted and not Endpoint.names_one(args.client):
        raise UsageError(
            f"--client-prompt appendix-e prompts a model behind an endpoint: give --client as MODEL@URL, not {args.client}"
        )
    client_prompt = args.client_system_prompt or (CLIENT_PROMPT if prompted else None)
    counselor = find_speaker(args.counselor, "counselor", "--counselor", settings, args.counselor_system_prompt)
    client = find_speaker(args.client, "client", "--client", settings, client_prompt)
    rater = Rater.find(args.scorer) if args.scorer else None
    judge = Judge(connect(Endpoint.parse(args.judge, **settings))) if args.judge else None
    data = load_kokorochat(args.root)
    counselor, client, rater = load_speaker(counselor), load_speaker(client), rater and Rater.load(rater)
    if args.overwrite and folder.is_dir():
        for old in folder.glob("*.json"):
            old.unlink()
    try:
        result = simulate(
            data.dialogues,
            counselor,
            client,
            rater,
            args.sessions,
            args.turns,
            args.opening_turns,
            args.seed,
            out,
            args.batch_size,
            prompted_client=prompted,
            judge=judge,
        )
    finally:
        report_usage(counselor, client, *([judge.client] if judge else []))
    summary, timing = result["summary"], result["timing"]
    print(
        f"{summary['sessions']} sessions ({summary['ended']}), {timing['rounds']} rounds in {timing['seconds']:.1f} s:"
        f" {timing['seconds_per_round']:.2f} s per round, {timing['turns_per_second']:.2f} turns/s"
    )
    scores = summary.get("scores")
    if scores and scores.get("rated"):
        print(
            f"predicted total {scores['predicted']['total_mean']:.1f} against {scores['real']['total_mean']:.1f} for the"
            f" real dialogues they opened from (items MAE {scores['difference']['items_mae']:.3f})"
        )
    print(f"wrote {folder}, {'scores.csv, ' if rater else ''}summary.json in {out}")
    return 0


def add_parser(commands: argparse._SubParsersAction) -> None:
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
    sim.add_argument(
        "--counselor", required=True, help="an exported counselor model (or its .ckpt), or MODEL@URL (an endpoint)"
    )
    sim.add_argument(
        "--client",
        required=True,
        help="an exported client model (data.init_args.role: client), or MODEL@URL (an endpoint)",
    )
    for side in ("counselor", "client"):
        sim.add_argument(
            f"--{side}-system-prompt",
            metavar="TEXT",
            help=f"for a --{side} MODEL@URL: the system message before each session (default: none)",
        )
    sim.add_argument("--scorer", help="an exported score-heads (or score) model rating every finished session")
    sim.add_argument("--sessions", type=int, default=8, help="how many sessions (default: 8)")
    sim.add_argument(
        "--turns", type=int, default=40, help="the longest session in merged turns, opening included (default: 40)"
    )
    sim.add_argument(
        "--opening-turns", type=int, default=4, help="turns of the real dialogue each session opens with (default: 4)"
    )
    sim.add_argument("--seed", type=int, default=0, help="chooses the opening dialogues (default: 0)")
    sim.add_argument(
        "--batch-size",
        type=int,
        default=0,
        help="sessions generated together per model (default 0: all open sessions; 1: one at a time)",
    )
    sim.add_argument("--out", default="runs/simulate", help="the output folder (default: runs/simulate)")
    sim.add_argument("--overwrite", action="store_true", help="replace the sessions of an earlier run in --out")
    sim.add_argument("--root", help="the KokoroChat folder (default: searched, see kokorozoo data stats --help)")
    sim.add_argument(
        "--client-prompt",
        choices=["appendix-e"],
        help="appendix-e: the client (a MODEL@URL) follows the paper's Appendix E instructions (a nervous client"
        " in distress with one or more of its troubles) and may end a session with <end> after 10 exchanges"
        " (use --turns 40: 20 exchanges at most)",
    )
    sim.add_argument(
        "--judge",
        metavar="MODEL@URL",
        help="an LLM judge rating every finished session 0-5 on comprehensiveness, professionalism, authenticity and"
        " safety (CPsyCoun's rubric): OUT/judge.csv, beside --scorer's predicted totals, and summary.json's judge"
        " section (mean and std per dimension, unusable answers counted)",
    )
    add_endpoint_options(sim)
    sim.set_defaults(handler=interruptible(_simulate))
