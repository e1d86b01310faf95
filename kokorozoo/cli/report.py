"""``kokorozoo report RUN_DIR...`` and ``kokorozoo data report``: the parsers and their handlers.

The report modules import matplotlib and scipy, so they are imported only when a report is
asked for: ``kokorozoo --help`` and the other subcommands stay fast.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from kokorozoo.data.kokorochat import DEFAULT_SEARCH_PATHS_DOC

DATA_REPORT_DIR = "reports/data"


def report_folder(out: str | Path, overwrite: bool) -> Path:
    """``out``, refused when it already holds files and ``overwrite`` is not given: a report
    never replaces anything silently."""
    from kokorozoo.errors import UsageError

    out = Path(out)
    if out.exists() and not out.is_dir():
        raise UsageError(f"{out}: exists and is not a folder")
    if out.is_dir() and any(out.iterdir()) and not overwrite:
        raise UsageError(f"{out}: not empty (pass --overwrite to write the report into it anyway)")
    return out


def _run_report(args: argparse.Namespace) -> int:
    from kokorozoo.errors import UsageError
    from kokorozoo.evaluation.reports import ReportError, build_run_report

    out = report_folder(args.out or Path(args.run_dirs[0]) / "report", args.overwrite)
    try:
        path = build_run_report(args.run_dirs, out, examples=args.examples, seed=args.seed)
    except ReportError as e:
        raise UsageError(str(e)) from None
    print(f"wrote {path}")
    return 0


def _data_report(args: argparse.Namespace) -> int:
    from kokorozoo.evaluation.data_report import build_data_report

    out = report_folder(args.out or DATA_REPORT_DIR, args.overwrite)
    print(f"wrote {build_data_report(args.root, out)}")
    return 0


def _add_output_options(parser: argparse.ArgumentParser, default: str) -> None:
    parser.add_argument("--out", metavar="DIR", help=f"the report's folder (default: {default})")
    parser.add_argument("--overwrite", action="store_true", help="write into --out even when it already holds files")


def add_report_parser(commands: argparse._SubParsersAction) -> None:
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
    _add_output_options(report, "RUN_DIR/report of the first RUN_DIR")
    report.add_argument("--examples", type=int, default=5, help="example turns per response run (default: 5)")
    report.add_argument("--seed", type=int, default=0, help="draws the example turns (default: 0)")
    report.set_defaults(handler=_run_report)


def add_data_report_parser(data_commands: argparse._SubParsersAction) -> None:
    """``kokorozoo data report``, under ``kokorozoo data``."""
    report = data_commands.add_parser(
        "report",
        help="the paper's data figures, recomputed, beside the paper's values",
        description="Write an HTML page with the paper's data figures recomputed from the release: topics "
        "(Figure 2), total scores (Figure 3), feature correlations with the score (Figure 4) and the correlations "
        "among the 20 items (Figure 11), each beside the paper's stated value; plus data_report.json.",
        epilog=DEFAULT_SEARCH_PATHS_DOC,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    report.add_argument("--root", help="the KokoroChat folder (default: searched, see below)")
    _add_output_options(report, DATA_REPORT_DIR)
    report.set_defaults(handler=_data_report)
