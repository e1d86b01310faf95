"""One test run's result (what ``metrics.json`` holds), its one reader, and the one mean ± std
over seeds that the ``report``, ``seeds`` and ``baseline`` commands print.

A result is the model's figures beside its baselines' (:attr:`Result.baselines`, by name), the
rule behind each figure, the split, the seed, the language and tokenization of the text metrics,
and per-item columns. Every consumer reads a run through :func:`read_result` and asks the result
for its systems (:meth:`Result.systems`), never the JSON's shape.

On disk the layout is the one kokorozoo has always written: the score tasks' baselines
(``baseline``, ``classical``) and the model's figures under each metric's rule (``by_rule``) at the
top level, every other baseline under ``baselines``, and ``per_item`` as ``{item: {column: value}}``
with columns ``<metric>`` (the model) and ``<system>_<metric>``.
"""

from __future__ import annotations

import json
import math
import os
import statistics
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kokorozoo.metrics.scores import BY_RULE, MODEL, SCORE_METRICS
from kokorozoo.metrics.text import TEXT_METRICS
from kokorozoo.records import ITEM_NAMES

METRICS_FILE = "metrics.json"
#: Baselines written at the top level of ``metrics.json`` (the score tasks' layout); the others go
#: under ``baselines``.
TOP_LEVEL_BASELINES = ("baseline", "classical")
#: The model's score figures beside the three metrics.
INVALID = "invalid"
#: How every table names a metric.
LABELS = {
    "acc": "ACC", "acc_soft": "ACC_soft", "mae": "MAE", INVALID: "invalid",
    **{f"bleu{n}": f"BLEU-{n}" for n in range(1, 5)},
    "rouge1": "ROUGE-1", "rouge2": "ROUGE-2", "rougeL": "ROUGE-L", "dist1": "Dist-1", "dist2": "Dist-2",
}  # fmt: skip
LOWER_IS_BETTER = ("mae", INVALID)
#: Per-item metrics, longest first so a column ``x_acc_soft`` is never read as ``acc``.
ITEM_METRICS = tuple(sorted(SCORE_METRICS, key=len, reverse=True))
#: The keys of ``metrics.json`` that are not task-specific sections (see :attr:`Result.extra`).
_KNOWN = {"task", "seed", "split", "dialogues", "turns", "tokenize", "language", "metrics", "baselines", BY_RULE,
          "rules", "per_item", "checkpoint", "zero_shot", *TOP_LEVEL_BASELINES}  # fmt: skip

assert set(TEXT_METRICS) <= set(LABELS) and set(SCORE_METRICS) <= set(LABELS)


class ResultError(ValueError):
    """A file that is not a kokorozoo test run's ``metrics.json``: the message names it."""


def label(metric: str) -> str:
    return LABELS.get(metric, metric)


