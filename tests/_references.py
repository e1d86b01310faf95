"""Independent references for the numbers kokorozoo reports: they share no code with
:mod:`kokorozoo.metrics` and are written the plain way, so a test can hold a run's metrics.json (or
a task's report) to them.

- score prediction: ACC, ACC_soft (percent) and MAE per item in numpy, an invalid (NaN) prediction
  a miss and an error of 5; the per-item mode (the smaller score on a tie);
- response generation: BLEU-1..4 by sacrebleu (``tokenize="none"`` on space-joined tokens, no
  smoothing), ROUGE-1/2/L F-measure by rouge-score (mean over pairs), Distinct-1/2 as distinct
  n-grams over all n-grams of all generations, all x100, on the named tokenization (MeCab words by
  fugashi + unidic-lite, characters, or whitespace);
- classification: per-class F1 and its macro mean over the classes predicted or present.
"""

from __future__ import annotations

import os
from collections.abc import Callable

import numpy as np
from rouge_score.rouge_scorer import RougeScorer
from sacrebleu.metrics import BLEU as SacreBLEU

INVALID_ERROR = 5  # what an invalid item costs in MAE, stated here rather than imported
LEVELS = 6  # scores 0..5


def score_arrays(rows: list[dict]) -> tuple[np.ndarray, np.ndarray]:
    """Gold [N, 20] and predictions [N, 20] of predictions.jsonl rows, NaN where a prediction is null."""
    gold = np.array([r["gold"] for r in rows], dtype=float)
    pred = np.array([[np.nan if p is None else p for p in r["predicted"]] for r in rows], dtype=float)
    return gold, pred


def reference_scores(gold: np.ndarray, pred: np.ndarray) -> dict[str, np.ndarray]:
    """Per-item ACC, ACC_soft (percent) and MAE of integer predictions; NaN is a miss and costs 5."""
    invalid = np.isnan(pred)
    diff = np.abs(np.where(invalid, 0.0, pred) - gold)
    return {
        "acc": 100 * np.mean(~invalid & (diff == 0), axis=0),
        "acc_soft": 100 * np.mean(~invalid & (diff <= 1), axis=0),
        "mae": np.mean(np.where(invalid, INVALID_ERROR, diff), axis=0),
    }


def reference_modes(train_gold: np.ndarray) -> np.ndarray:
    """Each item's most frequent training score, the smaller one on a tie."""
    return np.array([np.bincount(column, minlength=LEVELS).argmax() for column in np.asarray(train_gold, int).T])


def text_tokenizer(mode: str) -> Callable[[str], list[str]]:
    """The tokens a report names: MeCab words (fugashi + unidic-lite surfaces, no whitespace inside
    a token), non-space characters, or whitespace-separated tokens."""
    if mode == "mecab":
        import fugashi
        import unidic_lite

        rc = os.path.join(unidic_lite.DICDIR, "mecabrc")
        tagger = fugashi.Tagger(f'-d "{unidic_lite.DICDIR}" -r "{rc}"')
        return lambda text: [t for word in tagger(text) for t in word.surface.split()]
    if mode == "char":
        return lambda text: [c for c in text if not c.isspace()]
    assert mode == "none", mode
    return str.split


class _RougeTokens:
    """What rouge-score takes as a tokenizer (its own deletes every Japanese character)."""

    def __init__(self, tokenize: Callable[[str], list[str]]):
        self.tokenize = tokenize


def reference_text_metrics(generations: list[str], references: list[str], mode: str) -> dict[str, float]:
    """BLEU-1..4, ROUGE-1/2/L and Distinct-1/2 (x100) of generations against one reference each."""
    tokenize = text_tokenizer(mode)
    hyps, refs = [tokenize(g) for g in generations], [tokenize(r) for r in references]
    joined_hyps, joined_refs = [" ".join(t) for t in hyps], [[" ".join(t) for t in refs]]
    values = {
        f"bleu{n}": SacreBLEU(tokenize="none", smooth_method="none", max_ngram_order=n)
        .corpus_score(joined_hyps, joined_refs)
        .score
        for n in range(1, 5)
    }
    scorer = RougeScorer(["rouge1", "rouge2", "rougeL"], tokenizer=_RougeTokens(tokenize))
    scores = [scorer.score(r, g) for g, r in zip(generations, references)]
    for key in ("rouge1", "rouge2", "rougeL"):
        values[key] = 100 * sum(s[key].fmeasure for s in scores) / len(scores)
    for n in (1, 2):
        grams = [tuple(t[i : i + n]) for t in hyps for i in range(len(t) - n + 1)]
        values[f"dist{n}"] = 100 * len(set(grams)) / len(grams) if grams else 0.0
    return values


def reference_f1(gold: list[int], pred: list[int], classes: int) -> tuple[np.ndarray, float]:
    """Per-class F1 (0 for a class neither predicted nor present) and the macro mean over the
    classes that are predicted or present."""
    gold_a, pred_a = np.asarray(gold), np.asarray(pred)
    f1, seen = np.zeros(classes), np.zeros(classes, dtype=bool)
    for c in range(classes):
        tp = np.sum((pred_a == c) & (gold_a == c))
        fp, fn = np.sum((pred_a == c) & (gold_a != c)), np.sum((pred_a != c) & (gold_a == c))
        seen[c] = tp + fp + fn > 0
        f1[c] = 2 * tp / (2 * tp + fp + fn) if seen[c] else 0.0
    return f1, float(f1[seen].mean())


def reference_rules(probs: np.ndarray) -> dict[str, np.ndarray]:
    """The decision rules on distributions [N, 20, 6], as integer levels [N, 20]: ``argmax`` (the
    most probable level, the smaller on a tie), ``median`` (the smallest level whose cumulative
    share reaches one half, up to 1e-9 of rounding), ``best_window`` (the level whose window
    p-1..p+1 holds the most probability; on a tie the more probable centre, then the smaller)."""
    probs = np.asarray(probs, dtype=np.float64)
    cdf = np.cumsum(probs, -1) / probs.sum(-1, keepdims=True)
    padded = np.pad(probs, [(0, 0), (0, 0), (1, 1)])
    mass = padded[..., :-2] + padded[..., 1:-1] + padded[..., 2:]
    best = np.where(mass >= mass.max(-1, keepdims=True), probs, -1.0)
    return {
        "argmax": probs.argmax(-1),
        "median": (cdf >= 0.5 - 1e-9).argmax(-1),
        "best_window": best.argmax(-1),
    }


#: The rule each score metric is read under when a section takes every metric under its own rule.
OWN_RULE = {"acc": "argmax", "acc_soft": "best_window", "mae": "median"}


def reference_by_rule(gold: np.ndarray, probs: np.ndarray) -> dict[str, np.ndarray]:
    """Per-item ACC, ACC_soft and MAE of distributions, each metric under its own rule."""
    predictions = reference_rules(probs)
    return {
        metric: reference_scores(gold, predictions[rule].astype(float))[metric] for metric, rule in OWN_RULE.items()
    }
