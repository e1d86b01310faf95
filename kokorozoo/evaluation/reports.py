"""Run reports: one HTML page that a person reads to judge test runs, built from the files a test
writes into its output folder (``metrics.json`` plus ``predictions.jsonl`` for score prediction or
``generations.jsonl`` for response generation).

The page is self-contained (PNGs embedded as data URIs; no script, no network), so it can be
mailed or opened from disk; the same PNGs are written beside it for slides and READMEs.

What it reads, and why that way:

- **Tables come from ``metrics.json``**, never recomputed, so the page and the run agree to the
  last digit. The figures that ``metrics.json`` does not hold (confusion matrices, Spearman
  correlations, totals, lengths, BLEU by history length) are computed from the rows and say so.
- **Runs are read through the result schema** (:mod:`kokorozoo.evaluation.results`): every
  system a result holds (the model, each baseline, the model by rule) is a row beside the model,
  so new baselines appear without changing this module, and so are their per-item columns.
- **Runs that differ only in their seed** (same task, same ``split`` description, same test size,
  distinct seeds) are one group shown as mean ± sample std (:func:`~kokorozoo.evaluation.results.aggregate`),
  as the paper's Table 5; every other run (e.g. Kokoro-Low/High/Full) is its own group, side by side.
"""

from __future__ import annotations

import base64
import html
import json
import math
import os
import random
import re
import textwrap
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import matplotlib_fontja  # noqa: F401  (registers IPAexGothic and makes it matplotlib's font: Japanese glyphs)
import numpy as np
from matplotlib.figure import Figure
from scipy.stats import spearmanr

from kokorozoo.data import FEEDBACK_ITEMS, ITEM_MAX, NUM_ITEMS
from kokorozoo.evaluation.results import (
    LOWER_IS_BETTER,
    METRICS_FILE,
    Result,
    ResultError,
    Summary,
    aggregate,
    aggregate_per_item,
    format_value,
    label,
    read_result,
)
from kokorozoo.metrics import SCORE_METRICS
from kokorozoo.progress import progress

PREDICTIONS_FILE, GENERATIONS_FILE = "predictions.jsonl", "generations.jsonl"
REPORT_FILE = "report.html"
#: History lengths (merged turns before the generated one) where BLEU is compared.
HISTORY_EDGES = (0, 5, 10, 20, 40, 80)
EXAMPLES = 5
DPI = 110


class ReportError(ValueError):
    """A run file that cannot be read as a test run's output: names the file."""


# ---------------------------------------------------------------------------------------------
# The page


def new_figure(width: float, height: float) -> Figure:
    """A figure without pyplot: no global state, no GUI backend, PNG through Agg."""
    return Figure(figsize=(width, height), layout="constrained")


