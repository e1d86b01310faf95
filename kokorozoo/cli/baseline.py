"""``kokorozoo baseline score``: the non-neural score baseline over seeds, beside the mode baseline.

Only argparse is imported here; numpy, scikit-learn and torch come with the handler, so the
other subcommands stay fast.
"""

from __future__ import annotations

import argparse
import json
import sys

from kokorozoo.data.loader import DEFAULT_SEARCH_PATHS_DOC
from kokorozoo.data.splits import SCORE_SPLITS
from kokorozoo.errors import UsageError

_GROUPS = (("", None), ("argmax ", "argmax"), ("mode ", "mode_baseline"))


def format_score_baseline(result: dict) -> str:
    """The per-seed table and mean ± std: the baseline with each metric under its own rule, the
    same model under argmax alone, and the per-item-mode baseline."""
    from kokorozoo.evaluation.results import format_value, label
    from kokorozoo.metrics.scores import SCORE_METRICS

    metrics = [(m, label(m)) for m in SCORE_METRICS]
    rules = ", ".join(f"{name} {result['rules'][metric]}" for metric, name in metrics)
    sizes = result["runs"][0]["sizes"]
    lines = [
        f"Score baseline ({result['split']} split: train {sizes['train']}, val {sizes['val']}, test {sizes['test']}; "
        f"{result['seconds']:.0f} s)",
        f"Rules: {rules}; 'argmax' reads all three from argmax; 'mode' is the per-item mode of train.",
        "",
    ]
    header = ["seed", *(f"{prefix}{name}" for prefix, _ in _GROUPS for _, name in metrics)]

    def cells(row: dict) -> list[str]:
        return [format_value(m, (row[group] if group else row)[m]) for _, group in _GROUPS for m, _ in metrics]

    def summary(stat_of: dict) -> list[str]:
        return [
            f"{format_value(m, (stat_of[group] if group else stat_of)['mean'][m])} ± "
            f"{format_value(m, (stat_of[group] if group else stat_of)['std'][m])}"
            for _, group in _GROUPS
            for m, _ in metrics
        ]

    rows = [header, *([str(run["seed"]), *cells(run)] for run in result["runs"]), ["mean ± std", *summary(result)]]
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    lines += ["  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip() for row in rows]
    return "\n".join(lines)


def _baseline_score(args: argparse.Namespace) -> int:
    if args.split not in SCORE_SPLITS:
        raise UsageError(f"unknown split {args.split!r}: expected {' or '.join(SCORE_SPLITS)}")
    from kokorozoo.data import load_kokorochat
    from kokorozoo.evaluation.baselines import evaluate_score_baseline

    data = load_kokorochat(args.root, progress=sys.stderr.isatty())
    result = evaluate_score_baseline(data.dialogues, args.seeds, args.split)
    if args.json:
        print(json.dumps({"root": data.root, **result}, ensure_ascii=False))
    else:
        print(format_score_baseline(result))
    return 0


def add_parser(commands: argparse._SubParsersAction) -> None:
    """``kokorozoo baseline score``."""
    baseline = commands.add_parser(
        "baseline",
        help="non-neural baselines every model is compared with",
        description="Non-neural baselines every model is compared with.",
    )
    kinds = baseline.add_subparsers(dest="baseline_command", metavar="COMMAND", required=True)
    score = kinds.add_parser(
        "score",
        help="score prediction: logistic regression on character n-grams and dialogue statistics",
        description="Fit the score baseline (per-item logistic regression over the six levels on character "
        "n-gram TF-IDF of each speaker's text and eight dialogue statistics; C chosen per item on validation) "
        "once per seed on the score-prediction split, and print ACC, ACC_soft and MAE on the test part, each "
        "under the rule that suits it (argmax, best window, median), the same under argmax alone, and the "
        "per-item-mode baseline; then mean ± std over the seeds (sample std).",
        epilog=DEFAULT_SEARCH_PATHS_DOC,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    score.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4], help="seeds (default: 0 1 2 3 4)")
    score.add_argument(
        "--split",
        default="random",
        help="random (the paper's 8:1:1) or client_disjoint (no test client in train or validation); default: random",
    )
    score.add_argument("--root", help="the KokoroChat folder (default: searched, see below)")
    score.add_argument("--json", action="store_true", help="print one JSON object (snake_case keys)")
    score.set_defaults(handler=_baseline_score)
