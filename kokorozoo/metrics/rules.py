"""Decision rules: from one predicted distribution per (dialogue, item) to an integer score.

A model that gives a distribution over the six levels 0..5 does not have one best answer: each
score-prediction metric is minimised by its own rule. ACC (exact match) is maximised by the most
probable level (``argmax``); MAE by a median of the distribution (``median``); ACC_soft
(``|pred - gold| <= 1``) by the level ``p`` whose window ``p-1..p+1`` holds the most probability
(``best_window``). Reporting each metric under its own rule is what a user who is scored by that
metric would do; :func:`distribution_metrics` also gives all three under ``argmax`` alone, so a
reader can see how much of a gain comes from the rule rather than from the model.

Distributions are ``Tensor[N, 20, 6]`` (dialogues, items in ``ITEM_NAMES`` order, levels 0..5);
predictions come back as float ``Tensor[N, 20]`` like every prediction in :mod:`.scores`.
"""

from __future__ import annotations

import torch
from torch import Tensor

from kokorozoo.metrics.scores import score_metrics
from kokorozoo.records import ITEM_MAX, NUM_ITEMS

#: The rule that is optimal (in expectation under the predicted distribution) for each metric.
METRIC_RULES: dict[str, str] = {"acc": "argmax", "acc_soft": "best_window", "mae": "median"}
NUM_LEVELS = ITEM_MAX + 1
#: Cumulative sums are compared with 0.5 up to this much rounding (a hand-made 0.2 + 0.3).
_HALF_TOLERANCE = 1e-9


def _check_probs(probs: Tensor) -> Tensor:
    probs = torch.as_tensor(probs)
    if probs.ndim != 3 or probs.shape[1:] != (NUM_ITEMS, NUM_LEVELS):
        raise ValueError(f"probs must have shape [N, {NUM_ITEMS}, {NUM_LEVELS}], got {tuple(probs.shape)}")
    if torch.isnan(probs).any() or (probs < 0).any():
        raise ValueError("probs must be non-negative and not NaN")
    return probs.to(torch.float64)


def _levels(index: Tensor) -> Tensor:
    return index.to(torch.float32)


def argmax(probs: Tensor) -> Tensor:
    """The most probable level (the smaller one on a tie): maximises expected ACC."""
    return _levels(_check_probs(probs).argmax(-1))


def median(probs: Tensor) -> Tensor:
    """The smallest level whose cumulative probability reaches half: minimises expected absolute
    error (MAE), whatever the shape of the distribution. Unnormalised rows are normalised."""
    probs = _check_probs(probs)
    cdf = probs.cumsum(-1) / probs.sum(-1, keepdim=True)
    return _levels((cdf >= 0.5 - _HALF_TOLERANCE).int().argmax(-1))


def window_mass(probs: Tensor) -> Tensor:
    """``Tensor[N, 20, 6]``: the probability of levels ``p-1..p+1`` (clipped to 0..5) for each p,
    i.e. the expected ACC_soft of predicting ``p``."""
    probs = _check_probs(probs)
    padded = torch.nn.functional.pad(probs, (1, 1))
    return padded[..., :-2] + padded[..., 1:-1] + padded[..., 2:]


def best_window(probs: Tensor) -> Tensor:
    """The level whose window ``p-1..p+1`` holds the most probability: maximises expected
    ACC_soft. Among equally good windows the one whose centre is most probable wins (then the
    smaller level), so all mass on 5 predicts 5, not the equally safe 4."""
    probs = _check_probs(probs)
    mass = window_mass(probs)
    best = mass >= mass.amax(-1, keepdim=True)
    return _levels(torch.where(best, probs, torch.full_like(probs, -1.0)).argmax(-1))


RULES = {"argmax": argmax, "median": median, "best_window": best_window}


def rule_predictions(probs: Tensor) -> dict[str, Tensor]:
    """Every rule's predictions, ``{rule name: float Tensor[N, 20]}``."""
    return {name: rule(probs) for name, rule in RULES.items()}


def score_figures(preds: Tensor, targets: Tensor) -> dict[str, float]:
    """``{"acc", "acc_soft", "mae"}`` of point predictions [N, 20] as plain floats (one update of
    :func:`score_metrics`), for tables and JSON."""
    metrics = score_metrics()
    metrics.update(preds, torch.as_tensor(targets))
    return {name: float(value) for name, value in metrics.compute().items()}


def distribution_metrics(probs: Tensor, targets: Tensor) -> dict[str, dict[str, float]]:
    """ACC, ACC_soft and MAE of a predicted distribution against gold ``targets`` [N, 20].

    ``by_rule``: each metric under its own rule (:data:`METRIC_RULES`), what the model scores when
    the reader picks the rule for the metric; ``argmax``: all three from the argmax predictions, one
    answer per item as a text-generating model gives.
    """
    predictions = rule_predictions(probs)
    by_rule = {metric: score_figures(predictions[rule], targets)[metric] for metric, rule in METRIC_RULES.items()}
    return {"by_rule": by_rule, "argmax": score_figures(predictions["argmax"], targets)}


def rule_figures(probs: Tensor, targets: Tensor) -> dict:
    """ACC, ACC_soft and MAE of distributions [N, 20, 6], each under its own rule
    (:data:`METRIC_RULES`), overall and per item (``per_item``: ``{metric: 20 values}``), on rows
    every process already holds (no sync)."""
    predictions = rule_predictions(probs)
    figures, per_item = {}, {}
    for metric, rule in METRIC_RULES.items():
        metrics = score_metrics(sync_on_compute=False)
        metrics.update(predictions[rule], torch.as_tensor(targets))
        figures[metric] = float(metrics[metric].compute())
        per_item[metric] = metrics[metric].per_item().tolist()
    return {**figures, "per_item": per_item}


def point_figures(preds: Tensor, targets: Tensor) -> dict:
    """ACC, ACC_soft and MAE of point predictions [N, 20], overall and per item (``per_item``),
    on rows every process already holds (no sync)."""
    metrics = score_metrics(sync_on_compute=False)
    metrics.update(preds, torch.as_tensor(targets))
    figures = {name: float(value) for name, value in metrics.compute().items()}
    return {**figures, "per_item": {name: metrics[name].per_item().tolist() for name in figures}}