class Page:
    """An HTML page under construction. Figures are written as PNGs into the page's folder and
    embedded as data URIs, so the page needs nothing beside it."""

    STYLE = """
body { font-family: system-ui, "Hiragino Sans", "Noto Sans CJK JP", "IPAexGothic", "Yu Gothic", sans-serif;
       margin: 2em auto; max-width: 1300px; padding: 0 1em; color: #222; line-height: 1.45; }
h1 { border-bottom: 2px solid #444; padding-bottom: .2em; }
h2 { margin-top: 2em; border-bottom: 1px solid #bbb; }
table { border-collapse: collapse; margin: .8em 0; font-size: 14px; }
th, td { border: 1px solid #ccc; padding: 3px 8px; text-align: right; vertical-align: top; white-space: nowrap; }
th { background: #f0f0f0; }
.text { text-align: left; white-space: normal; }
.long { text-align: left; max-width: 520px; white-space: pre-wrap; }
caption { caption-side: top; text-align: left; font-weight: bold; padding-bottom: .3em; }
figure { margin: 1em 0; } figure img { max-width: 100%; border: 1px solid #ddd; }
figcaption { color: #555; font-size: 14px; } .note { color: #555; font-size: 14px; }
"""

    def __init__(self, title: str, out: Path):
        self.title, self.out = title, Path(out)
        self.out.mkdir(parents=True, exist_ok=True)
        self.parts: list[str] = [f"<h1>{html.escape(title)}</h1>"]

    def heading(self, text: str, level: int = 2) -> None:
        self.parts.append(f"<h{level}>{html.escape(text)}</h{level}>")

    def text(self, text: str, note: bool = False) -> None:
        self.parts.append(f"<p{' class=note' if note else ''}>{html.escape(text)}</p>")

    def table(
        self,
        header: Sequence[str],
        rows: Iterable[Sequence[Any]],
        caption: str = "",
        text_columns: int = 1,
        long_columns: Sequence[int] = (),
        bold: Iterable[tuple[int, int]] = (),
    ) -> None:
        """Cells are escaped; the first ``text_columns`` are left-aligned labels, ``long_columns``
        wrap as paragraphs, ``bold`` marks (row, column) cells (the best value of a column)."""
        bold = set(bold)

        def cell(tag: str, i: int, j: int, value: Any) -> str:
            css = "long" if j in long_columns else "text" if j < text_columns else ""
            text = html.escape(str(value))
            text = f"<b>{text}</b>" if (i, j) in bold else text
            return f"<{tag}{f' class={css}' if css else ''}>{text}</{tag}>"

        lines = ["<table>", f"<caption>{html.escape(caption)}</caption>" if caption else ""]
        lines.append("<tr>" + "".join(cell("th", -1, j, h) for j, h in enumerate(header)) + "</tr>")
        lines += [
            "<tr>" + "".join(cell("td", i, j, v) for j, v in enumerate(row)) + "</tr>" for i, row in enumerate(rows)
        ]
        self.parts.append("\n".join(lines + ["</table>"]))

    def raw(self, markup: str) -> None:
        self.parts.append(markup)

    def figure(self, fig: Figure, name: str, caption: str) -> Path:
        path = self.out / f"{name}.png"
        fig.savefig(path, dpi=DPI, bbox_inches="tight", pad_inches=0.15)
        data = base64.b64encode(path.read_bytes()).decode("ascii")
        alt = html.escape(caption, quote=True)
        self.parts.append(
            f'<figure><img src="data:image/png;base64,{data}" alt="{alt}">'
            f"<figcaption>{html.escape(caption)}</figcaption></figure>"
        )
        return path

    def write(self, name: str = REPORT_FILE) -> Path:
        path = self.out / name
        body = "\n".join(self.parts)
        head = f'<meta charset="utf-8">\n<title>{html.escape(self.title)}</title>\n<style>{self.STYLE}</style>'
        path.write_text(
            f'<!DOCTYPE html>\n<html lang="en">\n<head>\n{head}\n</head>\n<body>\n{body}\n</body>\n</html>\n',
            encoding="utf-8",
        )
        return path


def item_title(i: int, width: int = 13) -> str:
    """``D<n>`` and the item's Japanese name, wrapped to two lines for a subplot title."""
    lines = textwrap.wrap(FEEDBACK_ITEMS[i].jp, width)
    name = "\n".join(lines[:2]) + ("…" if len(lines) > 2 else "")
    return f"D{i + 1} {name}"


# ---------------------------------------------------------------------------------------------
# Reading runs


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


# ---------------------------------------------------------------------------------------------
# The metric table (both kinds)


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
        shown = value if isinstance(value, str) else ", ".join(f"{k}: {v}" for k, v in value.items())
        page.text(f"{group.label}: {key}: {shown}", note=True)


# ---------------------------------------------------------------------------------------------
# Score runs


SYSTEM_COLORS = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f")


def _valid_pairs(rows: Sequence[dict], item: int) -> tuple[np.ndarray, np.ndarray]:
    pairs = [(r["gold"][item], r["predicted"][item]) for r in rows if r["predicted"][item] is not None]
    gold, pred = zip(*pairs) if pairs else ((), ())
    return np.asarray(gold, dtype=float), np.asarray(pred, dtype=float)


def spearman(x: Sequence[float], y: Sequence[float]) -> float:
    """Spearman's rho over the pairs where both values are defined; NaN where either side is
    constant (a constant predictor has no ranking to correlate, and scipy would warn)."""
    x, y = np.asarray(x, float), np.asarray(y, float)
    keep = ~(np.isnan(x) | np.isnan(y))
    x, y = x[keep], y[keep]
    if len(x) < 2 or np.ptp(x) == 0 or np.ptp(y) == 0:
        return math.nan
    return float(spearmanr(x, y).statistic)


