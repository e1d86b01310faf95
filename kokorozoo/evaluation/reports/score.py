"""The score prediction section of a run report: the metric table, per-item bars beside every
baseline, Spearman per item, totals and the confusion matrices. Per-item figures come from
``metrics.json``; what it does not hold (confusions, correlations, totals) is computed from the
rows and says so."""

from __future__ import annotations

import math
import textwrap
from collections.abc import Sequence

import numpy as np
from scipy.stats import spearmanr

from kokorozoo.evaluation.reports.page import Page, new_figure
from kokorozoo.evaluation.reports.runs import Group, mean_std, metric_table
from kokorozoo.evaluation.results import Summary, format_value, label
from kokorozoo.metrics import SCORE_METRICS
from kokorozoo.records import FEEDBACK_ITEMS, ITEM_MAX, NUM_ITEMS


def item_title(i: int, width: int = 13) -> str:
    """``D<n>`` and the item's Japanese name, wrapped to two lines for a subplot title."""
    lines = textwrap.wrap(FEEDBACK_ITEMS[i].jp, width)
    name = "\n".join(lines[:2]) + ("…" if len(lines) > 2 else "")
    return f"D{i + 1} {name}"


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
