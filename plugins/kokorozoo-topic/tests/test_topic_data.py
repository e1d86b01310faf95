"""The topic labels and TopicDataModule on the real data: the core split and chat rendering, the
label of every dialogue, how a long dialogue is cut, batches."""

from collections import Counter

import pytest
import torch

from kokorozoo.data import dialogue_turns, score_split
from kokorozoo.data.encoding import encode_dialogue
from kokorozoo_topic import NUM_TOPICS, TOPICS, TOPICS_JP, TopicDataModule, topic_index
from kokorozoo_topic.data import cut_dialogue


def test_the_eleven_topics_are_the_datas(kokorochat):
    assert NUM_TOPICS == 11 and list(TOPICS) == sorted(TOPICS)
    assert {d.topic.main_en for d in kokorochat} == set(TOPICS)
    assert {(d.topic.main_en, d.topic.main_jp) for d in kokorochat} == set(zip(TOPICS, TOPICS_JP))
    counts = Counter(TOPICS[topic_index(d)] for d in kokorochat)
    assert counts["Family Issues (Non-Spousal)"] == 1330 and counts["Others"] == 7


def test_unknown_topic_names_the_dialogue(kokorochat):
    import dataclasses

    d = kokorochat.dialogues[0]
    odd = dataclasses.replace(d, topic=dataclasses.replace(d.topic, main_en="Weather"))
    with pytest.raises(ValueError, match=f"dialogue {d.id}: topic.main_en 'Weather'"):
        topic_index(odd)


@pytest.fixture(scope="module")
def datamodule(kokorochat, tiny_tokenizer):
    dm = TopicDataModule(max_length=256, limit_train=6, limit_val=3, limit_test=3, batch_size=4, seed=1)
    dm._data = kokorochat  # the session's copy, instead of loading again
    dm.connect(tiny_tokenizer)
    dm.setup("fit")
    dm.setup("test")
    return dm


def test_split_is_the_score_split(datamodule, kokorochat):
    full = score_split(kokorochat.dialogues, seed=1)
    assert [d.id for d in datamodule.split.train] == [d.id for d in full.train[:6]]
    assert [d.id for d in datamodule.split.test] == [d.id for d in full.test[:3]]
    assert [s.dialogue_id for s in datamodule.samples("val")] == [d.id for d in full.val[:3]]


def test_samples_are_the_core_rendering_cut_after_a_whole_turn(datamodule, tiny_tokenizer):
    for dialogue, sample in zip(datamodule.split.train, datamodule.samples("train")):
        encoded = encode_dialogue(tiny_tokenizer, dialogue_turns(dialogue))
        assert len(encoded.ids) > 256  # real dialogues are long: all of these are cut
        assert sample.input_ids == encoded.ids[: len(sample.input_ids)]  # the opening, unchanged
        assert len(sample.input_ids) <= 256 and len(sample.input_ids) in encoded.ends  # at a turn's end
        assert sample.input_ids[-1] == tiny_tokenizer.convert_tokens_to_ids("<|eot_id|>")
        assert sample.label == TOPICS.index(dialogue.topic.main_en)


def test_cut_keeps_the_end_or_everything(kokorochat, tiny_tokenizer):
    encoded = encode_dialogue(tiny_tokenizer, dialogue_turns(kokorochat.dialogues[0]))
    end = cut_dialogue(encoded, 256, "end")
    assert len(end) <= 256 and end[-1] == encoded.ids[-1]
    assert end[: encoded.prefix] == encoded.ids[: encoded.prefix]  # the begin-of-text prefix stays
    assert cut_dialogue(encoded, len(encoded.ids), "start") == encoded.ids


def test_batches_are_right_padded_with_labels(datamodule, tiny_tokenizer):
    batch = next(iter(datamodule.test_dataloader()))
    samples = datamodule.samples("test")
    assert batch["dialogue_ids"] == [s.dialogue_id for s in samples]
    assert batch["labels"].tolist() == [s.label for s in samples]
    for row, s in enumerate(samples):
        n = len(s.input_ids)
        assert batch["attention_mask"][row].tolist() == [1] * n + [0] * (batch["input_ids"].shape[1] - n)
        assert batch["input_ids"][row, :n].tolist() == s.input_ids
        assert torch.all(batch["input_ids"][row, n:] == tiny_tokenizer.pad_token_id)


def test_train_labels_are_the_training_parts_topics(datamodule):
    assert datamodule.train_labels().tolist() == [topic_index(d) for d in datamodule.split.train]
