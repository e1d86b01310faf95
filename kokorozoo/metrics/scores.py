"""Score-prediction metrics over the 20 feedback items: ACC, ACC_soft, MAE, and the mode baseline.

Predictions are a float ``Tensor[N, 20]`` (items in :data:`~kokorozoo.records.ITEM_NAMES`
order), targets the gold 0-5 scores. A prediction can be invalid (the model's text answer could
not be parsed, or an item was missing from it): mark an entry with NaN, or a whole row with
``valid=False``. Invalid entries are never dropped, since dropping them would reward a model for
refusing to answer: they count as wrong for ACC and ACC_soft and as an error of ``ITEM_MAX`` (5)
for MAE, and :meth:`invalid_count` says how many there were.

Real-valued predictions (a regression head) are compared as follows: for ACC and ACC_soft they
are clamped to 0..5 and rounded half up to the nearest integer score; for MAE they are only
clamped to 0..5 (no rounding), which is also what makes 5 the largest possible error. Integer
predictions (parsed text answers) are unaffected by either.

States are per-item sums (sum reduce), so per-item and overall values are exact under DDP.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor
from torchmetrics import Metric, MetricCollection

from kokorozoo.records import ITEM_MAX, NUM_ITEMS


def _check_scores(name: str, x: Tensor) -> Tensor:
    x = torch.as_tensor(x)
    if x.ndim != 2 or x.shape[1] != NUM_ITEMS:
        raise ValueError(f"{name} must have shape [N, {NUM_ITEMS}], got {tuple(x.shape)}")
    return x.to(torch.float64) if x.dtype != torch.float64 else x


def _invalid_mask(preds: Tensor, valid: Tensor | None) -> Tensor:
    """True for every (dialogue, item) entry that has no usable prediction."""
    invalid = torch.isnan(preds)
    if valid is not None:
        valid = torch.as_tensor(valid, device=preds.device)
        if valid.shape != preds.shape[:1]:
            raise ValueError(f"valid must have shape [{preds.shape[0]}], got {tuple(valid.shape)}")
        invalid |= ~valid.bool()[:, None]
    return invalid


class _ItemMetric(Metric):
    """Per-item sums of an entry-wise value (hit or absolute error), and their means.

    ``compute()`` is the overall value over all (dialogue, item) pairs; :meth:`per_item` gives the
    20 per-item values and :meth:`invalid_count` the number of invalid entries (both synced across
    DDP ranks the way ``compute()`` is)."""

    is_differentiable = False
    full_state_update = False
    _scale = 1.0
    _sum_dtype = torch.float64

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.add_state("value_sum", torch.zeros(NUM_ITEMS, dtype=self._sum_dtype), dist_reduce_fx="sum")
        self.add_state("count", torch.zeros(NUM_ITEMS, dtype=torch.long), dist_reduce_fx="sum")
        self.add_state("n_invalid", torch.zeros(NUM_ITEMS, dtype=torch.long), dist_reduce_fx="sum")

    def _entries(self, preds: Tensor, targets: Tensor, invalid: Tensor) -> Tensor:
        """The value of every (dialogue, item) entry, shape [N, 20]."""
        raise NotImplementedError

    def update(self, preds: Tensor, targets: Tensor, valid: Tensor | None = None) -> None:
        """``preds``/``targets``: [N, 20]; NaN in ``preds`` or ``valid[i] == False`` marks invalid."""
        preds, targets = _check_scores("preds", preds), _check_scores("targets", targets)
        if preds.shape != targets.shape:
            raise ValueError(f"preds {tuple(preds.shape)} and targets {tuple(targets.shape)} differ")
        if torch.isnan(targets).any():
            raise ValueError("targets contain NaN: gold scores must all be present")
        invalid = _invalid_mask(preds, valid)
        self.value_sum += self._entries(preds, targets, invalid).sum(0).to(self._sum_dtype)
        self.count += preds.shape[0]
        self.n_invalid += invalid.sum(0)

    def _synced(self, fn: Callable[[], Tensor]) -> Tensor:
        """Run ``fn`` on the states of all ranks, as the ``compute()`` wrapper does."""
        if self._is_synced or not self._to_sync:
            return fn()
        with self.sync_context(dist_sync_fn=self.dist_sync_fn, should_unsync=self._should_unsync):
            return fn()

    def compute(self) -> Tensor:
        """The overall value over all (dialogue, item) pairs (NaN before any update)."""
        return self._scale * self.value_sum.sum().double() / self.count.sum()

    def per_item(self) -> Tensor:
        """The 20 per-item values, Tensor[20] in ``ITEM_NAMES`` order."""
        return self._synced(lambda: self._scale * self.value_sum.double() / self.count)

    def invalid_count(self) -> int:
        """How many (dialogue, item) entries had no valid prediction, over all ranks."""
        return int(self._synced(lambda: self.n_invalid.sum()))


class ScoreAccuracy(_ItemMetric):
    """ACC (``tolerance=0``, exact) or ACC_soft (``tolerance=1``, within one point), in percent."""

    higher_is_better = True
    plot_lower_bound = 0.0
    plot_upper_bound = 100.0
    _scale = 100.0
    _sum_dtype = torch.long

    def __init__(self, tolerance: int = 0, **kwargs):
        super().__init__(**kwargs)
        if tolerance < 0:
            raise ValueError(f"tolerance must be >= 0, got {tolerance}")
        self.tolerance = tolerance

    def _entries(self, preds: Tensor, targets: Tensor, invalid: Tensor) -> Tensor:
        rounded = torch.floor(preds.clamp(0, ITEM_MAX) + 0.5)  # half up, not torch.round's half-even
        return ((rounded - targets).abs() <= self.tolerance) & ~invalid

    def extra_repr(self) -> str:
        return f"tolerance={self.tolerance}"


class ScoreMAE(_ItemMetric):
    """Mean absolute error on the 0-5 scale; predictions clamped to 0..5, invalid entries cost 5."""

    higher_is_better = False
    plot_lower_bound = 0.0
    plot_upper_bound = float(ITEM_MAX)

    def _entries(self, preds: Tensor, targets: Tensor, invalid: Tensor) -> Tensor:
        error = (preds.clamp(0, ITEM_MAX) - targets).abs()
        return torch.where(invalid, torch.full_like(error, ITEM_MAX), error)


#: The score-prediction metrics' names, in the order every table shows them.
SCORE_METRICS = ("acc", "acc_soft", "mae")
#: How a result names the model's own figures, and the model's figures with each metric under its
#: own rule (see :mod:`kokorozoo.evaluation.results`).
MODEL, BY_RULE = "model", "by_rule"


def score_metrics(**kwargs) -> MetricCollection:
    """The paper's score-prediction set: ``acc``, ``acc_soft``, ``mae``. Compute groups are off
    because ACC and ACC_soft can have equal states after one batch and must stay apart."""
    metrics = (ScoreAccuracy(0, **kwargs), ScoreAccuracy(1, **kwargs), ScoreMAE(**kwargs))
    return MetricCollection(dict(zip(SCORE_METRICS, metrics)), compute_groups=False)


def item_modes(train_targets: Tensor) -> Tensor:
    """The most frequent score of each item in a training set, LongTensor[20]; on a tie the
    smaller score, so the baseline is deterministic."""
    targets = torch.as_tensor(train_targets)
    if targets.ndim != 2 or targets.shape[1] != NUM_ITEMS or targets.shape[0] == 0:
        raise ValueError(f"train_targets must have shape [N>0, {NUM_ITEMS}], got {tuple(targets.shape)}")
    targets = targets.long()
    if targets.min() < 0 or targets.max() > ITEM_MAX:
        raise ValueError(f"train_targets must lie in 0..{ITEM_MAX}")
    counts = F.one_hot(targets, ITEM_MAX + 1).sum(0)  # [20, 6]
    return counts.argmax(dim=-1)  # argmax returns the first maximum: the smaller score


def constant_predictions(modes: Tensor, n: int) -> Tensor:
    """The constant baseline's predictions for ``n`` dialogues: ``modes`` repeated, float [n, 20]."""
    modes = torch.as_tensor(modes)
    if modes.shape != (NUM_ITEMS,):
        raise ValueError(f"modes must have shape [{NUM_ITEMS}], got {tuple(modes.shape)}")
    return modes.to(torch.float32).expand(n, NUM_ITEMS).clone()
