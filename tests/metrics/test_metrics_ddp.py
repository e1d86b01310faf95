"""Two processes on CPU (gloo), each updating part of the data, give the single-process values for
every metric: the states and their dist_reduce_fx are right. One spawn serves all metrics (each
process has to import torch, which is most of the ~10 s this takes)."""

from __future__ import annotations

import time

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from _kokoro_pairs import response_pairs

from kokorozoo.metrics import Distinct, score_metrics, text_metrics
from kokorozoo.records import NUM_ITEMS

WORLD = 2
TEXT_PAIRS = 120


def _metrics():
    return {"text": text_metrics("mecab"), "char": text_metrics("char"), "scores": score_metrics()}


def _score_data():
    gen = torch.Generator().manual_seed(0)
    targets = torch.randint(0, 6, (37, NUM_ITEMS), generator=gen)
    noise = torch.randint(-2, 3, targets.shape, generator=gen) + 0.4 * torch.rand(targets.shape, generator=gen)
    preds = targets + noise  # real-valued, some out of 0..5
    preds[torch.rand(targets.shape, generator=gen) < 0.05] = float("nan")
    valid = torch.rand(37, generator=gen) > 0.1
    return preds, targets, valid


def _update(metrics, text, scores, lo, hi):
    """Update with rows lo:hi, in two batches of unequal size."""
    preds, refs = text
    s_preds, s_targets, s_valid = scores
    for a, b in [(lo, (2 * lo + hi) // 3), ((2 * lo + hi) // 3, hi)]:
        metrics["text"].update(preds[a:b], refs[a:b])
        metrics["char"].update(preds[a:b], refs[a:b])
    n = len(s_targets)
    a, b = lo * n // len(preds), hi * n // len(preds)
    metrics["scores"].update(s_preds[a:b], s_targets[a:b], valid=s_valid[a:b])


def _results(metrics, lonely):
    out = {f"{group}/{k}": v.item() for group, c in metrics.items() for k, v in c.compute().items()}
    for k, m in metrics["scores"].items():
        out[f"per_item/{k}"] = m.per_item().tolist()
        out[f"invalid/{k}"] = m.invalid_count()
    out["lonely_distinct2"] = lonely.compute().item()
    return out


def _worker(rank, init_file, out_dir, text, scores):
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=WORLD)
    try:
        metrics, lonely = _metrics(), Distinct(2)
        cut = len(text[0]) * 2 // 5  # unequal halves: list states of different lengths are gathered
        lo, hi = (0, cut) if rank == 0 else (cut, len(text[0]))
        _update(metrics, text, scores, lo, hi)
        if rank == 0:  # a rank that saw no data at all must not break Distinct's list state
            lonely.update(text[0][:30])
        torch.save(_results(metrics, lonely), f"{out_dir}/rank{rank}.pt")
    finally:
        dist.destroy_process_group()


@pytest.mark.filterwarnings("ignore:The ``compute`` method of metric")
def test_two_processes_equal_one(tmp_path):
    preds, refs = response_pairs()
    text = (list(preds[:TEXT_PAIRS]), list(refs[:TEXT_PAIRS]))
    scores = _score_data()

    single, lonely = _metrics(), Distinct(2)
    _update(single, text, scores, 0, TEXT_PAIRS)
    lonely.update(text[0][:30])
    expected = _results(single, lonely)
    assert expected["scores/acc"] > 0 and expected["invalid/acc"] > NUM_ITEMS  # both kinds of invalid

    ctx = mp.start_processes(
        _worker,
        args=(str(tmp_path / "init"), str(tmp_path), text, scores),
        nprocs=WORLD,
        join=False,
        start_method="spawn",
    )
    deadline = time.monotonic() + 120
    while not ctx.join(timeout=1):
        if time.monotonic() > deadline:
            for p in ctx.processes:
                p.kill()
            pytest.fail("the DDP workers did not finish in 120 s")

    for rank in range(WORLD):
        got = torch.load(tmp_path / f"rank{rank}.pt")
        assert got.keys() == expected.keys()
        for key, value in expected.items():
            assert got[key] == pytest.approx(value, abs=1e-9), (rank, key)
