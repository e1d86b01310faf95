"""ACC / ACC_soft / MAE against hand-computed cases (rounding, clamping, invalid predictions) and
the per-item-mode baseline."""

from __future__ import annotations

import math

import pytest
import torch
from _kokoro_pairs import dialogues

from kokorozoo.data.records import ITEM_MAX, NUM_ITEMS
from kokorozoo.metrics import ScoreAccuracy, ScoreMAE, constant_predictions, item_modes, score_metrics

pytestmark = pytest.mark.mutation  # fast enough to run per mutant

NAN = float("nan")


def _hand_case():
    """Three dialogues, gold 3 everywhere; every deviation below is worked out in the tests."""
    targets = torch.full((3, NUM_ITEMS), 3)
    preds = torch.full((3, NUM_ITEMS), 3.0)
    preds[0, 0] = 4  # off by one
    preds[1, 0] = 1  # off by two
    preds[2, 1] = NAN  # invalid (unparsable answer)
    preds[0, 2] = 2.5  # rounds half up to 3 (torch.round would give 2); |error| 0.5
    preds[1, 3] = 3.5  # rounds to 4; |error| 0.5
    preds[2, 4] = 7  # clamped to 5: off by two
    preds[0, 5] = -1  # clamped to 0: off by three
    return preds, targets


def _per_item(**wrong):
    """Per-item expected values: ``{index: value}`` over a default for untouched items."""
    default = wrong.pop("default")
    values = [default] * NUM_ITEMS
    for key, value in wrong.items():
        values[int(key[1:])] = value
    return torch.tensor(values, dtype=torch.float64)


def test_acc_by_hand():
    preds, targets = _hand_case()
    metric = ScoreAccuracy()
    metric.update(preds, targets)
    # misses: item0 x2, item1 (invalid), item3 (3.5 -> 4), item4 (7 -> 5), item5 (-1 -> 0) = 6 of 60
    assert metric.compute().item() == pytest.approx(100 * 54 / 60)
    third, two_thirds = 100 / 3, 200 / 3
    expected = _per_item(default=100.0, i0=third, i1=two_thirds, i3=two_thirds, i4=two_thirds, i5=two_thirds)
    torch.testing.assert_close(metric.per_item(), expected)
    assert metric.invalid_count() == 1


def test_acc_soft_by_hand():
    preds, targets = _hand_case()
    metric = ScoreAccuracy(tolerance=1)
    metric.update(preds, targets)
    # misses: item0 row1 (off by 2), item1 (invalid), item4 (off by 2), item5 (off by 3) = 4 of 60
    assert metric.compute().item() == pytest.approx(100 * 56 / 60)
    two_thirds = 200 / 3
    expected = _per_item(default=100.0, i0=two_thirds, i1=two_thirds, i4=two_thirds, i5=two_thirds)
    torch.testing.assert_close(metric.per_item(), expected)


def test_mae_by_hand():
    preds, targets = _hand_case()
    metric = ScoreMAE()
    metric.update(preds, targets)
    # errors: item0 1+2, item1 5 (invalid: ITEM_MAX), item2 0.5, item3 0.5, item4 2, item5 3 = 14
    assert metric.compute().item() == pytest.approx(14 / 60)
    expected = _per_item(default=0.0, i0=1.0, i1=5 / 3, i2=0.5 / 3, i3=0.5 / 3, i4=2 / 3, i5=1.0)
    torch.testing.assert_close(metric.per_item(), expected)
    assert metric.invalid_count() == 1


def test_valid_mask_marks_whole_rows_invalid():
    targets = torch.tensor([[2] * NUM_ITEMS, [4] * NUM_ITEMS])
    preds = targets.float()  # perfect, but the second answer could not be parsed
    valid = torch.tensor([True, False])
    acc, soft, mae = ScoreAccuracy(), ScoreAccuracy(1), ScoreMAE()
    for metric in (acc, soft, mae):
        metric.update(preds, targets, valid=valid)
        assert metric.invalid_count() == NUM_ITEMS
    assert acc.compute().item() == soft.compute().item() == 50.0
    assert mae.compute().item() == ITEM_MAX / 2
    torch.testing.assert_close(mae.per_item(), torch.full((NUM_ITEMS,), ITEM_MAX / 2, dtype=torch.float64))


