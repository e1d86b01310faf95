"""Decision rules: hand-made distributions (ties included) and each rule optimal for its metric."""

import pytest
import torch
from _cases import NAN

from kokorozoo.metrics import METRIC_RULES, distribution_metrics, rule_predictions, rules, score_figures
from kokorozoo.metrics.rules import argmax, best_window, median, window_mass

pytestmark = pytest.mark.mutation  # fast enough to run per mutant


def one_item(*levels):
    """A [1, 20, 6] distribution whose every item is ``levels``."""
    return torch.tensor(levels, dtype=torch.float64).expand(1, 20, 6).clone()


@pytest.mark.parametrize(
    "levels, expected",
    [
        ((0.1, 0.2, 0.3, 0.4, 0, 0), {"argmax": 3, "median": 2, "best_window": 2}),
        ((0.5, 0.5, 0, 0, 0, 0), {"argmax": 0, "median": 0, "best_window": 0}),  # ties: the smaller level
        ((0.2, 0.3, 0.5, 0, 0, 0), {"argmax": 2, "median": 1, "best_window": 1}),  # 0.2 + 0.3 reaches half
        ((0, 0, 0, 0, 0, 1), {"argmax": 5, "median": 5, "best_window": 5}),  # not the equally safe 4
        ((1, 0, 0, 0, 0, 0), {"argmax": 0, "median": 0, "best_window": 0}),
        ((1 / 6,) * 6, {"argmax": 0, "median": 2, "best_window": 1}),  # windows 1..4 tie, centres tie
        ((0.3, 0, 0, 0, 0, 0.7), {"argmax": 5, "median": 5, "best_window": 5}),
        ((0.45, 0, 0, 0.1, 0.45, 0), {"argmax": 0, "median": 3, "best_window": 4}),
        ((2, 2, 6, 0, 0, 0), {"argmax": 2, "median": 2, "best_window": 1}),  # unnormalised
    ],
)
def test_rules_on_hand_made_distributions(levels, expected):
    predictions = rule_predictions(one_item(*levels))
    assert set(predictions) == set(expected)
    for rule, level in expected.items():
        assert predictions[rule].shape == (1, 20) and predictions[rule].dtype == torch.float32
        assert torch.equal(predictions[rule], torch.full((1, 20), float(level))), rule


def test_window_mass_clips_at_the_ends():
    mass = window_mass(one_item(0.1, 0.2, 0.3, 0.4, 0, 0))[0, 0]
    assert torch.allclose(mass, torch.tensor([0.3, 0.6, 0.9, 0.7, 0.4, 0.0], dtype=torch.float64))


def test_each_rule_is_optimal_for_its_metric_in_expectation():
    generator = torch.Generator().manual_seed(0)
    # Flat to sharply peaked (and often bimodal) distributions: uniform draws raised to 0..8.
    sharpness = 8 * torch.rand(300, 20, 1, generator=generator, dtype=torch.float64)
    probs = torch.rand(300, 20, 6, generator=generator, dtype=torch.float64) ** sharpness
    probs = probs / probs.sum(-1, keepdim=True)
    levels = torch.arange(6, dtype=torch.float64)
    expected = {  # [N, 20, 6]: the metric's expectation for predicting each level 0..5
        "acc": probs,
        "acc_soft": window_mass(probs),
        "mae": (probs[..., None, :] * (levels[:, None] - levels[None, :]).abs()).sum(-1),
    }
    for metric, rule in METRIC_RULES.items():
        chosen = rule_predictions(probs)[rule].long()
        value = expected[metric].gather(-1, chosen[..., None])[..., 0]
        best = expected[metric].amax(-1) if metric != "mae" else expected[metric].amin(-1)
        assert torch.allclose(value, best, atol=1e-12), metric


def test_distribution_metrics_under_own_rules_and_argmax():
    gold = torch.randint(0, 6, (40, 20), generator=torch.Generator().manual_seed(1))
    certain = torch.nn.functional.one_hot(gold, 6).double()
    figures = distribution_metrics(certain, gold)
    assert figures["by_rule"] == {"acc": 100.0, "acc_soft": 100.0, "mae": 0.0}
    assert figures["argmax"] == {"acc": 100.0, "acc_soft": 100.0, "mae": 0.0}
    probs = torch.rand(40, 20, 6, generator=torch.Generator().manual_seed(2))
    figures = distribution_metrics(probs, gold)
    assert figures["by_rule"]["acc"] == figures["argmax"]["acc"]
    assert figures["by_rule"]["mae"] == score_figures(median(probs), gold)["mae"]
    assert figures["by_rule"]["acc_soft"] == score_figures(best_window(probs), gold)["acc_soft"]
    assert figures["argmax"] == score_figures(argmax(probs), gold)


@pytest.mark.parametrize("bad", [torch.ones(2, 20, 5), torch.ones(2, 6), torch.full((1, 20, 6), float("nan"))])
def test_bad_distributions_are_refused(bad):
    with pytest.raises(ValueError):
        rule_predictions(bad)


# -- checks -------------------------------------------------------------------------------


def test_rules_refuse_what_is_not_a_distribution():
    with pytest.raises(ValueError, match=r"^probs must have shape \[N, 20, 6\], got \(2, 20, 5\)$"):
        rules.argmax(torch.ones(2, 20, 5))
    for bad in (torch.full((1, 20, 6), NAN), torch.full((1, 20, 6), -0.1)):
        with pytest.raises(ValueError, match="^probs must be non-negative and not NaN$"):
            rules.median(bad)


def test_median_reaches_half_up_to_the_rounding_tolerance():
    probs = torch.zeros(1, 20, 6, dtype=torch.float64)
    probs[..., 0] = 0.5 - 1e-9  # half, short by exactly the tolerance: level 0 is a median
    probs[..., 3] = 0.5 + 1e-9
    assert rules.median(probs).tolist() == [[0.0] * 20]
    probs[..., 0], probs[..., 3] = 0.5 - 1e-8, 0.5 + 1e-8  # short by more: it is not
    assert rules.median(probs).tolist() == [[3.0] * 20]


def test_rules_decide_in_float64():
    """A softmax in float32: the window 3..5 outweighs 4..5 by 3e-8, which float32 sums lose
    (computed in float32 the two tie and the centre rule picks 5)."""
    level = torch.tensor(
        [
            4.46144345914945e-04,
            4.4822034396929666e-05,
            1.2953140071658709e-07,
            3.2440745201256505e-08,
            1.146642304956913e-02,
            9.880424737930298e-01,
        ]
    )
    probs = level.float().expand(1, 20, 6).clone()
    assert rules.best_window(probs).tolist() == [[4.0] * 20]
    assert rules.best_window(probs.double()).tolist() == [[4.0] * 20]