def format_value(metric: str, value: Any) -> str:
    """A metric as the project prints it everywhere: MAE to 4 decimals, counts whole, the rest
    (percentages, BLEU, ROUGE, Distinct) to 2."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    if metric.endswith("mae"):
        return f"{value:.4f}"
    if metric.endswith(INVALID):
        return f"{value:.0f}"
    return f"{value:.2f}"


def is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


@dataclass
class Result:
    """One test run: the model's figures and every baseline's, with what they were computed on.

    ``baselines`` maps a name to its figures (and descriptive entries such as the constant
    baseline's ``modes``); ``per_item`` maps a system (:data:`MODEL`, a baseline, :data:`BY_RULE`)
    to ``{metric: one value per item}``; ``extra`` keeps a task's own sections (a plugin's
    ``per_topic_f1``) as they are.
    """

    task: str
    metrics: dict[str, Any]
    baselines: dict[str, dict[str, Any]] = field(default_factory=dict)
    by_rule: dict[str, float] | None = None
    rules: dict[str, Any] = field(default_factory=dict)
    split: Any = None
    seed: int | None = None
    #: Test dialogues (score prediction, a plugin) or generated turns (response generation).
    dialogues: int | None = None
    turns: int | None = None
    language: str | None = None
    tokenize: str | None = None
    per_item: dict[str, dict[str, list[float]]] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)
    checkpoint: str | None = None
    zero_shot: bool = False

    def systems(self) -> dict[str, dict[str, float]]:
        """The numeric figures of the model, each baseline and the model by rule, in that order."""
        rows = {MODEL: self.metrics, **self.baselines}
        if self.by_rule is not None:
            rows[BY_RULE] = self.by_rule
        return {name: {k: v for k, v in row.items() if is_number(v)} for name, row in rows.items()}

    def logged_figures(self) -> dict[str, float]:
        """Every figure under the name trackers show it by, one scheme for every task:
        ``test_<metric>`` for the model, ``test_<system>_<metric>`` for a baseline or the model
        by rule (``test_acc``, ``test_bleu1``, ``test_baseline_acc``, ``test_by_rule_mae``)."""
        return {
            f"test_{metric}" if system == MODEL else f"test_{system}_{metric}": float(value)
            for system, row in self.systems().items()
            for metric, value in row.items()
        }

    @property
    def size(self) -> int | None:
        return self.dialogues if self.dialogues is not None else self.turns

    def to_json(self) -> dict[str, Any]:
        """The ``metrics.json`` object (see the module docstring for the layout)."""
        out: dict[str, Any] = {"task": self.task}
        if self.seed is not None or self.dialogues is not None:
            out["seed"] = self.seed
        out["split"] = self.split
        for key in ("dialogues", "turns", "language", "tokenize"):
            if getattr(self, key) is not None:
                out[key] = getattr(self, key)
        out["metrics"] = self.metrics
        out.update({k: v for k, v in self.baselines.items() if k in TOP_LEVEL_BASELINES})
        others = {k: v for k, v in self.baselines.items() if k not in TOP_LEVEL_BASELINES}
        if others or self.turns is not None:
            out["baselines"] = others
        if self.rules:
            out["rules"] = self.rules
        if self.by_rule is not None:
            out[BY_RULE] = self.by_rule
        out.update(self.extra)
        if self.per_item:
            order = [s for s in (*self.systems(), *self.per_item) if s in self.per_item]
            columns = {s: self.per_item[s] for s in dict.fromkeys(order)}
            out["per_item"] = {
                item: {column_name(system, metric): values[i] for system, by_metric in columns.items()
                       for metric, values in by_metric.items()}
                for i, item in enumerate(ITEM_NAMES)
            }  # fmt: skip
        out["checkpoint"] = self.checkpoint
        if self.zero_shot:
            out["zero_shot"] = True
        return out

    @classmethod
    def from_json(cls, obj: Any, source: str | os.PathLike = METRICS_FILE) -> Result:
        if not isinstance(obj, dict) or not isinstance(obj.get("metrics"), dict):
            raise ResultError(f"{source}: no 'metrics' object: not the metrics.json of a kokorozoo test run")
        baselines = {k: obj[k] for k in TOP_LEVEL_BASELINES if isinstance(obj.get(k), dict)}
        nested = obj.get("baselines") or {}
        if not isinstance(nested, dict) or not all(isinstance(v, dict) for v in nested.values()):
            raise ResultError(f"{source}: 'baselines' must map each baseline's name to its figures")
        baselines.update(nested)
        return cls(
            task=str(obj.get("task")),
            metrics=obj["metrics"],
            baselines=baselines,
            by_rule=obj.get(BY_RULE) if isinstance(obj.get(BY_RULE), dict) else None,
            rules=obj.get("rules") or {},
            split=obj.get("split"),
            seed=obj.get("seed"),
            dialogues=obj.get("dialogues"),
            turns=obj.get("turns"),
            language=obj.get("language"),
            tokenize=obj.get("tokenize"),
            per_item=_per_item_columns(obj.get("per_item") or {}),
            extra={k: v for k, v in obj.items() if k not in _KNOWN},
            checkpoint=obj.get("checkpoint"),
            zero_shot=bool(obj.get("zero_shot", False)),
        )


def column_name(system: str, metric: str) -> str:
    return metric if system == MODEL else f"{system}_{metric}"


def split_column(key: str) -> tuple[str, str] | None:
    """A per-item column's (system, metric): ``acc`` -> (model, acc), ``baseline_acc_soft`` ->
    (baseline, acc_soft); None for a column that is none of the item metrics."""
    for metric in ITEM_METRICS:
        if key == metric:
            return MODEL, metric
        if key.endswith(f"_{metric}"):
            return key[: -len(metric) - 1], metric
    return None


def _per_item_columns(per_item: Mapping[str, Mapping[str, Any]]) -> dict[str, dict[str, list[float]]]:
    """{system: {metric: 20 values}} from the file's ``{item: {column: value}}``; NaN where missing."""
    columns: dict[str, dict[str, list[float]]] = {}
    for i, item in enumerate(ITEM_NAMES):
        for key, value in (per_item.get(item) or {}).items():
            parsed = split_column(key)
            if parsed and is_number(value):
                system, metric = parsed
                columns.setdefault(system, {}).setdefault(metric, [math.nan] * len(ITEM_NAMES))[i] = value
    return columns


def read_result(path: str | os.PathLike) -> Result:
    """The result in a ``metrics.json`` file, or in a run folder holding one; a missing or
    unreadable file raises (FileNotFoundError, :class:`ResultError`) naming it."""
    path = Path(path)
    if path.is_dir():
        path = path / METRICS_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file (give the folder a test run wrote {METRICS_FILE} to)")
    try:
        obj = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ResultError(f"{path}: not valid JSON ({e})") from None
    return Result.from_json(obj, path)


def write_result(result: Result, path: str | os.PathLike) -> Path:
    path = Path(path)
    path.write_text(json.dumps(result.to_json(), ensure_ascii=False, indent=2) + "\n", encoding="utf-8")
    return path


# ---------------------------------------------------------------------------------------------
# Over seeds


