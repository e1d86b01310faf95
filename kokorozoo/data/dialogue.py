"""Utterance merging and the one chat rendering shared by training, validation and generation.

A KokoroChat dialogue is a stream of short chat messages; the paper merges consecutive messages
by the same speaker into one turn (joined with a newline) and maps the client to ``user`` and the
counselor to ``assistant``. Every task renders a dialogue through :func:`chat_messages`, so the
text a model is trained on is the text it is evaluated and prompted with.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

from kokorozoo.data.kokorochat import Dialogue, Role, Utterance

CHAT_ROLE: dict[str, str] = {"client": "user", "counselor": "assistant"}
TURN_SEPARATOR = "\n"


class Turn(NamedTuple):
    """Consecutive utterances of one speaker, merged."""

    role: Role
    text: str
    n_utterances: int


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


def chat_messages(turns: Sequence[Turn], system_prompt: str | None = None) -> list[dict[str, str]]:
    """The chat-template messages for ``turns``: client -> ``user``, counselor -> ``assistant``.

    This is the only place turns become messages; pass a prefix ``turns[:t]`` for a generation
    prompt and the whole list for training.
    """
    messages = [{"role": "system", "content": system_prompt}] if system_prompt else []
    messages += [{"role": CHAT_ROLE[turn.role], "content": turn.text} for turn in turns]
    return messages


def counselor_turn_indices(turns: Sequence[Turn], min_history: int = 1) -> list[int]:
    """Indices of the counselor turns that have at least ``min_history`` turns before them: the
    response-generation targets (the history is ``turns[:i]``)."""
    return [i for i, turn in enumerate(turns) if turn.role == "counselor" and i >= min_history]
