"""Utterance merging and the chat rendering."""

from datetime import datetime

from kokorozoo.chat_format import chat_messages
from kokorozoo.data import Utterance, counselor_turn_indices, merge_utterances

T = datetime(2024, 1, 1)


def u(role, text):
    return Utterance(role, T, text)


def test_merges_consecutive_utterances_of_one_speaker():
    turns = merge_utterances(
        [
            u("counselor", "こんにちは。"),
            u("counselor", "相談員です。"),
            u("client", "よろしく"),
            u("counselor", "はい"),
        ]
    )
    assert [(t.role, t.text, t.n_utterances) for t in turns] == [
        ("counselor", "こんにちは。\n相談員です。", 2),
        ("client", "よろしく", 1),
        ("counselor", "はい", 1),
    ]


def test_merging_real_dialogues_alternates_and_keeps_every_character(kokorochat):
    for d in kokorochat.dialogues[:200]:
        turns = merge_utterances(d.utterances)
        assert all(a.role != b.role for a, b in zip(turns, turns[1:]))
        assert sum(t.n_utterances for t in turns) == len(d.utterances)
        assert "\n".join(t.text for t in turns) == "\n".join(x.text for x in d.utterances)


def test_chat_roles_and_system_prompt():
    turns = merge_utterances([u("counselor", "a"), u("client", "b"), u("counselor", "c")])
    assert chat_messages(turns) == [
        {"role": "assistant", "content": "a"},
        {"role": "user", "content": "b"},
        {"role": "assistant", "content": "c"},
    ]
    assert chat_messages(turns[:1], system_prompt="sys")[0] == {"role": "system", "content": "sys"}
    assert counselor_turn_indices(turns) == [2]
    assert counselor_turn_indices(turns, min_history=0) == [0, 2]


def test_empty_input():
    assert merge_utterances([]) == []