def item_spearman(rows: Sequence[dict]) -> list[float]:
    """Spearman's rho of predicted vs gold per item over the valid predictions."""
    return [spearman(*_valid_pairs(rows, i)) for i in range(NUM_ITEMS)]


def confusion(rows: Sequence[dict], item: int) -> np.ndarray:
    """Counts [gold, predicted] over 0..5 of one item; invalid predictions are left out."""
    matrix = np.zeros((ITEM_MAX + 1, ITEM_MAX + 1), dtype=int)
    gold, pred = _valid_pairs(rows, item)
    np.add.at(matrix, (gold.astype(int), np.clip(np.rint(pred), 0, ITEM_MAX).astype(int)), 1)
    return matrix


def totals(rows: Sequence[dict]) -> tuple[np.ndarray, np.ndarray, int]:
    """Gold and predicted totals (sums of the 20 items, 0-100) of the dialogues with all 20
    predictions valid, and how many dialogues were left out."""
    kept = [r for r in rows if None not in r["predicted"]]
    gold = np.array([sum(r["gold"]) for r in kept], dtype=float)
    pred = np.array([sum(r["predicted"]) for r in kept], dtype=float)
    return gold, pred, len(rows) - len(kept)


def _per_item_bars(page: Page, group: Group) -> None:
    values = group.item_values()
    fig = new_figure(13, 9.5)
    axes = fig.subplots(3, 1, sharex=True)
    x = np.arange(NUM_ITEMS)
    width = 0.8 / max(len(values), 1)
    overall = group.system_values()
    for ax, metric in zip(axes, SCORE_METRICS):
        for k, (system, columns) in enumerate(values.items()):
            if metric not in columns:
                continue
            mean = np.array([c.mean for c in columns[metric]])
            std = np.array([c.std for c in columns[metric]]) if len(group.runs) > 1 else None
            total = overall.get(system, {}).get(metric, Summary.of([])).format(metric)
            ax.bar(
                x + (k - (len(values) - 1) / 2) * width,
                mean,
                width,
                yerr=std,
                capsize=2,
                color=SYSTEM_COLORS[k % len(SYSTEM_COLORS)],
                label=f"{system} (all items: {total})",
            )
        ax.set_ylabel(label(metric) + (" (lower is better)" if metric == "mae" else " (%)"))
        ax.grid(axis="y", alpha=0.3)
        ax.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0), fontsize=9, frameon=False)
        ax.set_ylim(0, None if metric == "mae" else 100)  # MAE: as high as the bars, so differences show
    axes[-1].set_xticks(x, [f"D{i + 1}" for i in x])
    axes[-1].set_xlabel("item (names in the table below)")
    seeds = " (mean ± std over seeds)" if len(group.runs) > 1 else ""
    fig.suptitle(f"{group.label}: per item, the model beside every baseline{seeds}")
    page.figure(
        fig,
        f"{group.name}_per_item",
        "Per-item ACC, ACC_soft and MAE from metrics.json; the legend gives each system's figure over all items.",
    )


def _confusion_grid(page: Page, group: Group) -> None:
    rows = group.rows
    fig = new_figure(15, 13.5)
    axes = fig.subplots(4, 5)
    for i, ax in enumerate(axes.flat):
        matrix = confusion(rows, i)
        ax.imshow(matrix, cmap="Blues", vmin=0, vmax=max(matrix.max(), 1))
        for (g, p), count in np.ndenumerate(matrix):
            if count:
                ax.text(
                    p,
                    g,
                    str(count),
                    ha="center",
                    va="center",
                    fontsize=7,
                    color="white" if count > matrix.max() * 0.6 else "black",
                )
        ax.set_title(item_title(i), fontsize=9)
        ax.set_xticks(range(ITEM_MAX + 1))
        ax.set_yticks(range(ITEM_MAX + 1))
        ax.tick_params(labelsize=7)
        if i >= 15:
            ax.set_xlabel("predicted", fontsize=8)
        if i % 5 == 0:
            ax.set_ylabel("gold", fontsize=8)
    invalid = sum(p is None for r in rows for p in r["predicted"])
    pooled = f", pooled over {len(group.runs)} runs" if len(group.runs) > 1 else ""
    fig.suptitle(
        f"{group.label}: confusion matrices (rows gold, columns predicted{pooled}; {invalid} invalid left out)"
    )
    page.figure(
        fig,
        f"{group.name}_confusion",
        "Confusion matrix of each item: how often each gold score (row) got each predicted score (column).",
    )


