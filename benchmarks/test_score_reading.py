"""Reading a text score model: greedy generation of the whole answer and parsing it (the paper's
way) against the constrained reading (one forward pass over the prompt and the answer form, the six
digits' probabilities at the 20 value positions), on a batch of test dialogues as `kokorozoo test`
reads them (configs/score.yaml: tiny 4-bit backbone, prompts of up to 512 tokens, batches of 16).

Greedy is made to write a whole answer (``min_new_tokens`` = the answer's length), what a trained
model writes; an untrained one may stop anywhere. Target: constrained at least 2x faster (measured
2.8x to 6.2x on the 2-core CPU: the tiny model's decode steps are cheap, so the ratio moves with
the machine's state; on an 8B model each saved step costs a full pass over the weights).
"""

import pytest

from kokorozoo.data.batching import unpadded
from kokorozoo.data.datamodules import ScoreDataModule
from kokorozoo.data.score_format import answer_form
from kokorozoo.metrics import item_modes
from kokorozoo.tasks import ScoreTask

MAX_LENGTH, EVAL_BATCH = 512, 16  # configs/score.yaml
RESULTS: dict[str, float] = {}


@pytest.fixture(scope="module")
def reading(kokorochat):
    task = ScoreTask(scoring="constrained")
    task.configure_model()
    task.eval()
    dm = ScoreDataModule(max_length=MAX_LENGTH, limit_test=EVAL_BATCH, eval_batch_size=EVAL_BATCH)
    dm._data = kokorochat
    dm.connect(task.tokenizer, max_new_tokens=128)
    dm.setup("test")
    task._form = answer_form(task.tokenizer, item_modes(dm.train_scores()).tolist())
    return task, next(iter(dm.test_dataloader()))


def read(task, batch, mode):
    if mode == "constrained":
        return task.answer_distribution(batch["prompt"])
    answer = len(task._form.ids) + 1  # and the end of the turn
    prompts = unpadded(batch["prompt"]["input_ids"], batch["prompt"]["attention_mask"])
    return task.generate_text(prompts, answer, min_new_tokens=answer)


@pytest.mark.parametrize("mode", ["greedy", "constrained"])
def test_read_a_batch_of_score_answers(benchmark, reading, mode):
    task, batch = reading
    benchmark.pedantic(read, args=(task, batch, mode), rounds=3, iterations=1)
    benchmark.extra_info.update({"dialogues": EVAL_BATCH, "answer_tokens": len(task._form.ids)})
    RESULTS[mode] = benchmark.stats.stats.median
    if mode == "constrained" and "greedy" in RESULTS:
        ratio = RESULTS["greedy"] / RESULTS[mode]
        print(
            f"\nscore answers of {EVAL_BATCH} dialogues: greedy / constrained = {ratio:.1f}x"
            f" ({RESULTS['greedy'] / EVAL_BATCH:.3f} s and {RESULTS[mode] / EVAL_BATCH:.3f} s a dialogue)"
        )
        assert ratio >= 2
