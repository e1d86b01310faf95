"""The score-prediction samples: the paper's split, one rendering, labels on the answer only, the
latest history kept, and prompts that do not depend on their batch."""

import pytest
import torch

from kokorozoo.data import FEEDBACK_ITEMS, dialogue_turns, score_split
from kokorozoo.data.datamodules import ScoreDataModule
from kokorozoo.data.encoding import IGNORE_INDEX
from kokorozoo.data.score_format import SCORE_INSTRUCTION, format_scores

ASSISTANT_HEADER = "<|start_header_id|>assistant<|end_header_id|>\n\n"


def datamodule(kokorochat, tokenizer, **kwargs) -> ScoreDataModule:
    dm = ScoreDataModule(**kwargs)
    dm._data = kokorochat  # the session's loaded copy: no second read of 6,589 files
    dm.connect(tokenizer)
    return dm


def test_split_is_the_papers_8_1_1_with_a_fixed_test_part(kokorochat, tiny_tokenizer):
    splits = [datamodule(kokorochat, tiny_tokenizer, seed=seed).split for seed in (0, 1)]
    assert [s.sizes() for s in splits] == [{"train": 5271, "val": 659, "test": 659}] * 2
    assert [d.id for d in splits[0].test] == [d.id for d in splits[1].test]
    assert {d.id for d in splits[0].val} != {d.id for d in splits[1].val}
    assert [d.id for d in splits[0].train] == [d.id for d in score_split(kokorochat.dialogues, 0).train]


def test_instruction_names_the_20_items_in_japanese():
    assert all(f"D{i}: {item.jp}" in SCORE_INSTRUCTION for i, item in enumerate(FEEDBACK_ITEMS, start=1))


def test_labels_cover_exactly_the_answer_and_its_end_of_turn(kokorochat, tiny_tokenizer):
    dm = datamodule(kokorochat, tiny_tokenizer, max_length=4096)
    dialogue = kokorochat.by_id()["10"]
    sample = dm.sample(dialogue)
    labelled = [t for t, label in zip(sample.input_ids, sample.labels) if label != IGNORE_INDEX]
    assert tiny_tokenizer.decode(labelled) == format_scores(dialogue.feedback.items) + "<|eot_id|>"
    assert sample.labels[: sample.prompt_length] == [IGNORE_INDEX] * sample.prompt_length
    assert sample.input_ids[sample.prompt_length :] == labelled
    assert sample.scores == list(dialogue.feedback.items)
    prompt = tiny_tokenizer.decode(sample.prompt_ids)
    turns = dialogue_turns(dialogue)
    assert prompt.endswith(SCORE_INSTRUCTION + "<|eot_id|>" + ASSISTANT_HEADER)
    assert turns[0].text in prompt and turns[-1].text in prompt  # it fits: the whole dialogue


def test_a_long_dialogue_keeps_its_latest_turns_and_the_instruction(kokorochat, tiny_tokenizer):
    dm = datamodule(kokorochat, tiny_tokenizer, max_length=768)
    dialogue = kokorochat.by_id()["10"]
    sample = dm.sample(dialogue)
    assert len(sample.input_ids) <= 768
    text = tiny_tokenizer.decode(sample.input_ids)
    turns = dialogue_turns(dialogue)
    assert text.startswith("<|begin_of_text|><|start_header_id|>")  # cut at a turn boundary
    assert turns[-1].text in text and turns[0].text not in text
    answer = format_scores(dialogue.feedback.items) + "<|eot_id|>"
    assert text.endswith(SCORE_INSTRUCTION + "<|eot_id|>" + ASSISTANT_HEADER + answer)


def test_max_length_too_short_for_the_request_is_an_error(kokorochat, tiny_tokenizer):
    with pytest.raises(ValueError, match="cannot hold the instruction and the answer"):
        datamodule(kokorochat, tiny_tokenizer, max_length=200).sample(kokorochat.dialogues[0])


def test_batches_hold_right_padded_sequences_and_left_padded_prompts(kokorochat, tiny_tokenizer):
    dm = datamodule(kokorochat, tiny_tokenizer, max_length=4096, limit_test=3, eval_batch_size=3)
    dm.setup("test")
    samples = dm.samples("test")
    batch = next(iter(dm.test_dataloader()))
    assert batch["dialogue_ids"] == [s.dialogue_id for s in samples]
    assert batch["scores"].shape == (3, 20) and batch["scores"].dtype == torch.long
    assert batch["input_ids"].shape[1] == max(len(s.input_ids) for s in samples)
    prompt = batch["prompt"]
    assert set(prompt) == {"input_ids", "attention_mask"}
    assert prompt["attention_mask"][:, -1].all()  # every prompt ends at the right edge
    for row, s in enumerate(samples):
        kept = prompt["input_ids"][row][prompt["attention_mask"][row].bool()].tolist()
        assert kept == s.prompt_ids


def test_baseline_is_fit_on_the_whole_training_part(kokorochat, tiny_tokenizer):
    dm = datamodule(kokorochat, tiny_tokenizer, seed=3, limit_train=4)
    scores = dm.train_scores()
    assert len(dm.split.train) == 4 and scores.shape == (5271, 20)
    expected = [d.feedback.items for d in score_split(kokorochat.dialogues, 3).train]
    assert scores.tolist() == [list(items) for items in expected]