def _spearman_and_totals(page: Page, groups: Sequence[Group]) -> dict[str, list[list[float]]]:
    """The per-item Spearman figure (all score groups) and the totals scatter; returns the rhos
    per group and run for the per-item tables."""
    rhos = {g.name: [item_spearman(run.rows) for run in g.runs] for g in groups}
    fig = new_figure(13, 4.2)
    ax = fig.subplots()
    x = np.arange(NUM_ITEMS)
    width = 0.8 / len(groups)
    for k, group in enumerate(groups):
        mean, std = mean_std(rhos[group.name])
        ax.bar(
            x + (k - (len(groups) - 1) / 2) * width,
            np.nan_to_num(mean),
            width,
            yerr=std,
            capsize=2,
            color=SYSTEM_COLORS[k % len(SYSTEM_COLORS)],
            label=group.label,
        )
    ax.axhline(0, color="black", lw=0.8)
    ax.set_xticks(x, [f"D{i + 1}" for i in x])
    ax.set_ylabel("Spearman ρ (predicted vs gold)")
    finite = [v for r in rhos.values() for v in np.ravel(r) if math.isfinite(v)]
    ax.set_ylim(min([-0.1, *(v - 0.1 for v in finite)]), 1)
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize=9, loc="upper left", bbox_to_anchor=(1.0, 1.0), frameon=False)
    page.figure(
        fig,
        "score_spearman",
        "Per-item Spearman correlation of predicted and gold scores over the valid "
        "predictions (a bar at 0 with no value in the table: the predictions were constant, so ρ is undefined).",
    )

    cols = min(len(groups), 3)
    fig = new_figure(4.6 * cols, 4.4 * math.ceil(len(groups) / cols))
    axes = list(fig.subplots(math.ceil(len(groups) / cols), cols, squeeze=False).flat)
    for ax, group in zip(axes, groups):
        gold, pred, left_out = totals(group.rows)
        ax.scatter(gold, pred, s=12, alpha=0.5)
        ax.plot([0, 100], [0, 100], color="grey", lw=0.8, ls="--")
        ax.set(
            xlim=(-2, 102),  # a margin, so that points on 0 or 100 are drawn whole
            ylim=(-2, 102),
            aspect="equal",
            xlabel="gold total (sum of 20 items)",
            ylabel="predicted total",
        )
        rho = spearman(gold, pred)
        ax.set_title(
            f"{group.label}\nρ = {format_value('rho', rho)}, n = {len(gold)}"
            + (f" ({left_out} with invalid items left out)" if left_out else ""),
            fontsize=9,
        )
        ax.grid(alpha=0.3)
    for ax in axes[len(groups) :]:
        ax.set_visible(False)
    page.figure(
        fig, "score_totals", "Predicted against gold total score per dialogue; the dashed line is a perfect prediction."
    )
    return rhos


def _item_table(page: Page, group: Group, rhos: list[list[float]]) -> None:
    means = {s: {m: [c.mean for c in v] for m, v in columns.items()} for s, columns in group.item_values().items()}
    columns = [(system, metric) for system in means for metric in SCORE_METRICS if metric in means[system]]
    header = ["", "item", *(f"{label(m)} {s}" for s, m in columns), "ρ"]
    rho = [Summary.of(r[i] for r in rhos).format("rho") for i in range(NUM_ITEMS)]
    rows = [
        [f"D{i + 1}", f"{item.jp} ({item.en})", *(format_value(m, float(means[s][m][i])) for s, m in columns), rho[i]]
        for i, item in enumerate(FEEDBACK_ITEMS)
    ]
    mean = " (means over seeds)" if len(group.runs) > 1 else ""
    page.table(
        header, rows, f"{group.label}: per item, from metrics.json{mean}; ρ from the predictions", text_columns=2
    )


