"""The paper's data figures, recomputed from the release and set beside the paper's own values.

Figure 2 (topics), Figure 3 (total scores: mean 63.58, median 64), Figure 4 (Spearman correlations
of dialogue features with the total score) and Figure 11 (Spearman correlations among the 20
items). Where our number differs from the paper's at the paper's precision, the report says by
how much, so a changed loader or a changed copy of the data shows up at a glance.

Figure 4's features are per dialogue, on the raw utterances as the release stores them (not the
merged turns): characters and utterances of each role, and the counselor's mean response time,
the seconds from a client utterance to the counselor utterance right after it. That definition
reproduces the paper's -0.21; timing from the first utterance of a client's run gives -0.17.
"""

from __future__ import annotations

import json
import math
import os
import statistics
import sys
from collections import Counter
from pathlib import Path

import numpy as np
from scipy.stats import spearmanr

from kokorozoo.data import Dialogue, load_kokorochat
from kokorozoo.evaluation.reports.page import Page, new_figure
from kokorozoo.evaluation.reports.score import item_title, spearman
from kokorozoo.progress import progress
from kokorozoo.records import SCORE_MAX

DATA_FILE = "data_report.json"
#: Figure 3: the paper's mean and median total score, and the decimals it gives them to.
PAPER_SCORE = {"mean": (63.58, 2), "median": (64, 0)}
#: Figure 4: feature -> (what it is, the paper's Spearman rho with the total score).
FEATURES: dict[str, tuple[str, float]] = {
    "client_characters": ("client characters", 0.42),
    "counselor_characters": ("counselor characters", 0.28),
    "client_utterances": ("client utterances", 0.21),
    "counselor_utterances": ("counselor utterances", 0.17),
    "counselor_response_time": ("counselor mean response time (s)", -0.21),
}
SCORE_BIN = 5


def dialogue_features(dialogue: Dialogue) -> dict[str, float]:
    """Figure 4's features of one dialogue (see the module docstring); the response time is NaN
    for a dialogue where the counselor never answers a client utterance."""
    values = dict.fromkeys(FEATURES, 0.0)
    for u in dialogue.utterances:
        values[f"{u.role}_characters"] += len(u.text)
        values[f"{u.role}_utterances"] += 1
    waits = [
        (b.time - a.time).total_seconds()
        for a, b in zip(dialogue.utterances, dialogue.utterances[1:])
        if a.role == "client" and b.role == "counselor"
    ]
    values["counselor_response_time"] = statistics.fmean(waits) if waits else math.nan
    return values


def compare(ours: float, paper: float, decimals: int) -> str:
    """How our value stands to the paper's, at the paper's precision."""
    if round(ours, decimals) == round(paper, decimals):
        return f"matches the paper's {paper:.{decimals}f}"
    return f"differs from the paper's {paper:.{decimals}f} by {ours - paper:+.{decimals}f}"


def data_figures(dialogues: list[Dialogue]) -> dict:
    """Every number of the data report, as plain JSON-able values."""
    scores = np.array([d.score for d in dialogues], float)
    features = [dialogue_features(d) for d in progress(dialogues, "dialogue features", unit="dialogue")]
    topics = Counter((d.topic.main_jp, d.topic.main_en) for d in dialogues)
    items = np.array([d.feedback.items for d in dialogues], float)
    bins = np.arange(0, SCORE_MAX + SCORE_BIN, SCORE_BIN)
    return {
        "dialogues": len(dialogues),
        "topics": [
            {"jp": jp, "en": en, "dialogues": n, "share": 100 * n / len(dialogues)}
            for (jp, en), n in topics.most_common()
        ],
        "score": {
            "mean": float(scores.mean()),
            "median": float(np.median(scores)),
            "histogram": {"edges": bins.tolist(), "counts": np.histogram(scores, bins)[0].tolist()},
        },
        "feature_correlations": {name: spearman([f[name] for f in features], scores) for name in FEATURES},
        "item_correlations": spearmanr(items).statistic.tolist(),
    }


def _topics(page: Page, figures: dict) -> None:
    topics = figures["topics"]
    fig = new_figure(10, 0.42 * len(topics) + 1.2)
    ax = fig.subplots()
    names = [f"{t['jp']}\n{t['en']}" for t in topics][::-1]
    counts = [t["dialogues"] for t in topics][::-1]
    bars = ax.barh(names, counts, color="#4c72b0")
    ax.bar_label(bars, [f"{c:,} ({100 * c / figures['dialogues']:.1f}%)" for c in counts], padding=3, fontsize=9)
    ax.set_xlim(0, max(counts) * 1.2)
    ax.tick_params(axis="y", labelsize=9)
    ax.set_xlabel("dialogues")
    ax.set_title("Main topics (GPT-4o-mini labels in the release)")
    page.figure(fig, "topics", "Figure 2: dialogues per main topic.")
    page.table(
        ["topic", "", "dialogues", "share (%)"],
        [[t["jp"], t["en"], f"{t['dialogues']:,}", f"{t['share']:.1f}"] for t in topics],
        text_columns=2,
    )
    page.text(
        "The paper draws this distribution as a chart; kokorozoo holds no stated counts of it to compare with.",
        note=True,
    )


