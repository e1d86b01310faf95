"""The loss every task trains with: chunked at labelled positions (never a [B, L, V] tensor) and
on packed batches, equal to the full-logits loss on padded batches in float32."""

import pytest
import torch

from kokorozoo.data import dialogue_turns, response_split
from kokorozoo.data.batching import pack_samples, pad_samples
from kokorozoo.data.encoding import IGNORE_INDEX, encode_dialogue
from kokorozoo.tasks import ResponseTask
from kokorozoo.tasks.loss import labelled_token_loss, token_losses


@pytest.fixture(scope="module")
def task(small_tiny):
    """Float32, LoRA without dropout, and a trained LM head (its gradient goes through the chunks)."""
    task = ResponseTask(
        tiny=small_tiny,
        quantization="none",
        compute_dtype="float32",
        lora={"dropout": 0.0, "modules_to_save": ["lm_head"]},
    )
    task.configure_model()
    return task.eval()


@pytest.fixture(scope="module")
def samples(task, kokorochat):
    """Per-turn samples of two dialogues, of different lengths (so padding and packing differ)."""
    dialogues = response_split(kokorochat, "high", seed=0).train[:2]
    encoded = [encode_dialogue(task.tokenizer, dialogue_turns(d)) for d in dialogues]
    return [e.clipped(e.ends[t], 200, [t]) for e in encoded for t in e.targets[1:4]]


def gradients(task, loss_fn) -> dict[str, torch.Tensor]:
    task.zero_grad()
    total, count = loss_fn()
    (total / count).backward()
    return {name: p.grad.clone() for name, p in task.named_parameters() if p.requires_grad}


def full_logits_loss(task, batch):
    logits = task.model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    return token_losses(logits, batch["labels"])


def assert_same_gradients(got: dict, expected: dict) -> None:
    assert got.keys() == expected.keys() and any("lm_head" in k for k in got)  # the head is trained too
    for name in expected:
        torch.testing.assert_close(got[name], expected[name], rtol=1e-5, atol=1e-7, msg=name)


@pytest.mark.parametrize("chunk", [1, 7, 1024])
def test_chunked_loss_and_gradients_equal_the_full_logits_ones(task, samples, chunk, monkeypatch):
    batch = pad_samples(samples, task.tokenizer.pad_token_id)
    monkeypatch.setitem(task.hparams, "loss_chunk_size", chunk)
    total, count = task.summed_loss(batch)
    reference, reference_count = full_logits_loss(task, batch)
    assert int(count) == int(reference_count) > 50
    torch.testing.assert_close(total, reference, rtol=1e-5, atol=0)
    assert_same_gradients(
        gradients(task, lambda: task.summed_loss(batch)), gradients(task, lambda: full_logits_loss(task, batch))
    )


def test_the_lm_head_never_sees_more_than_one_chunk(task, samples):
    """Forward and the backward's recomputation alike: at most ``chunk`` rows of logits at once."""
    batch = pad_samples(samples, task.tokenizer.pad_token_id)
    hidden = task.hidden_states(batch["input_ids"], batch["attention_mask"])
    seen = []
    hook = task.lm_head.register_forward_hook(lambda module, args, out: seen.append(tuple(out.shape)))
    try:
        total, count = labelled_token_loss(hidden, batch["labels"], task.lm_head, chunk_size=16)
        total.backward()
    finally:
        hook.remove()
    chunks = -(-int(count) // 16)
    assert len(seen) == 2 * chunks  # each chunk once forward, once recomputed in backward
    assert all(len(shape) == 2 and shape[0] <= 16 for shape in seen)
    assert sum(shape[0] for shape in seen) == 2 * int(count)


def test_without_labels_the_loss_is_zero_and_trains_nothing(task, samples):
    ids, _ = samples[0]
    batch = pad_samples([(ids, [IGNORE_INDEX] * len(ids))], task.tokenizer.pad_token_id)
    total, count = task.summed_loss(batch)
    assert int(count) == 0 and float(total) == 0.0
    total.backward()


@pytest.mark.parametrize("attention", ["sdpa", "eager"])
def test_packed_batches_give_the_padded_loss_and_gradients(task, samples, attention):
    task.model.set_attn_implementation(attention)
    try:
        padded = pad_samples(samples, task.tokenizer.pad_token_id)
        packed = pack_samples(samples)
        assert packed["input_ids"].numel() < padded["input_ids"].numel()
        (total, count), (reference, reference_count) = task.summed_loss(packed), task.summed_loss(padded)
        assert int(count) == int(reference_count)
        torch.testing.assert_close(total, reference, rtol=1e-5, atol=0)
        assert_same_gradients(
            gradients(task, lambda: task.summed_loss(packed)), gradients(task, lambda: task.summed_loss(padded))
        )
    finally:
        task.model.set_attn_implementation("sdpa")