def score_section(page: Page, groups: Sequence[Group]) -> None:
    page.heading("Score prediction")
    page.text(
        "ACC and ACC_soft in %, MAE on the 0-5 scale, over all (dialogue, item) pairs of the test set, exactly "
        "as metrics.json holds them. An invalid (unparsable) item counts as wrong and as an error of 5."
    )
    metric_table(page, groups, "Test metrics: the model and every baseline of the run")
    for group in groups:
        if group.results[0].task == "score":
            invalid = [run.result.metrics.get("invalid", 0) for run in group.runs]
            items = [(run.result.dialogues or len(run.rows)) * NUM_ITEMS for run in group.runs]
            share = 100 * sum(invalid) / max(sum(items), 1)
            page.text(
                f"{group.label}: {sum(invalid)} of {sum(items)} predicted items ({share:.1f}%) could not be read "
                "from the generated answers (the text variant's invalid count)."
            )
    rhos = _spearman_and_totals(page, groups)
    for group in groups:
        page.heading(group.label, 3)
        _per_item_bars(page, group)
        _item_table(page, group, rhos[group.name])
        _confusion_grid(page, group)


# ---------------------------------------------------------------------------------------------
# Response runs

QUESTION_MARKS = ("？", "?")
QUESTION_ENDINGS = ("か", "かな", "かね", "かしら")
_SENTENCE_END = re.compile(r"[。！!\n]+")
_TRAILING = " 　…・〜~ー、,.)）」』"


def asks_question(text: str) -> bool:
    """Whether a turn asks something: a question mark (full- or half-width) anywhere, or a
    sentence ending in a question particle (か, かな, かね, かしら), since Japanese chat often
    drops the mark. Asking good questions is what clients rate in D15, so the share of question
    turns is a quick check that a model does not only agree."""
    if any(mark in text for mark in QUESTION_MARKS):
        return True
    return any(s.rstrip(_TRAILING).endswith(QUESTION_ENDINGS) for s in _SENTENCE_END.split(text))


def history_bucket(turns: int) -> str:
    """The bucket label of a history length: ``0-4``, ``5-9``, ..., ``80+``."""
    lower = max(e for e in HISTORY_EDGES if e <= turns)
    upper = next((e for e in HISTORY_EDGES if e > turns), None)
    return f"{lower}+" if upper is None else f"{lower}-{upper - 1}"


def bleu_by_history(rows: Sequence[dict], tokenize: str) -> dict[str, dict[str, float]]:
    """Corpus BLEU-1..4 (``kokorozoo.metrics.BLEU``, the run's tokenization) per history bucket,
    with the bucket's number of turns, in bucket order."""
    from kokorozoo.metrics import BLEU

    buckets: dict[str, list[dict]] = {}
    for row in sorted(rows, key=lambda r: r["history_turns"]):
        buckets.setdefault(history_bucket(row["history_turns"]), []).append(row)
    result = {}
    for name, members in progress(buckets.items(), "BLEU by history length", unit="bucket", total=len(buckets)):
        preds, refs = [r["generation"] for r in members], [r["reference"] for r in members]
        result[name] = {"turns": len(members)}
        for n in range(1, 5):
            bleu = BLEU(n_gram=n, tokenize=tokenize)
            bleu.update(preds, refs)
            result[name][f"bleu{n}"] = float(bleu.compute())
    return result


def _lengths_figure(page: Page, groups: Sequence[Group]) -> None:
    fig = new_figure(5.2 * len(groups), 3.8)
    for ax, group in zip(fig.subplots(1, len(groups), squeeze=False).flat, groups):
        gen = [len(r["generation"]) for r in group.rows]
        ref = [len(r["reference"]) for r in group.rows]
        top = max(np.percentile(gen + ref, 99), 10)
        bins = np.linspace(0, top, 30)
        ax.hist(np.clip(ref, 0, top), bins, alpha=0.55, label=f"reference (median {np.median(ref):.0f})")
        ax.hist(np.clip(gen, 0, top), bins, alpha=0.55, label=f"generated (median {np.median(gen):.0f})")
        ax.set(xlabel="characters per turn (longer ones in the last bin)", ylabel="turns", title=group.label)
        ax.legend(fontsize=9)
        ax.grid(alpha=0.3)
    page.figure(fig, "response_lengths", "Length of the generated and the reference counselor turns, in characters.")


