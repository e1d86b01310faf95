"""``kokorozoo data stats`` and ``kokorozoo data report``: the KokoroChat release, inspected.

The report imports matplotlib and scipy, so it is imported only when asked for.
"""

from __future__ import annotations

import argparse
import json
import sys

from kokorozoo.cli.common import add_output_options, output_folder
from kokorozoo.data.loader import DEFAULT_SEARCH_PATHS_DOC

DATA_REPORT_DIR = "reports/data"


def _stats(args: argparse.Namespace) -> int:
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


def _report(args: argparse.Namespace) -> int:
    from kokorozoo.evaluation.data_report import build_data_report

    out = output_folder(args.out or DATA_REPORT_DIR, args.overwrite)
    print(f"wrote {build_data_report(args.root, out)}")
    return 0


def add_parser(commands: argparse._SubParsersAction) -> None:
    """``kokorozoo data stats`` and ``kokorozoo data report``."""
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
    stats.set_defaults(handler=_stats)

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
    add_output_options(report, DATA_REPORT_DIR)
    report.set_defaults(handler=_report)