def test_batches_accumulate_and_integer_preds_work():
    preds, targets = _hand_case()
    whole, batched = ScoreMAE(), ScoreMAE()
    whole.update(preds, targets)
    batched.update(preds[:1], targets[:1])
    batched.update(preds[1:], targets[1:])
    assert batched.compute().item() == pytest.approx(whole.compute().item())
    assert batched.invalid_count() == 1
    acc = ScoreAccuracy()
    acc.update(torch.full((4, NUM_ITEMS), 3, dtype=torch.long), torch.full((4, NUM_ITEMS), 3))
    assert acc.compute().item() == 100.0 and acc.invalid_count() == 0


def test_bad_shapes_raise():
    good = torch.zeros(2, NUM_ITEMS)
    with pytest.raises(ValueError, match="shape"):
        ScoreAccuracy().update(torch.zeros(2, 19), torch.zeros(2, 19))
    with pytest.raises(ValueError, match="differ"):
        ScoreMAE().update(good, torch.zeros(3, NUM_ITEMS))
    with pytest.raises(ValueError, match="valid"):
        ScoreMAE().update(good, good, valid=torch.ones(3, dtype=torch.bool))
    with pytest.raises(ValueError, match="NaN"):
        ScoreMAE().update(good, torch.full((2, NUM_ITEMS), NAN))


@pytest.mark.filterwarnings("ignore:The ``compute`` method of metric")
def test_empty_metric_is_nan():
    assert math.isnan(ScoreAccuracy().compute().item())


def test_score_metrics_collection_passes_valid():
    preds, targets = _hand_case()
    metrics = score_metrics()
    metrics.update(preds, targets, valid=torch.tensor([True, True, False]))
    values = metrics.compute()
    assert set(values) == {"acc", "acc_soft", "mae"}
    # the third row is now all invalid (20 misses); rows 0-1 miss item0 twice, item3 and item5
    assert values["acc"].item() == pytest.approx(100 * (40 - 4) / 60)
    assert metrics["acc"].invalid_count() == NUM_ITEMS
    assert ScoreMAE.higher_is_better is False and ScoreAccuracy.higher_is_better is True


# --- baseline -----------------------------------------------------------------------------------


def test_item_modes_ties_go_to_the_smaller_score():
    train = torch.full((5, NUM_ITEMS), 4)
    train[:, 0] = torch.tensor([1, 1, 2, 2, 3])  # tie 1/2 -> 1
    train[:, 1] = torch.tensor([5, 5, 0, 0, 0])  # clear mode 0
    train[:, 2] = torch.tensor([5, 4, 3, 2, 1])  # all tied -> 1
    modes = item_modes(train)
    assert modes.dtype == torch.long
    assert modes.tolist() == [1, 0, 1] + [4] * (NUM_ITEMS - 3)
    with pytest.raises(ValueError):
        item_modes(torch.full((2, NUM_ITEMS), 6))


def test_constant_baseline_scores_by_hand():
    train = torch.tensor([[3] * NUM_ITEMS, [3] * NUM_ITEMS, [4] * NUM_ITEMS])
    preds = constant_predictions(item_modes(train), 2)
    assert preds.shape == (2, NUM_ITEMS) and preds.dtype == torch.float32
    test = torch.tensor([[3] * NUM_ITEMS, [5] * NUM_ITEMS])
    acc, soft, mae = ScoreAccuracy(), ScoreAccuracy(1), ScoreMAE()
    for metric in (acc, soft, mae):
        metric.update(preds, test)
    assert (acc.compute().item(), soft.compute().item(), mae.compute().item()) == (50.0, 50.0, 1.0)


def test_baseline_on_real_feedback():
    items = torch.tensor([d.feedback.items for d in dialogues()])
    modes = item_modes(items)
    assert modes.shape == (NUM_ITEMS,) and 0 <= modes.min() and modes.max() <= ITEM_MAX
    for i in range(NUM_ITEMS):
        counts = torch.bincount(items[:, i], minlength=ITEM_MAX + 1)
        assert counts[modes[i]] == counts.max()