def _scores(page: Page, figures: dict) -> None:
    score = figures["score"]
    fig = new_figure(10, 4)
    ax = fig.subplots()
    edges, counts = score["histogram"]["edges"], score["histogram"]["counts"]
    ax.bar(edges[:-1], counts, width=SCORE_BIN, align="edge", color="#4c72b0", edgecolor="white")
    for name, style in (("mean", "-"), ("median", "--")):
        paper, decimals = PAPER_SCORE[name]
        ax.axvline(
            score[name], color="#c44e52", ls=style, label=f"{name} {score[name]:.2f} (paper {paper:.{decimals}f})"
        )
    ax.set(xlim=(0, SCORE_MAX), xlabel="total score (0-100)", ylabel="dialogues")
    ax.legend(loc="upper left")
    page.figure(fig, "scores", f"Figure 3: total scores in bins of {SCORE_BIN}.")
    rows = []
    for name, (paper, decimals) in PAPER_SCORE.items():
        rows.append([name, f"{score[name]:.2f}", f"{paper:.{decimals}f}", compare(score[name], paper, decimals)])
    page.table(["", "ours", "paper", "vs the paper"], rows)


def _feature_correlations(page: Page, figures: dict) -> None:
    ours = figures["feature_correlations"]
    fig = new_figure(9, 3.6)
    ax = fig.subplots()
    y = np.arange(len(FEATURES))
    ax.barh(y - 0.2, [ours[n] for n in FEATURES], 0.4, label="ours", color="#4c72b0")
    ax.barh(y + 0.2, [paper for _, paper in FEATURES.values()], 0.4, label="paper", color="#dd8452")
    ax.set_yticks(y, [what for what, _ in FEATURES.values()])
    ax.invert_yaxis()
    ax.axvline(0, color="black", lw=0.8)
    ax.set(xlim=(-0.5, 0.5), xlabel="Spearman ρ with the total score")
    ax.legend()
    page.figure(
        fig, "feature_correlations", "Figure 4: Spearman correlation of dialogue features with the total score."
    )
    page.table(
        ["feature", "ours", "paper", "vs the paper"],
        [[what, f"{ours[n]:.4f}", f"{paper:.2f}", compare(ours[n], paper, 2)] for n, (what, paper) in FEATURES.items()],
    )


def _item_correlations(page: Page, figures: dict) -> None:
    matrix = np.array(figures["item_correlations"])
    n = len(matrix)
    off = matrix[~np.eye(n, dtype=bool)]
    floor = math.floor(off.min() * 10) / 10  # the colours spread over the values there are
    fig = new_figure(13, 10)
    ax = fig.subplots()
    image = ax.imshow(matrix, cmap="viridis", vmin=floor, vmax=1)
    for (i, j), value in np.ndenumerate(matrix):
        ax.text(
            j,
            i,
            f"{value:.2f}",
            ha="center",
            va="center",
            fontsize=7,
            color="white" if value < floor + 0.55 * (1 - floor) else "black",
        )
    ax.set_xticks(range(n), [f"D{i + 1}" for i in range(n)], fontsize=8)
    ax.set_yticks(range(n), [item_title(i, 40).replace("\n", "") for i in range(n)], fontsize=8)
    fig.colorbar(image, ax=ax, shrink=0.6, label="Spearman ρ")
    page.figure(fig, "item_correlations", "Figure 11: Spearman correlations among the 20 feedback items.")
    pairs = np.where(np.eye(n, dtype=bool), np.nan, matrix)
    weakest, strongest = (np.unravel_index(pick(pairs), pairs.shape) for pick in (np.nanargmin, np.nanargmax))
    page.text(
        f"Between two different items ρ runs from {off.min():.2f} (D{weakest[0] + 1}-D{weakest[1] + 1}) to "
        f"{off.max():.2f} (D{strongest[0] + 1}-D{strongest[1] + 1}), median {np.median(off):.2f}. The paper draws "
        "the matrix as a heat map; kokorozoo holds no stated values of it to compare with."
    )
    rows = [[f"D{i + 1}", *(f"{v:.2f}" for v in row)] for i, row in enumerate(matrix)]
    page.table(["", *(f"D{i + 1}" for i in range(n))], rows, folded="The matrix as numbers")


def build_data_report(root: str | os.PathLike | None = None, out: str | os.PathLike = "reports/data") -> Path:
    """Write ``out/report.html``, its PNGs and ``data_report.json`` (every number) from the
    KokoroChat release at ``root`` (searched when None); return the HTML's path."""
    data = load_kokorochat(root, progress=sys.stderr.isatty())
    dialogues = list(data)
    figures = data_figures(dialogues)
    page = Page("KokoroChat: the paper's data figures, recomputed", Path(out))
    page.text(
        f"{figures['dialogues']:,} dialogues from {data.root}. Each figure stands beside the paper's stated value "
        "where it gives one; a difference is given at the paper's precision.",
        note=True,
    )
    for title, section in (
        ("Topics (Figure 2)", _topics),
        ("Total scores (Figure 3)", _scores),
        ("What goes with a high score (Figure 4)", _feature_correlations),
        ("Correlations among the items (Figure 11)", _item_correlations),
    ):
        page.heading(title)
        section(page, figures)
    (Path(out) / DATA_FILE).write_text(json.dumps(figures, ensure_ascii=False, indent=2) + "\n", encoding="utf-8")
    return page.write()
