"""Label masks, windows and prompts, checked turn by turn by decoding the trained tokens."""

import pytest

from kokorozoo.chat_format import chat_messages
from kokorozoo.data import dialogue_turns
from kokorozoo.data.encoding import (
    IGNORE_INDEX,
    dialogue_windows,
    encode_dialogue,
    generation_prompt,
    per_turn_samples,
)

EOT = "<|eot_id|>"


def labelled_runs(tokenizer, labels):
    """Decode each contiguous run of labelled tokens."""
    runs, current = [], []
    for label in labels + [IGNORE_INDEX]:
        if label != IGNORE_INDEX:
            current.append(label)
        elif current:
            runs.append(tokenizer.decode(current, skip_special_tokens=False))
            current = []
    return runs


@pytest.fixture(scope="module")
def dialogue(kokorochat):
    return kokorochat.by_id()["10"]


@pytest.fixture(scope="module")
def encoded(tiny_tokenizer, dialogue):
    return encode_dialogue(tiny_tokenizer, dialogue_turns(dialogue))


def test_only_counselor_text_and_its_end_of_turn_are_trained(tiny_tokenizer, dialogue, encoded):
    turns = dialogue_turns(dialogue)
    [(ids, labels)] = dialogue_windows(encoded, 4096)
    assert ids == encoded.ids[: encoded.ends[encoded.targets[-1]]]  # up to the last counselor turn
    runs = labelled_runs(tiny_tokenizer, labels)
    expected = [turns[t].text + EOT for t in range(1, len(turns)) if turns[t].role == "counselor"]
    assert runs == expected  # turn by turn: the counselor's words and <|eot_id|>, nothing else
    assert turns[0].role == "counselor" and turns[0].text + EOT not in runs[:1]  # no history: no loss
    for t, turn in enumerate(turns):
        span = labels[encoded.starts[t] : encoded.ends[t]]
        if turn.role == "client" or t == 0:
            assert set(span) <= {IGNORE_INDEX}, f"turn {t} ({turn.role}) has trained tokens"


def test_system_prompt_is_context_not_target(tiny_tokenizer, dialogue):
    encoded = encode_dialogue(tiny_tokenizer, dialogue_turns(dialogue), system_prompt="あなたはカウンセラーです。")
    [(ids, labels)] = dialogue_windows(encoded, 4096)
    assert "あなたはカウンセラーです。" in tiny_tokenizer.decode(ids[: encoded.prefix])
    assert all("カウンセラーです" not in r for r in labelled_runs(tiny_tokenizer, labels))


@pytest.mark.parametrize("max_length", [256, 512, 1024])
def test_windows_cover_each_target_once_with_recent_history(tiny_tokenizer, encoded, max_length):
    windows = dialogue_windows(encoded, max_length)
    assert len(windows) > 1
    trained = []
    header = tiny_tokenizer.convert_tokens_to_ids("<|start_header_id|>")
    for ids, labels in windows:
        assert len(ids) <= max_length
        assert ids[: encoded.prefix] == encoded.ids[: encoded.prefix]  # every window starts like the dialogue
        assert ids[encoded.prefix] == header  # ... and then at a turn boundary
        trained += labelled_runs(tiny_tokenizer, labels)
    full = labelled_runs(tiny_tokenizer, dialogue_windows(encoded, 4096)[0][1])
    assert trained == full
    tokens = sum(len(ids) for ids, _ in windows)
    assert tokens < 2.5 * len(encoded.ids)


def test_per_turn_samples_train_the_same_tokens(tiny_tokenizer, encoded):
    samples = per_turn_samples(encoded, 4096)
    assert len(samples) == len(encoded.targets)
    per_turn = [r for _, labels in samples for r in labelled_runs(tiny_tokenizer, labels)]
    assert per_turn == labelled_runs(tiny_tokenizer, dialogue_windows(encoded, 4096)[0][1])
    for (ids, _labels), t in zip(samples, encoded.targets):
        assert ids == encoded.ids[: encoded.ends[t]]  # the whole history, nothing after the turn


def test_generation_prompt_is_the_chat_template_prompt(tiny_tokenizer, dialogue, encoded):
    turns = dialogue_turns(dialogue)
    for t in encoded.targets[:5]:
        prompt, first = generation_prompt(encoded, t, 4096)
        expected = tiny_tokenizer.apply_chat_template(
            chat_messages(turns[:t]), add_generation_prompt=True, tokenize=True, return_dict=True
        )["input_ids"]
        assert prompt == list(expected) and first == 0


def test_generation_prompt_keeps_the_latest_history(encoded):
    t = encoded.targets[-1]
    prompt, first = generation_prompt(encoded, t, 300)
    assert len(prompt) <= 300 and first > 0
    assert prompt[-(encoded.content_starts[t] - encoded.starts[first]) :] == encoded.ids[
        encoded.starts[first] : encoded.content_starts[t]
    ]
