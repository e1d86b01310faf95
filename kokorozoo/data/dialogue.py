"""Utterance merging: the turns every task reads.

A KokoroChat dialogue is a stream of short chat messages; the paper merges consecutive messages
by the same speaker into one turn (joined with a newline). How turns become chat messages (client
-> ``user``, counselor -> ``assistant``) is :func:`kokorozoo.chat_format.chat_messages`.
"""

from __future__ import annotations

from collections.abc import Sequence

from kokorozoo.records import Dialogue, Role, Turn, Utterance

TURN_SEPARATOR = "\n"


def merge_utterances(utterances: Sequence[Utterance]) -> list[Turn]:
    """Merge consecutive utterances by the same speaker into one turn, joined with a newline."""
    turns: list[Turn] = []
    role, texts = None, []
    for utterance in utterances:
        if utterance.role != role and texts:
            turns.append(Turn(role, TURN_SEPARATOR.join(texts), len(texts)))
            texts = []
        role = utterance.role
        texts.append(utterance.text)
    if texts:
        turns.append(Turn(role, TURN_SEPARATOR.join(texts), len(texts)))
    return turns


def dialogue_turns(dialogue: Dialogue) -> list[Turn]:
    return merge_utterances(dialogue.utterances)


def target_turn_indices(turns: Sequence[Turn], role: Role = "counselor", min_history: int = 1) -> list[int]:
    """Indices of ``role``'s turns that have at least ``min_history`` turns before them: the
    response-generation targets of a model that speaks as ``role`` (the history is ``turns[:i]``)."""
    return [i for i, turn in enumerate(turns) if turn.role == role and i >= min_history]


def counselor_turn_indices(turns: Sequence[Turn], min_history: int = 1) -> list[int]:
    """The counselor model's targets (:func:`target_turn_indices` for the counselor)."""
    return target_turn_indices(turns, "counselor", min_history)
