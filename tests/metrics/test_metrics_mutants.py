"""The metric collections as the tasks build them, their argument checks, and their DDP syncing
in one process.

``score_metrics()`` and ``text_metrics()`` are checked key by key against the independent
references of ``tests/_references.py`` (numpy; sacrebleu, rouge-score and a set), on data chosen so
that every rule is exercised (predictions off by 0, 1, 2 and 3, invalid rows and entries; BLEU-3
differing from BLEU-4). The syncing of per-item values, invalid counts and Distinct's n-gram ids is
checked with a stand-in for ``all_gather`` that hands each state the other rank's (and, as gloo
does, refuses tensors of different dtypes), so it runs in milliseconds beside the real two-process
test in test_metrics_ddp.py.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from _references import reference_scores, reference_text_metrics
from torchmetrics.utilities import dim_zero_cat

from kokorozoo.metrics import (
    BLEU,
    ROUGE,
    Distinct,
    ScoreAccuracy,
    ScoreMAE,
    constant_predictions,
    item_modes,
    rules,
    score_metrics,
    text_metrics,
)

pytestmark = pytest.mark.mutation  # fast enough to run per mutant

NAN = float("nan")


def score_case():
    """Gold [6, 20] and integer predictions off by 0, 1, 2 and 3, with NaN entries; row 4 is
    marked invalid as a whole."""
    gold = torch.tensor([[(i + d) % 6 for i in range(20)] for d in range(6)])
    offsets = torch.tensor([[(i * 7 + d * 3) % 7 - 3 for i in range(20)] for d in range(6)])
    preds = (gold + offsets).clamp(0, 5).float()
    preds[1, 3] = preds[2, 19] = NAN
    valid = torch.tensor([True, True, True, True, False, True])
    return preds, gold, valid


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


# -- text ---------------------------------------------------------------------------------------------

#: (generation, reference): word 4-grams in common, a repeated n-gram (clipping), one pair with nothing
#: in common; BLEU-1..4 all differ.
PAIRS = [
    (
        "お仕事が大変だったのですね。よく頑張ってこられましたね。",
        "お仕事が大変だったのですね。今日はどんなことをお話ししたいですか？",
    ),
    (
        "ご家族とのことで悩んでいらっしゃるのですね。",
        "ご家族とのことで悩んでいらっしゃるのですね。詳しく教えていただけますか。",
    ),
    ("そうですね、そうですね、そうですね。", "そうですね。"),
    ("ありがとうございます。", "明日も来てください。"),
    ("今日はどんなことをお話ししたいですか？", "今日はどんなことをお話ししたいですか？少しずつで大丈夫ですよ。"),
]


@pytest.mark.parametrize("mode", ["mecab", "char", "none"])
def test_text_metrics_are_the_papers_set_on_one_tokenization(mode):
    preds, refs = [p for p, _ in PAIRS], [r for _, r in PAIRS]
    if mode == "none":
        preds, refs = [" ".join(p) for p in preds], [" ".join(r) for r in refs]  # characters, spaced
    metrics = text_metrics(mode)
    assert set(metrics.keys()) == {"bleu1", "bleu2", "bleu3", "bleu4", "rouge1", "rouge2", "rougeL", "dist1", "dist2"}
    assert all(m.tokenize == mode for m in metrics.values())
    metrics.update(preds[:2], refs[:2])
    metrics.update(preds[2:], refs[2:])
    values = {k: v.item() for k, v in metrics.compute().items()}
    expected = reference_text_metrics(preds, refs, mode)
    assert len({round(expected[f"bleu{n}"], 6) for n in range(1, 5)}) == 4 and expected["bleu4"] > 0
    for key, value in expected.items():
        assert values[key] == pytest.approx(value, abs=1e-6), key


def test_text_metrics_stay_apart_when_their_states_first_agree():
    """A first batch with nothing in common gives every ROUGE and BLEU the same (zero) state."""
    metrics = text_metrics("char")
    metrics.update(["あ"], ["い"])
    metrics.update([PAIRS[0][0]], [PAIRS[0][1]])
    values = metrics.compute()
    assert values["rouge1"] > values["rouge2"] > 0 and values["bleu1"] > values["bleu2"] > 0
    assert values["dist1"] != values["dist2"]


def test_text_metric_arguments_are_checked_and_shown():
    for bad in (0, -1, 2.0, "2"):
        with pytest.raises(ValueError, match=f"n_gram must be a positive integer, got {bad!r}"):
            BLEU(bad)
        with pytest.raises(ValueError, match=f"n must be a positive integer, got {bad!r}"):
            Distinct(bad)
    with pytest.raises(ValueError, match=r"tokenize must be one of \['char', 'mecab', 'none'\], got 'words'"):
        ROUGE("1", tokenize="words")
    with pytest.raises(ValueError, match=r"variant must be one of \('1', '2', 'L'\), got '3'"):
        ROUGE(3)
    assert ROUGE(1).variant == "1"  # given as a number, as a config may
    assert BLEU(3, "char").extra_repr() == "n_gram=3, tokenize='char'"
    assert ROUGE("2", "none").extra_repr() == "variant='2', tokenize='none'"
    assert Distinct(2, "char").extra_repr() == "n=2, tokenize='char'"
    with pytest.raises(TypeError, match="preds must be a list of strings"):
        Distinct(1).update("あいう")
    with pytest.raises(TypeError, match="not single strings"):
        BLEU(1).update(["あ"], "あ")
    with pytest.raises(ValueError, match="2 predictions but 1 targets"):
        ROUGE().update(["あ", "い"], ["あ"])


def test_text_states_are_exact_counts():
    bleu, rouge, distinct = BLEU(4, "char"), ROUGE("L", "char"), Distinct(2, "char")
    for metric in (bleu, rouge, distinct):
        metric.update([p for p, _ in PAIRS], [r for _, r in PAIRS])
    assert {bleu.matches.dtype, bleu.ngrams.dtype, bleu.pred_len.dtype, bleu.target_len.dtype} == {torch.long}
    assert rouge.fmeasure_sum.dtype == torch.float64 and rouge.count.dtype == torch.long and int(rouge.count) == 5
    hyp = [[c for c in p if not c.isspace()] for p, _ in PAIRS]
    assert bleu.pred_len.item() == sum(map(len, hyp)) and bleu.ngrams.tolist() == [
        sum(max(len(h) - n + 1, 0) for h in hyp) for n in range(1, 5)
    ]
    assert int(distinct.total) == sum(len(h) - 1 for h in hyp) and distinct.ids[0].dtype == torch.long
    assert bleu.compute().dtype == rouge.compute().dtype == distinct.compute().dtype == torch.float64


@pytest.mark.filterwarnings("ignore:The ``compute`` method of metric")
def test_empty_text_metrics_are_zero():
    assert ROUGE("1").compute().item() == 0.0 and Distinct(1).compute().item() == 0.0
    empty = Distinct(1)
    empty.update([""])
    assert empty.compute().item() == 0.0 and int(empty.total) == 0


def test_distinct_over_an_empty_batch_keeps_its_ids_exact():
    """64-bit n-gram ids: an empty first batch must not turn the concatenated ids into floats."""
    texts = [p for p, _ in PAIRS]
    for n in (1, 2):
        metric = Distinct(n, "char")
        metric.update([""])
        metric.update([])
        metric.update(texts)
        assert metric.compute().item() == pytest.approx(
            reference_text_metrics(texts, texts, "char")[f"dist{n}"], abs=1e-9
        )


# -- syncing across ranks, with a stand-in for all_gather ---------------------------------------


def synced_pair(make, updates_here, updates_there, device="cpu"):
    """A metric on this rank (``updates_here``) whose sync gathers, for each state, this rank's and
    the other rank's (``updates_there``) tensor, refusing different dtypes (as gloo does) and
    devices (as NCCL does)."""
    there = make().to(device)
    for args in updates_there:
        there.update(*args)
    others = iter(
        [dim_zero_cat(v) if isinstance(v, list) else v for v in (getattr(there, a) for a in there._reductions)]
    )

    def all_gather(tensor, group=None):
        other = next(others)
        assert tensor.dtype == other.dtype, f"gloo cannot gather {tensor.dtype} beside {other.dtype}"
        assert tensor.device == other.device, f"cannot gather a tensor on {tensor.device} beside {other.device}"
        return [tensor, other]

    here = make(distributed_available_fn=lambda: True, dist_sync_fn=all_gather).to(device)
    for args in updates_here:
        here.update(*args)
    return here


@pytest.mark.parametrize("make", [ScoreAccuracy, lambda **kw: ScoreAccuracy(1, **kw), ScoreMAE])
@pytest.mark.parametrize("what", ["compute", "per_item", "invalid_count"])
def test_item_metrics_sync_every_figure(make, what):
    preds, gold, valid = score_case()
    parts = [(preds[:2], gold[:2], valid[:2]), (preds[2:], gold[2:], valid[2:])]
    single = make()
    for args in parts:
        single.update(*args)
    value = getattr(synced_pair(make, parts[:1], parts[1:]), what)()
    expected = getattr(single, what)()
    assert torch.allclose(torch.as_tensor(value, dtype=torch.float64), torch.as_tensor(expected, dtype=torch.float64))


#: Devices the metrics are checked on: states and results must stay where the metric is.
DEVICES = ["cpu", pytest.param("cuda", marks=pytest.mark.skipif(not torch.cuda.is_available(), reason="no GPU"))]


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("here", [[], [[("", "x")]], [PAIRS[:2]], [PAIRS[:1], PAIRS[3:]]])
def test_distinct_unites_the_ranks_ngrams(here, device):
    """Rank 0 saw ``here`` (possibly nothing at all, or only empty generations), the other rank
    PAIRS[2:]: their union counts."""
    make = lambda **kw: Distinct(2, "char", **kw)  # noqa: E731
    there = [PAIRS[2:]]
    batches = [([p for p, _ in pairs],) for pairs in here]
    metric = synced_pair(make, batches, [([p for p, _ in pairs],) for pairs in there], device)
    texts = [p for pairs in here + there for p, _ in pairs]
    expected = reference_text_metrics(texts, texts, "char")["dist2"]
    assert metric.compute().item() == pytest.approx(expected, abs=1e-9)


@pytest.mark.parametrize("make", [lambda **kw: BLEU(4, "char", **kw), lambda **kw: ROUGE("L", "char", **kw),
                                  lambda **kw: ROUGE("2", "char", **kw)])  # fmt: skip
def test_text_metrics_sync_their_sums(make):
    preds, refs = [p for p, _ in PAIRS], [r for _, r in PAIRS]
    single = make()
    single.update(preds, refs)
    metric = synced_pair(make, [(preds[:2], refs[:2])], [(preds[2:], refs[2:])])
    assert metric.compute().item() == pytest.approx(single.compute().item(), abs=1e-9)
    assert single.compute().item() > 0


def test_figures_are_local_when_the_metric_does_not_sync():
    """per_item() and invalid_count() follow compute(): with sync_on_compute=False, this rank's only."""
    preds, gold, valid = score_case()
    local = ScoreMAE()
    local.update(preds[:2], gold[:2], valid[:2])
    make = lambda **kw: ScoreMAE(sync_on_compute=False, **kw)  # noqa: E731
    metric = synced_pair(make, [(preds[:2], gold[:2], valid[:2])], [(preds[2:], gold[2:], valid[2:])])
    assert torch.equal(metric.per_item(), local.per_item()) and metric.invalid_count() == local.invalid_count()
    assert metric.compute().item() == local.compute().item()


