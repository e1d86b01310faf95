"""ACC / ACC_soft / MAE against hand-computed cases (rounding, clamping, invalid predictions) and
the per-item-mode baseline."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from _cases import score_case
from _kokoro_pairs import dialogues
from _references import reference_scores

from kokorozoo.metrics import (
    BLEU,
    ROUGE,
    Distinct,
    ScoreAccuracy,
    ScoreMAE,
    constant_predictions,
    item_modes,
    score_metrics,
    text_metrics,
)
from kokorozoo.records import ITEM_MAX, NUM_ITEMS

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


# -- the collection as the tasks build it, against the numpy reference ------------------------------


def test_score_metrics_are_acc_exact_acc_soft_within_one_and_mae():
    preds, gold, valid = score_case()
    metrics = score_metrics()
    assert set(metrics.keys()) == {"acc", "acc_soft", "mae"}
    metrics.update(preds, gold, valid=valid)
    values = metrics.compute()
    reference_preds = preds.numpy().copy()
    reference_preds[~valid.numpy()] = np.nan
    expected = reference_scores(gold.numpy().astype(float), reference_preds)
    diffs = set(np.abs(reference_preds - gold.numpy())[~np.isnan(reference_preds)].astype(int).ravel().tolist())
    assert {0, 1, 2, 3} <= diffs  # the case exercises both tolerances
    for key in ("acc", "acc_soft", "mae"):
        assert values[key].item() == pytest.approx(float(expected[key].mean()), abs=1e-9), key
        np.testing.assert_allclose(metrics[key].per_item().numpy(), expected[key], atol=1e-9, err_msg=key)
        assert metrics[key].invalid_count() == 20 + 2
    assert values["acc"].dtype == values["mae"].dtype == torch.float64


def test_score_metrics_stay_apart_when_their_states_first_agree():
    """After an exact first batch ACC and ACC_soft have equal states; compute groups would merge them."""
    preds, gold, _ = score_case()
    metrics = score_metrics()
    metrics.update(gold.float(), gold)
    metrics.update(preds[:4], gold[:4])
    values = metrics.compute()
    assert values["acc"] < values["acc_soft"] < 100


@pytest.mark.parametrize("tolerance, per_entry", [(0, [1, 0, 0, 0]), (1, [1, 1, 0, 0]), (2, [1, 1, 1, 0])])
def test_accuracy_tolerance_and_its_checks(tolerance, per_entry):
    metric = ScoreAccuracy(tolerance)
    gold = torch.full((4, 20), 2)
    metric.update(gold + torch.tensor([0, 1, 2, 3])[:, None], gold)
    assert metric.compute().item() == pytest.approx(100 * sum(per_entry) / 4)
    assert metric.extra_repr() == f"tolerance={tolerance}" and metric.tolerance == tolerance
    with pytest.raises(ValueError, match="tolerance must be >= 0, got -1"):
        ScoreAccuracy(-1)


def test_scores_are_checked_and_compared_in_float64():
    metric = ScoreMAE()
    with pytest.raises(ValueError, match=r"preds must have shape \[N, 20\], got \(20,\)"):
        metric.update(torch.zeros(20), torch.zeros(20))
    with pytest.raises(ValueError, match=r"targets must have shape \[N, 20\], got \(1, 21\)"):
        metric.update(torch.zeros(1, 20), torch.zeros(1, 21))
    with pytest.raises(ValueError, match=r"valid must have shape \[2\], got \(2, 1\)"):
        metric.update(torch.zeros(2, 20), torch.zeros(2, 20), valid=torch.ones(2, 1, dtype=torch.bool))
    # 1 + 2**-30 is 1 in float32: the difference to gold 1 survives only in float64
    fine = torch.full((1, 20), 1 + 2**-30, dtype=torch.float64)
    metric.update(fine, torch.ones(1, 20, dtype=torch.long))
    assert metric.compute().item() == pytest.approx(2**-30, rel=1e-9)
    assert metric.value_sum.dtype == torch.float64 and ScoreAccuracy().value_sum.dtype == torch.long
    assert metric.count.dtype == metric.n_invalid.dtype == torch.long


def test_accuracy_and_mae_clamp_predictions_to_0_5():
    preds = torch.tensor([[-1.0, 7.0, 5.4, -0.4, 2.5, 3.49] + [3.0] * 14])
    gold = torch.tensor([[0, 5, 5, 0, 3, 3] + [3] * 14])
    acc, mae = ScoreAccuracy(), ScoreMAE()
    acc.update(preds, gold)
    mae.update(preds, gold)
    assert acc.per_item().tolist()[:6] == [100.0] * 6  # clamped, then rounded half up
    np.testing.assert_allclose(mae.per_item().numpy()[:6], [0, 0, 0, 0, 0.5, 0.49], atol=1e-6)


def test_float32_predictions_are_scored_in_float64():
    """Per-item sums of 2,000 float32 errors lose ~1e-5 in float32: scored in float64 they equal numpy's."""
    generator = torch.Generator().manual_seed(0)
    gold = torch.randint(0, 6, (2000, 20), generator=generator)
    preds = (gold + torch.rand(gold.shape, generator=generator) * 2 - 1).float()
    metric = ScoreMAE()
    metric.update(preds, gold)
    expected = np.abs(preds.double().clamp(0, 5).numpy() - gold.numpy()).mean(0)
    np.testing.assert_allclose(metric.per_item().numpy(), expected, rtol=0, atol=1e-12)


