"""The response generation section of a run report: the metric table, turn shape (length,
questions), BLEU by history length and example turns."""

from __future__ import annotations

import random
import re
from collections.abc import Sequence

import numpy as np

from kokorozoo.evaluation.reports.page import Page, new_figure
from kokorozoo.evaluation.reports.runs import Group, metric_table
from kokorozoo.evaluation.results import format_value
from kokorozoo.progress import progress

HISTORY_EDGES = (0, 5, 10, 20, 40, 80)
EXAMPLES = 5


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
    turns = "; ".join(f"{g.results[0].turns or len(g.rows)} in {g.label}" for g in groups)
    modes = ", ".join(
        f"{mode} ({TOKENIZE_MODES.get(mode, 'unknown mode')})"
        + (
            ""
            if len(set(tokenize.values())) == 1
            else f" for {', '.join(g.label for g in groups if tokenize[g.name] == mode)}"
        )
        for mode in dict.fromkeys(tokenize.values())
    )
    page.text(f"Counselor turns generated and scored: {turns}. Tokenized for the metrics: {modes}.")
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
            ["dialogue", "turn", "history", "the turn before", "reference", "generated"],
            [[r["dialogue_id"], r["turn_index"], r["history_turns"], r.get("previous", "–"), r["reference"],
              r["generation"]] for r in picked],
            f"{group.label}: {len(picked)} example turns (drawn with seed {seed}), each after the turn it answers",
            text_columns=1,
            long_columns=(3, 4, 5),
        )  # fmt: skip
