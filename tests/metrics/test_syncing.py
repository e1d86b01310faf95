"""Syncing across ranks in one process: a stand-in for ``all_gather`` hands each state the other
rank's (and, as gloo does, refuses tensors of different dtypes), so every per-item value, invalid
count and Distinct's n-gram ids is checked in milliseconds beside the real two-process test in
test_metrics_ddp.py."""

from __future__ import annotations

import pytest
import torch
from _cases import PAIRS, score_case
from _references import reference_text_metrics
from torchmetrics.utilities import dim_zero_cat

from kokorozoo.metrics import BLEU, ROUGE, Distinct, ScoreAccuracy, ScoreMAE

pytestmark = pytest.mark.mutation  # fast enough to run per mutant


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
