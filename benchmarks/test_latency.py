"""Inference latency on the default tiny 4-bit backbone (the compute dtype `auto` picks for this CPU, as the configs):
the gates that `nox -s benchmarks` compares against the saved baseline.

- one greedy response: a fixed history (a test dialogue's 10th counselor turn) and exactly
  ``RESPONSE_TOKENS`` new tokens;
- score prediction for one test dialogue through the 20 heads (one forward over the prompt) and
  through text (the same prompt, then a whole answer: as many new tokens as the gold answer has).

The text benchmark also checks the heads' target when both ran: at least 20x faster per dialogue.
"""

import pytest
import torch

from kokorozoo.backbone import load_tokenizer
from kokorozoo.data import dialogue_turns, response_split, score_split
from kokorozoo.data.datamodules import ScoreDataModule, collate_scores
from kokorozoo.data.encoding import encode_dialogue, generation_prompt
from kokorozoo.tasks import ResponseTask, ScoreHeadsTask, ScoreTask

RESPONSE_TOKENS = 32
RESPONSE_TURN = 10
SCORE_MAX_LENGTH = 768  # configs/score*.yaml
MEDIANS: dict[str, float] = {}


def loaded(cls, **kwargs):
    task = cls(**kwargs)
    task.configure_model()
    return task.eval()


@pytest.fixture(scope="module")
def response(kokorochat):
    task = loaded(ResponseTask)
    dialogue = response_split(kokorochat, "high", seed=0).test[0]
    encoded = encode_dialogue(task.tokenizer, dialogue_turns(dialogue))
    prompt, _ = generation_prompt(encoded, encoded.targets[RESPONSE_TURN], 2048 - RESPONSE_TOKENS)
    return task, prompt


def test_response_latency(benchmark, response):
    task, prompt = response
    text = benchmark.pedantic(
        task.generate_text,
        args=([prompt], RESPONSE_TOKENS, RESPONSE_TOKENS, True),
        rounds=7,
        iterations=1,
        warmup_rounds=1,
    )  # shared_prefix=True: ResponseTask's default way
    benchmark.extra_info.update({"prompt_tokens": len(prompt), "new_tokens": RESPONSE_TOKENS})
    assert text[0]


@pytest.fixture(scope="module")
def score_batch(kokorochat):
    """One test dialogue's score sample (prompt + gold answer) with the tiny tokenizer."""
    data = ScoreDataModule(max_length=SCORE_MAX_LENGTH)
    tokenizer = load_tokenizer("tiny")
    data.connect(tokenizer)
    sample = data.sample(score_split(kokorochat, seed=0).test[0])
    return sample, collate_scores([sample], tokenizer.pad_token_id)


def heads_scores(task, batch):
    with torch.inference_mode():  # as Lightning runs test and predict steps
        return task.infer(batch)


def test_score_heads_latency(benchmark, score_batch):
    sample, batch = score_batch
    task = loaded(ScoreHeadsTask)
    scores, _ = benchmark.pedantic(heads_scores, args=(task, batch), rounds=15, iterations=1, warmup_rounds=2)
    benchmark.extra_info.update({"prompt_tokens": sample.prompt_length})
    MEDIANS["heads"] = benchmark.stats.stats.median
    assert scores.shape == (1, 20)


def test_score_text_latency(benchmark, score_batch):
    sample, _ = score_batch
    task = loaded(ScoreTask)
    answer_tokens = len(sample.input_ids) - sample.prompt_length
    text = benchmark.pedantic(
        task.generate_text,
        args=([sample.prompt_ids], answer_tokens, answer_tokens),
        rounds=5,
        iterations=1,
        warmup_rounds=1,
    )
    benchmark.extra_info.update({"prompt_tokens": sample.prompt_length, "new_tokens": answer_tokens})
    assert text[0]
    if "heads" in MEDIANS:  # run in the same session: the heads' target
        ratio = benchmark.stats.stats.median / MEDIANS["heads"]
        print(f"\nscore prediction per dialogue: text / heads = {ratio:.1f}x (medians)")
        assert ratio >= 20
