"""Reading run folders for a report: each ``metrics.json`` through the result schema with its rows,
runs that differ only in their seed grouped, and the table of every group's systems.

**Runs that differ only in their seed** (same task, same ``split`` description, same test size,
distinct seeds) are one group shown as mean ± sample std (:func:`~kokorozoo.evaluation.results.aggregate`),
as the paper's Table 5; every other run (e.g. Kokoro-Low/High/Full) is its own group, side by side.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from kokorozoo.evaluation.reports.page import Page
from kokorozoo.evaluation.results import (
    LOWER_IS_BETTER,
    METRICS_FILE,
    Result,
    ResultError,
    Summary,
    aggregate,
    aggregate_per_item,
    label,
    read_result,
)
from kokorozoo.records import NUM_ITEMS

PREDICTIONS_FILE, GENERATIONS_FILE = "predictions.jsonl", "generations.jsonl"


class ReportError(ValueError):
    """A run file that cannot be read as a test run's output: names the file."""


@dataclass
class Run:
    """One test run's output folder: ``kind`` is ``score`` or ``response``."""

    path: Path
    kind: str
    result: Result
    rows: list[dict]

    @property
    def seed(self) -> Any:
        return self.result.seed


def _read_jsonl(path: Path) -> list[dict]:
    try:
        with open(path, encoding="utf-8") as f:
            return [json.loads(line) for line in f if line.strip()]
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ReportError(f"{path}: not valid JSON lines ({e})") from None


#: What a row of each kind must hold (a plugin's predictions.jsonl may hold something else).
ROW_FIELDS = {
    "score": lambda row: all(isinstance(row.get(k), list) and len(row[k]) == NUM_ITEMS for k in ("gold", "predicted")),
    "response": lambda row: {"reference", "generation", "history_turns"} <= set(row),
}


def load_run(path: str | os.PathLike) -> Run:
    """A run folder's ``metrics.json`` and its rows; a missing file raises FileNotFoundError
    naming it."""
    path = Path(path)
    try:
        result = read_result(path / METRICS_FILE)
    except ResultError as e:
        raise ReportError(str(e)) from None
    for kind, name in (("response", GENERATIONS_FILE), ("score", PREDICTIONS_FILE)):
        if (path / name).is_file():
            rows = _read_jsonl(path / name)
            if not all(ROW_FIELDS[kind](row) for row in rows):
                raise ReportError(
                    f"{path / name}: not the rows of a {kind} test run (a report reads score and response runs)"
                )
            return Run(path, kind, result, rows)
    raise FileNotFoundError(f"{path / PREDICTIONS_FILE}: no such file (nor {GENERATIONS_FILE})")


def mean_std(values: Sequence[Sequence[float]]) -> tuple[np.ndarray, np.ndarray | None]:
    """Mean and sample std over runs (axis 0) of each column, NaN left out; the std is None for
    one run."""
    columns = [Summary.of(column) for column in np.asarray(values, float).T]
    mean = np.array([c.mean for c in columns])
    return mean, (np.array([c.std for c in columns]) if len(values) > 1 else None)


@dataclass
class Group:
    """Runs shown as one: a single run, or the seeds of one configuration."""

    label: str
    runs: list[Run]
    name: str = field(default="")

    @property
    def kind(self) -> str:
        return self.runs[0].kind

    @property
    def rows(self) -> list[dict]:
        return [row for run in self.runs for row in run.rows]

    @property
    def results(self) -> list[Result]:
        return [run.result for run in self.runs]

    def system_values(self) -> dict[str, dict[str, Summary]]:
        """{system: {metric: mean ± std over the runs}}, in the order of the first run."""
        return aggregate(self.results)

    def item_values(self) -> dict[str, dict[str, list[Summary]]]:
        """Per-item figures of every system from ``metrics.json``: {system: {metric: 20 summaries}}."""
        return aggregate_per_item(self.results)


def run_labels(paths: Sequence[Path]) -> list[str]:
    """Short names: what tells the paths apart (``lightning_logs`` dropped), at least the last two
    parts of each."""
    parts = [[p for p in path.resolve().parts if p != "lightning_logs"] for path in paths]
    common = len(os.path.commonprefix(parts)) if len(parts) > 1 else len(parts[0])
    common = min([common, *(len(p) - 2 for p in parts)])
    return ["/".join(p[max(common, 0) :]) for p in parts]


def group_runs(runs: Sequence[Run]) -> list[Group]:
    """Seeds of one configuration together (see the module docstring), everything else alone."""
    labels = run_labels([run.path for run in runs])
    by_key: dict[Any, list[int]] = {}
    for i, run in enumerate(runs):
        split = run.result.split
        if isinstance(split, dict):
            split = {k: v for k, v in split.items() if "seed" not in k}
        key = (run.kind, run.result.task, json.dumps(split, sort_keys=True), run.result.dialogues)
        by_key.setdefault(key if run.seed is not None else i, []).append(i)
    groups = []
    for members in by_key.values():
        seeds = [runs[i].seed for i in members]
        if len(members) > 1 and len(set(seeds)) == len(seeds):
            task = runs[members[0]].result.task
            groups.append(
                Group(f"{task}, {len(seeds)} seeds ({', '.join(map(str, seeds))})", [runs[i] for i in members])
            )
        else:
            groups += [Group(labels[i], [runs[i]]) for i in members]
    for kind in {g.kind for g in groups}:
        for n, group in enumerate(g for g in groups if g.kind == kind):
            group.name = f"{kind}{n + 1}"
    return groups


def metric_table(page: Page, groups: Sequence[Group], caption: str) -> None:
    """Every group's model and baselines with the metrics as ``metrics.json`` holds them; the
    best value of each metric within a group in bold."""
    metrics: list[str] = []
    for group in groups:
        for values in group.system_values().values():
            metrics += [m for m in values if m not in metrics]
    rows, bold = [], []
    for group in groups:
        values = group.system_values()
        first = len(rows)
        for system, columns in values.items():
            rows.append([group.label, system, *(columns.get(m, Summary.of([])).format(m) for m in metrics)])
        for j, metric in enumerate(metrics):
            means = {i: c[metric].mean for i, c in enumerate(values.values()) if metric in c and c[metric].n}
            if len(means) > 1:
                pick = min if metric.endswith(LOWER_IS_BETTER) else max
                bold.append((first + pick(means, key=means.get), j + 2))
    header = ["run", "system", *(label(m) + (" ↓" if m.endswith(LOWER_IS_BETTER) else "") for m in metrics)]
    page.table(header, rows, caption, text_columns=2, bold=bold)
    notes = [(g, k, v) for g in groups for k in ("split", "rules") if (v := getattr(g.results[0], k)) not in (None, {})]
    for group, key, value in notes:
        page.text(f"{group.label}: {key}: {describe(value)}", note=True)


def describe(value: Any) -> str:
    """A setting as a reader writes it: ``acc: argmax, mae: median (window 1)``, not a Python
    dict (nested settings in parentheses, lists joined)."""
    if isinstance(value, dict):
        return ", ".join(
            f"{k}: {describe(v)}" if not isinstance(v, dict) else f"{k} ({describe(v)})" for k, v in value.items()
        )
    if isinstance(value, (list, tuple)):
        return ", ".join(describe(v) for v in value)
    return str(value)
