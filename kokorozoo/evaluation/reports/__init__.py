"""Run reports: one HTML page that a person reads to judge test runs, built from the files a test
writes into its output folder (``metrics.json`` plus ``predictions.jsonl`` for score prediction or
``generations.jsonl`` for response generation).

The page stands alone (:mod:`~kokorozoo.evaluation.reports.page`: PNGs and the Japanese font
embedded; no script, no network), so it can be mailed or opened from disk; the same PNGs are
written beside it for slides and READMEs.

- **Tables come from ``metrics.json``**, never recomputed, so the page and the run agree to the
  last digit (:mod:`~kokorozoo.evaluation.reports.score`, :mod:`~kokorozoo.evaluation.reports.response`).
- **Runs are read through the result schema** (:mod:`~kokorozoo.evaluation.reports.runs`): every
  system a result holds (the model, each baseline, the model by rule) is a row beside the model,
  so new baselines appear without changing the report, and so are their per-item columns.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from kokorozoo.evaluation.reports.page import REPORT_FILE, Page, new_figure
from kokorozoo.evaluation.reports.response import (
    EXAMPLES,
    asks_question,
    bleu_by_history,
    history_bucket,
    response_section,
)
from kokorozoo.evaluation.reports.runs import ReportError, Run, group_runs, load_run
from kokorozoo.evaluation.reports.score import confusion, item_spearman, item_title, score_section, spearman, totals
from kokorozoo.evaluation.reports.training import training_section
from kokorozoo.evaluation.results import format_value
from kokorozoo.progress import progress

__all__ = [
    "EXAMPLES",
    "REPORT_FILE",
    "Page",
    "ReportError",
    "Run",
    "asks_question",
    "bleu_by_history",
    "build_run_report",
    "confusion",
    "format_value",
    "group_runs",
    "history_bucket",
    "item_spearman",
    "item_title",
    "load_run",
    "new_figure",
    "spearman",
    "totals",
]


def build_run_report(
    run_dirs: Sequence[str | os.PathLike], out: str | os.PathLike, examples: int = EXAMPLES, seed: int = 0
) -> Path:
    """Write ``out/report.html`` and its PNGs for one or more test runs; return the HTML's path.

    Args:
        run_dirs: output folders of ``kokorozoo test`` (or ``fit``): each holds ``metrics.json``
            and ``predictions.jsonl`` or ``generations.jsonl``. Score and response runs may mix.
        out: the report's folder (created; files of an earlier report are replaced).
        examples: example turns shown per response run, drawn with ``seed``.
    """
    if not run_dirs:
        raise ReportError("no run folder given")
    runs = [load_run(path) for path in progress(run_dirs, "reading runs", unit="run")]
    groups = group_runs(runs)
    page = Page("kokorozoo run report", Path(out))
    for group in groups:
        page.text(f"{group.label}: {', '.join(str(r.path.resolve()) for r in group.runs)}", note=True)
    if score := [g for g in groups if g.kind == "score"]:
        score_section(page, score)
    if response := [g for g in groups if g.kind == "response"]:
        response_section(page, response, examples, seed)
    training_section(page, groups)
    return page.write()
