"""Evaluation speed: every counselor turn of a test dialogue, generated the way `kokorozoo test`
does it (batches of ``EVAL_BATCH`` requests in dialogue order, shared-prefix generation) against a
plain ``generate`` call per turn, and against ``generate`` on the same left-padded batches (the
`generation: generate` option).

Default tiny 4-bit backbone computing in float32, where the greedy tokens must be identical to
``generate`` per turn (in bfloat16 batching itself moves a few near-tied tokens; see
tests/test_generation.py). Target: at least 3x faster than ``generate`` per turn.
"""

import pytest

from kokorozoo.data import dialogue_turns, response_split
from kokorozoo.data.encoding import encode_dialogue, generation_prompt
from kokorozoo.tasks import ResponseTask

NEW_TOKENS, MIN_NEW_TOKENS = 32, 8
MAX_LENGTH = 2048  # configs/response.yaml
EVAL_BATCH = 16  # configs/response.yaml eval_batch_size
RESULTS: dict[str, tuple[float, list[str]]] = {}


@pytest.fixture(scope="module")
def turns(kokorochat):
    task = ResponseTask(compute_dtype="float32")
    task.configure_model()
    task.eval()
    dialogue = response_split(kokorochat, "high", seed=0).test[0]
    encoded = encode_dialogue(task.tokenizer, dialogue_turns(dialogue))
    prompts = [generation_prompt(encoded, t, MAX_LENGTH - NEW_TOKENS)[0] for t in encoded.targets]
    return task, prompts


def generate_all(task, prompts, mode):
    if mode == "generate_per_turn":
        return [task.generate_text([p], NEW_TOKENS, MIN_NEW_TOKENS)[0] for p in prompts]
    batches = [prompts[i : i + EVAL_BATCH] for i in range(0, len(prompts), EVAL_BATCH)]
    shared = mode == "shared_prefix"
    return [text for b in batches for text in task.generate_text(b, NEW_TOKENS, MIN_NEW_TOKENS, shared)]


@pytest.mark.parametrize("mode", ["generate_per_turn", "generate_batched", "shared_prefix"])
def test_generate_every_turn_of_a_dialogue(benchmark, turns, mode):
    task, prompts = turns
    texts = benchmark.pedantic(generate_all, args=(task, prompts, mode), rounds=3, iterations=1)
    benchmark.extra_info.update(
        {"turns": len(prompts), "prompt_tokens": sum(map(len, prompts)), "new_tokens": NEW_TOKENS}
    )
    RESULTS[mode] = benchmark.stats.stats.median, texts
    if mode == "shared_prefix" and "generate_per_turn" in RESULTS:
        baseline, expected = RESULTS["generate_per_turn"]
        assert texts == expected  # identical greedy outputs
        print(f"\nevery turn of a dialogue: generate per turn / shared prefix = {baseline / RESULTS[mode][0]:.1f}x")
        assert baseline / RESULTS[mode][0] >= 3
