"""Shared-prefix generation: the same greedy tokens as ``generate``, one forward per prefix chain."""

import pytest

from kokorozoo.chat_format import stop_token_ids
from kokorozoo.data import dialogue_turns, response_split
from kokorozoo.data.datamodules import GenerationRequest
from kokorozoo.data.encoding import encode_dialogue, generation_prompt
from kokorozoo.generation import (
    generate_padded,
    generate_shared_prefix,
    prefix_chains,
    shared_prefix_supported,
)
from kokorozoo.tasks import ResponseTask

MAX_NEW, MIN_NEW = 12, 3


def test_prefix_chains_group_prompts_that_are_prefixes_of_one_another():
    prompts = [[1, 2], [1, 2, 3], [1, 2, 3, 4], [1, 5], [1, 2, 3, 4, 6], [9]]
    assert prefix_chains(prompts) == [
        ([1, 2, 3, 4, 6], [0, 1, 2, 4]),
        ([1, 5], [3]),
        ([9], [5]),
    ]


def task_and_prompts(small_tiny, kokorochat, compute_dtype, max_length):
    """A response task on the small tiny model, in eval mode, and the prompts of the first and
    last counselor turns of a test dialogue (cut to ``max_length``, so late turns have their own,
    later-starting history)."""
    task = ResponseTask(
        tiny=vars(small_tiny), compute_dtype=compute_dtype, max_new_tokens=MAX_NEW, min_new_tokens=MIN_NEW
    )
    task.configure_model()
    task.eval()
    dialogue = response_split(kokorochat, "high", seed=0).test[0]
    encoded = encode_dialogue(task.tokenizer, dialogue_turns(dialogue))
    turns = encoded.targets[:6] + encoded.targets[-6:]
    prompts = [generation_prompt(encoded, t, max_length)[0] for t in turns]
    settings = dict(
        max_new_tokens=MAX_NEW,
        min_new_tokens=MIN_NEW,
        stop_ids=stop_token_ids(task.tokenizer),
        pad_id=task.tokenizer.pad_token_id,
    )
    return task, prompts, settings


@pytest.fixture(scope="module")
def float32_task(small_tiny, kokorochat):
    return task_and_prompts(small_tiny, kokorochat, "float32", max_length=1024)


def test_equals_one_generate_per_turn_in_float32(float32_task):
    task, prompts, settings = float32_task
    assert 1 < len(prefix_chains(prompts)) < len(prompts)  # shared and cut histories in one call
    # a token the random model writes after the minimum also stops: some rows end early
    first = generate_shared_prefix(task.model, prompts[:1], batch_size=1, **settings)[0]
    settings = {**settings, "stop_ids": settings["stop_ids"] + [first[MIN_NEW + 1]]}
    shared = generate_shared_prefix(task.model, prompts, batch_size=5, **settings)
    alone = [generate_padded(task.model, [p], **settings)[0] for p in prompts]
    assert shared == alone
    assert min(len(t) for t in shared) < MAX_NEW
    assert all(len(t) >= MIN_NEW for t in shared)


def test_equals_generate_on_the_same_batch_in_bfloat16(small_tiny, kokorochat):
    """In bfloat16 the batch shape itself moves greedy decoding (4-bit kernels differ for one row
    and several; ``generate`` on a padded batch differs from one row at a time just as much), so
    the reference is ``generate`` on the same batch."""
    task, prompts, settings = task_and_prompts(small_tiny, kokorochat, "bfloat16", max_length=4096)
    shared = generate_shared_prefix(task.model, prompts, batch_size=len(prompts), **settings)
    assert shared == generate_padded(task.model, prompts, **settings)


@pytest.mark.parametrize(
    "where, name, value",
    [
        ("generation_config", "repetition_penalty", 1.2),
        ("generation_config", "suppress_tokens", [5]),
        ("generation_config", "num_beams", 4),
        ("generation_config", "forced_eos_token_id", 2),
        ("config", "sliding_window", 512),
        ("config", "rope_scaling", {"rope_type": "dynamic", "factor": 2.0}),
    ],
)
def test_models_only_generate_serves_fall_back_to_it(float32_task, monkeypatch, where, name, value):
    task, prompts, _ = float32_task
    assert shared_prefix_supported(task.model)
    monkeypatch.setattr(getattr(task.model, where), name, value, raising=False)
    assert not shared_prefix_supported(task.model)
    if where == "generation_config":  # generate_text then calls generate (which applies it)
        monkeypatch.setattr("kokorozoo.tasks.base.generate_shared_prefix", None)
        with pytest.warns(UserWarning, match="not sharing their prefixes"):
            assert task.generate_text(prompts[:1], 2, shared_prefix=True)


def test_bad_requests_are_refused_as_generate_refuses_them(float32_task):
    task, prompts, settings = float32_task
    with pytest.raises(ValueError, match="max_new_tokens must be greater than 0"):
        generate_shared_prefix(task.model, prompts, **{**settings, "max_new_tokens": 0})
    with pytest.raises(ValueError, match="at least one token"):
        generate_shared_prefix(task.model, [prompts[0], []], **settings)


def test_one_new_token_and_repeated_prompts(float32_task):
    task, prompts, settings = float32_task
    settings = {**settings, "max_new_tokens": 1, "min_new_tokens": 0}
    twice = [prompts[0], prompts[3], prompts[0]]
    shared = generate_shared_prefix(task.model, twice, **settings)
    assert shared == [generate_padded(task.model, [p], **settings)[0] for p in twice]
    assert [len(t) for t in shared] == [1, 1, 1]


def test_response_task_modes_generate_the_same_text(float32_task):
    task, prompts, _ = float32_task
    batch = {"requests": [GenerationRequest("d", i, i, p, "") for i, p in enumerate(prompts)]}
    shared = task.infer(batch)
    task.hparams.generation = "generate"
    try:
        assert shared == task.infer(batch)
    finally:
        task.hparams.generation = "shared_prefix"
    assert any(shared)


def test_response_task_rejects_an_unknown_generation_mode():
    with pytest.raises(ValueError, match="generation must be one of shared_prefix, generate"):
        ResponseTask(generation="beam")