def _history_figure(page: Page, groups: Sequence[Group], by_history: dict[str, dict]) -> None:
    fig = new_figure(5.2 * len(groups), 3.8)
    for ax, group in zip(fig.subplots(1, len(groups), squeeze=False).flat, groups):
        buckets = by_history[group.name]
        names = list(buckets)
        for n in range(1, 5):
            ax.plot(range(len(names)), [buckets[b][f"bleu{n}"] for b in names], marker="o", label=f"BLEU-{n}")
        ax.set_xticks(range(len(names)), [f"{b}\n(n={buckets[b]['turns']})" for b in names], fontsize=8)
        ax.set(xlabel="turns of history before the generated one", ylabel="BLEU", title=group.label)
        ax.legend(fontsize=8)
        ax.grid(alpha=0.3)
    page.figure(
        fig,
        "response_bleu_by_history",
        "Corpus BLEU of the turns in each history-length bucket "
        "(computed here from generations.jsonl with the run's tokenization; n = turns in the bucket).",
    )


def response_section(page: Page, groups: Sequence[Group], examples: int = EXAMPLES, seed: int = 0) -> None:
    from kokorozoo.metrics import TOKENIZE_MODES

    page.heading("Response generation")
    tokenize = {g.name: g.results[0].tokenize or "mecab" for g in groups}
    turns = ", ".join(f"{g.label} {g.results[0].turns or len(g.rows)}" for g in groups)
    modes = ", ".join(
        f"{mode} ({TOKENIZE_MODES.get(mode, 'unknown mode')})"
        + (
            ""
            if len(set(tokenize.values())) == 1
            else f" for {', '.join(g.label for g in groups if tokenize[g.name] == mode)}"
        )
        for mode in dict.fromkeys(tokenize.values())
    )
    page.text(f"Test turns: {turns}. Tokenized for the metrics: {modes}.")
    metric_table(page, groups, "Test metrics (×100) from metrics.json: the model and every baseline of the run")

    rows = []
    for group in groups:
        gen, ref = [r["generation"] for r in group.rows], [r["reference"] for r in group.rows]
        rows.append(
            [
                group.label,
                *(f"{np.mean([len(t) for t in ts]):.1f}" for ts in (gen, ref)),
                *(f"{100 * np.mean([asks_question(t) for t in ts]):.1f}" for ts in (gen, ref)),
            ]
        )
    page.table(
        ["run", "mean chars generated", "mean chars reference", "questions generated (%)", "questions reference (%)"],
        rows,
        "Turn shape (from generations.jsonl)",
    )
    _lengths_figure(page, groups)

    by_history = {g.name: bleu_by_history(g.rows, tokenize[g.name]) for g in groups}
    _history_figure(page, groups, by_history)
    page.table(
        ["run", "history", "turns", *(f"BLEU-{n}" for n in range(1, 5))],
        [
            [g.label, b, v["turns"], *(format_value(f"bleu{n}", v[f"bleu{n}"]) for n in range(1, 5))]
            for g in groups
            for b, v in by_history[g.name].items()
        ],
        "BLEU by history length (tokenization as above)",
        text_columns=2,
    )

    for group in groups:
        picked = random.Random(seed).sample(group.rows, min(examples, len(group.rows)))
        picked.sort(key=lambda r: (str(r["dialogue_id"]), r["turn_index"]))
        page.table(
            ["dialogue", "turn", "history", "reference", "generated"],
            [[r["dialogue_id"], r["turn_index"], r["history_turns"], r["reference"], r["generation"]] for r in picked],
            f"{group.label}: {len(picked)} example turns (drawn with seed {seed})",
            text_columns=1,
            long_columns=(3, 4),
        )


# ---------------------------------------------------------------------------------------------
# The report


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
    return page.write()