def test_distinct_syncs_in_the_process_group_it_is_given():
    groups = []

    def all_gather(tensor, group=None):
        groups.append(group)
        return [tensor]

    metric = Distinct(1, "char")
    metric.update(["あい"])
    metric.sync(dist_sync_fn=all_gather, process_group="group-b", distributed_available=lambda: True)
    assert groups == ["group-b", "group-b"]  # ids and total


@pytest.mark.parametrize("device", DEVICES)
def test_states_and_results_stay_on_the_metrics_device(device):
    preds, gold, valid = score_case()
    for make in (ScoreAccuracy, ScoreMAE):
        here, reference = make().to(device), make()
        here.update(preds.to(device), gold.to(device), valid=valid.tolist())  # a list: placed by the metric
        reference.update(preds, gold, valid=valid)
        assert here.compute().device.type == device and here.compute().item() == reference.compute().item()
    texts, refs = [p for p, _ in PAIRS], [r for _, r in PAIRS]
    for make in (lambda: BLEU(2, "char"), lambda: ROUGE("1", "char"), lambda: Distinct(2, "char")):
        here, reference = make().to(device), make()
        here.update(texts, refs)
        reference.update(texts, refs)
        value = here.compute()
        assert value.device.type == device and value.item() == pytest.approx(reference.compute().item(), abs=1e-12)
        states = [getattr(here, a) for a in here._reductions]
        assert all(t.device.type == device for s in states for t in (s if isinstance(s, list) else [s]))


# -- decision rules -------------------------------------------------------------------------------


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