@dataclass(frozen=True)
class Summary:
    """Mean and sample standard deviation (n - 1) of one figure over runs; ``std`` is 0 for one run.
    None and NaN values (a run without the figure) are left out."""

    mean: float
    std: float
    n: int

    @classmethod
    def of(cls, values: Iterable[float | None]) -> Summary:
        kept = [float(v) for v in values if v is not None and not math.isnan(v)]
        if not kept:
            return cls(math.nan, math.nan, 0)
        return cls(statistics.fmean(kept), statistics.stdev(kept) if len(kept) > 1 else 0.0, len(kept))

    def as_dict(self) -> dict[str, float]:
        return {"mean": self.mean, "std": self.std, "n": self.n}

    def format(self, metric: str) -> str:
        """The value of one run, or ``mean ± std`` of several."""
        if self.n <= 1:
            return format_value(metric, self.mean if self.n else None)
        return f"{format_value(metric, self.mean)} ± {format_value(metric, self.std)}"


def summarize_rows(rows: Sequence[Mapping[str, float]], metrics: Sequence[str]) -> dict[str, Summary]:
    """Each of ``metrics`` over the rows (one row a run) that hold it."""
    return {m: Summary.of(row.get(m) for row in rows) for m in metrics}


def aggregate(results: Sequence[Result]) -> dict[str, dict[str, Summary]]:
    """{system: {metric: mean ± std over the runs}}, systems and metrics in the first run's order."""
    systems: dict[str, list[str]] = {}
    for result in results:
        for system, row in result.systems().items():
            names = systems.setdefault(system, [])
            names += [m for m in row if m not in names]
    per_run = [r.systems() for r in results]
    return {
        system: {m: Summary.of(run.get(system, {}).get(m) for run in per_run) for m in metrics}
        for system, metrics in systems.items()
    }


def aggregate_per_item(results: Sequence[Result]) -> dict[str, dict[str, list[Summary]]]:
    """{system: {metric: one mean ± std a item}} over the runs, systems of the first run."""
    first = results[0].per_item if results else {}
    return {
        system: {
            metric: [Summary.of(r.per_item.get(system, {}).get(metric, [math.nan] * len(ITEM_NAMES))[i]
                                for r in results) for i in range(len(ITEM_NAMES))]
            for metric in columns
        }
        for system, columns in first.items()
    }  # fmt: skip


#: The systems of a score summary over seeds: the model (with its invalid count) and the mode
#: baseline; then, where every run has them, the model under each rule and the non-neural baseline.
SCORE_SUMMARY = {MODEL: (*SCORE_METRICS, INVALID), "baseline": SCORE_METRICS}
SCORE_SUMMARY_OPTIONAL = (BY_RULE, "classical")


def read_score_result(path: str | os.PathLike) -> Result:
    """A score task's result, or a one-line error naming the file."""
    try:
        result = read_result(path)
    except ResultError:
        raise ValueError(f"{path}: not a score-prediction metrics.json") from None
    systems = result.systems()
    if not all(set(metrics) <= set(systems.get(system, {})) for system, metrics in SCORE_SUMMARY.items()):
        raise ValueError(f"{path}: not a score-prediction metrics.json")
    return result


def summarize_score_runs(paths: Sequence[str | os.PathLike]) -> dict:
    """The seeds of one score configuration (``kokorozoo seeds``): per-run rows and, per column
    (``<metric>`` for the model, ``<system>_<metric>``), mean, sample std and n (:func:`aggregate`);
    ``columns`` lists the summarised ones (:data:`SCORE_SUMMARY`, then the optional systems every
    run has). Runs of different tasks or splits are refused."""
    if not paths:
        raise ValueError("no metrics.json to aggregate")
    results = [read_score_result(p) for p in paths]
    tasks = sorted({r.task for r in results})
    if len(tasks) > 1:
        raise ValueError(f"the runs are of different tasks ({', '.join(tasks)}): aggregate one task at a time")
    splits = sorted({str(r.split) for r in results})
    if len(splits) > 1:
        raise ValueError(f"the runs are on different splits ({', '.join(splits)}): aggregate one split at a time")
    summaries = aggregate(results)
    wanted = [*SCORE_SUMMARY.items(), *((name, SCORE_METRICS) for name in SCORE_SUMMARY_OPTIONAL)]
    picked = {column_name(system, m): summaries[system][m] for system, metrics in wanted
              for m in metrics if m in summaries.get(system, {})}  # fmt: skip
    columns = [c for c, summary in picked.items() if summary.n == len(results)]
    rows = [
        {"run": str(path), "task": r.task, "seed": r.seed, "split": r.split,
         **{column_name(s, m): v for s, figures in r.systems().items() for m, v in figures.items()
            if column_name(s, m) in columns}}
        for path, r in zip(paths, results)
    ]  # fmt: skip
    summary = {c: picked[c].as_dict() for c in columns}
    return {"runs": rows, "columns": columns, "split": results[0].split, "summary": summary}
