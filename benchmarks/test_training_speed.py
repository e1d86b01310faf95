"""Dialogue-level multi-turn training against the paper's per-turn samples, side by side.

Same tiny 4-bit backbone, same dialogues, same trained tokens (asserted); one epoch each.
Targets: at least 15x fewer tokens through the model and 10x less wall time per epoch.
"""

import pytest
import torch

from kokorozoo.data import dialogue_turns, response_split
from kokorozoo.data.batching import pad_samples
from kokorozoo.data.encoding import dialogue_windows, encode_dialogue, per_turn_samples
from kokorozoo.tasks import ResponseTask

DIALOGUES = 1
BATCH = 4
MAX_LENGTH = 4096


@pytest.fixture(scope="module")
def task():
    task = ResponseTask(optimizer="adamw")
    task.configure_model()
    return task


@pytest.fixture(scope="module")
def encoded(task, kokorochat):
    dialogues = response_split(kokorochat, "high", seed=0).train[:DIALOGUES]
    return [encode_dialogue(task.tokenizer, dialogue_turns(d)) for d in dialogues]


def samples(encoded, mode):
    make = dialogue_windows if mode == "dialogue" else per_turn_samples
    return [s for e in encoded for s in make(e, MAX_LENGTH)]


def one_epoch(task, batches):
    """Forward, backward and an AdamW step per batch, as ResponseTask.training_step does."""
    params = [p for p in task.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=1e-4)
    trained = 0
    for batch in batches:
        total, count = task.summed_loss(batch)
        (total / count).backward()
        optimizer.step()
        optimizer.zero_grad()
        trained += int(count)
    return trained


@pytest.mark.parametrize("mode", ["dialogue", "per_turn"])
def test_training_epoch(benchmark, task, encoded, mode):
    data = samples(encoded, mode)
    pad = task.tokenizer.pad_token_id
    batches = [pad_samples(data[i : i + BATCH], pad) for i in range(0, len(data), BATCH)]
    tokens = sum(int(b["attention_mask"].sum()) for b in batches)
    trained = benchmark.pedantic(one_epoch, args=(task, batches), rounds=3, iterations=1)
    benchmark.extra_info.update(
        {"mode": mode, "samples": len(data), "tokens_through_model": tokens, "trained_tokens": trained}
    )
    expected = sum(int(c != -100) for e in encoded for _, labels in samples([e], "dialogue") for c in labels)
    assert trained == expected  # the same loss terms in both modes