def test_errors_say_what_is_wrong():
    with pytest.raises(ValueError, match="^targets contain NaN: gold scores must all be present$"):
        ScoreMAE().update(torch.zeros(1, 20), torch.full((1, 20), NAN))
    with pytest.raises(TypeError, match="^preds and targets must be lists of strings, not single strings$"):
        BLEU(1).update("あ", ["あ"])
    with pytest.raises(TypeError, match="^preds must be a list of strings, not a single string$"):
        Distinct(1).update("あいう")


def test_settings_reach_every_metric_of_both_sets():
    """Keyword arguments (here: no syncing on compute) are every metric's, defaults are the paper's."""
    for collection in (score_metrics(sync_on_compute=False), text_metrics("char", sync_on_compute=False)):
        assert all(metric.sync_on_compute is False for metric in collection.values())
    for metric in (BLEU(2, sync_on_compute=False), ROUGE("1", sync_on_compute=False), Distinct(sync_on_compute=False)):
        assert metric.sync_on_compute is False
    assert all(m.tokenize == "mecab" for m in text_metrics().values())
    assert BLEU().n_gram == 4 and Distinct().n == 1 and ROUGE().variant == "L"
    assert BLEU().tokenize == ROUGE().tokenize == Distinct().tokenize == "mecab"


def test_item_modes_checks_its_input():
    train = torch.tensor([[0] * 20, [5] * 20, [5] * 20])
    assert item_modes(train.float()).tolist() == [5] * 20
    for bad, problem in [
        (torch.zeros(3, 19), r"got \(3, 19\)"),
        (torch.zeros(20), r"got \(20,\)"),
        (torch.zeros(0, 20), r"got \(0, 20\)"),
        (torch.full((2, 20), -1), "must lie in 0..5"),
        (torch.full((2, 20), 6), "must lie in 0..5"),
    ]:
        with pytest.raises(ValueError, match=problem):
            item_modes(bad)


def test_constant_predictions():
    modes = torch.arange(20) % 6
    preds = constant_predictions(modes, 3)
    assert preds.dtype == torch.float32 and preds.shape == (3, 20) and preds.tolist() == [modes.tolist()] * 3
    preds[0, 0] = 9  # a copy, not a view of the modes
    assert modes[0] == 0 and constant_predictions(modes, 3)[1, 0] == 0
    with pytest.raises(ValueError, match=r"modes must have shape \[20\], got \(19,\)"):
        constant_predictions(torch.zeros(19), 2)
