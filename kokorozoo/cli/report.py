"""``kokorozoo report RUN_DIR...``: one HTML page of test runs.

The report modules import matplotlib and scipy, so they are imported only when a report is
asked for: ``kokorozoo --help`` and the other subcommands stay fast.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from kokorozoo.cli.common import add_output_options, output_folder
from kokorozoo.errors import UsageError


def _report(args: argparse.Namespace) -> int:
    from kokorozoo.evaluation.reports import ReportError, build_run_report

    out = output_folder(args.out or Path(args.run_dirs[0]) / "report", args.overwrite)
    try:
        path = build_run_report(args.run_dirs, out, examples=args.examples, seed=args.seed)
    except ReportError as e:
        raise UsageError(str(e)) from None
    print(f"wrote {path}")
    return 0


def add_parser(commands: argparse._SubParsersAction) -> None:
    """``kokorozoo report RUN_DIR [RUN_DIR ...]``."""
    report = commands.add_parser(
        "report",
        help="an HTML report of test runs (tables, per-item figures, examples)",
        description="Write one self-contained HTML page (report.html, figures embedded) and its PNGs from the "
        "output folders of test runs: metrics.json plus predictions.jsonl (score prediction) or generations.jsonl "
        "(response generation). Tables are read from metrics.json. Runs of one task that differ only in their "
        "seed are shown as mean ± std; other runs side by side.",
    )
    report.add_argument("run_dirs", nargs="+", metavar="RUN_DIR", help="a folder holding a test run's metrics.json")
    add_output_options(report, "RUN_DIR/report of the first RUN_DIR")
    report.add_argument("--examples", type=int, default=5, help="example turns per response run (default: 5)")
    report.add_argument("--seed", type=int, default=0, help="draws the example turns (default: 0)")
    report.set_defaults(handler=_report)
