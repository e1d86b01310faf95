"""Padding-free packing against right-padded batches: the tokens that go through the model in one
training epoch with the real Llama-3 tokenizer (Kokoro-High and the score split, the paper's
settings), and the wall time of an epoch on the default tiny backbone, with the same loss terms.

Target: at least 1.2x fewer tokens through the model on the score split than padded batches of
the paper's size. The tiny model's wall time is measured, not gated: sdpa masks a packed row's
whole T x T attention, which on a model this narrow costs more than the padding saved (see
benchmarks/RESULTS.md).
"""

from __future__ import annotations

import pytest
from _training import train_steps

from kokorozoo.backbone import llama3_tokenizer
from kokorozoo.data.datamodules import ResponseDataModule, ScoreDataModule
from kokorozoo.tasks import ScoreTask

#: The paper's parts at the paper configs' settings, and the batch sizes compared: the paper's
#: batch in one step, and the configs' micro-batch (configs/paper/*.yaml accumulate to the former).
SPLITS = {
    "kokoro_high_per_turn": (ResponseDataModule, {"subset": "high", "mode": "per_turn", "max_length": 4096}, (8, 2)),
    "kokoro_high_dialogue": (ResponseDataModule, {"subset": "high", "mode": "dialogue", "max_length": 4096}, (8, 2)),
    "score": (ScoreDataModule, {"max_length": 8192}, (4, 2)),
}  # fmt: skip


def datamodule(kokorochat, tokenizer, name: str, packing: bool, batch_size: int, **overrides):
    cls, settings, _ = SPLITS[name]
    dm = cls(packing=packing, batch_size=batch_size, **{**settings, **overrides})
    dm._data = kokorochat
    dm.connect(tokenizer)
    return dm


def epoch_tokens(dm, batch_size: int, packing: bool) -> dict[str, int]:
    """Tokens through the model (padding included) and labelled tokens in one training epoch."""
    dm.batch_size, dm.packing = batch_size, packing
    through, labelled = 0, 0
    for batch in dm.train_dataloader():
        through += batch["input_ids"].numel()
        labelled += int((batch["labels"][:, 1:] != -100).sum())
    return {"through_model": through, "labelled": labelled}


@pytest.fixture(scope="module")
def llama3(kokorochat):
    """A datamodule per split with the Llama-3 tokenizer, its training part encoded once."""
    tokenizer = llama3_tokenizer()
    built = {}
    for name, (_, _, batches) in SPLITS.items():
        built[name] = datamodule(kokorochat, tokenizer, name, packing=False, batch_size=batches[0])
        built[name].setup("fit")
    return built


@pytest.mark.parametrize("name", list(SPLITS))
def test_tokens_through_the_model_per_epoch(benchmark, llama3, name):
    dm, (paper_batch, micro_batch) = llama3[name], SPLITS[name][2]
    packed = benchmark.pedantic(epoch_tokens, args=(dm, paper_batch, True), rounds=1, iterations=1)
    assert epoch_tokens(dm, micro_batch, True) == packed  # no padding whatever the batch
    info = {
        "split": name,
        "samples": len(dm.samples("train")),
        "packed": packed["through_model"],
        "labelled": packed["labelled"],
    }
    for batch in (paper_batch, micro_batch):
        padded = epoch_tokens(dm, batch, False)
        assert padded["labelled"] == packed["labelled"]  # the same loss terms
        info[f"padded_batch_{batch}"] = padded["through_model"]
        info[f"padded_batch_{batch}_over_packed"] = round(padded["through_model"] / packed["through_model"], 3)
    benchmark.extra_info.update(info)
    if name == "score":  # the paper's batch of 4, padded, against the packed micro-batches
        assert info["padded_batch_4_over_packed"] >= 1.2


#: One epoch on the tiny model: the score split's first training dialogues, batch 4.
TINY_DIALOGUES = 24


@pytest.fixture(scope="module")
def tiny_task():
    task = ScoreTask(optimizer="adamw")
    task.configure_model()
    return task


@pytest.mark.parametrize("packing", [False, True], ids=["padded", "packed"])
def test_tiny_score_epoch(benchmark, kokorochat, tiny_task, packing):
    dm = datamodule(kokorochat, tiny_task.tokenizer, "score", packing, batch_size=4, limit_train=TINY_DIALOGUES)
    dm.setup("fit")
    batches = list(dm.train_dataloader())
    trained = benchmark.pedantic(train_steps, args=(tiny_task, batches), rounds=3, iterations=1)
    benchmark.extra_info.update(
        {
            "packing": packing,
            "tokens_through_model": sum(b["input_ids"].numel() for b in batches),
            "trained_tokens": trained,
        }
    )
