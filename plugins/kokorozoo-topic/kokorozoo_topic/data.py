"""The topic labels and :class:`TopicDataModule`: whole dialogues, rendered and split by the core
data layer, each labelled with its main topic.

Everything about the data comes from :mod:`kokorozoo.api`: loading, validation, setup and loaders
(:class:`~kokorozoo.api.KokoroChatDataModule`), the score-prediction split (8:1:1, test part
fixed, train/val by ``seed``), utterance merging and the one chat rendering (``encode_dialogue``).
This module only adds the label and how a long dialogue is cut.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import torch

from kokorozoo.api import (
    Dialogue,
    EncodedDialogue,
    KokoroChatDataModule,
    Part,
    Split,
    dialogue_turns,
    encode_dialogue,
    pad_ids,
    score_split,
)

#: The 11 main topics (``topic.main_en``) in class-index order (alphabetical); a checkpoint's head
#: rows follow this order, so never reorder it.
TOPICS: tuple[str, ...] = (
    "Career and Educational Issues",
    "Family Issues (Non-Spousal)",
    "Family Issues (Spouse)",
    "Financial Issues",
    "Interpersonal Issues",
    "Mental Health Issues",
    "Others",
    "Physical Health Issues",
    "Romantic Issues",
    "School Issues",
    "Workplace Issues",
)
#: The Japanese names (``topic.main_jp``), in the same order.
TOPICS_JP: tuple[str, ...] = (
    "進路・キャリア問題",
    "家庭内問題（夫婦以外）",
    "家庭内問題（夫婦）",
    "経済的問題",
    "人間関係",
    "心理的問題",
    "その他",
    "身体的健康問題",
    "恋愛問題",
    "学校問題",
    "職場問題",
)
NUM_TOPICS = len(TOPICS)
_INDEX = {name: i for i, name in enumerate(TOPICS)}

Keep = Literal["start", "end"]


def topic_index(dialogue: Dialogue) -> int:
    """The class index of a dialogue's main topic."""
    try:
        return _INDEX[dialogue.topic.main_en]
    except KeyError:
        raise ValueError(
            f"dialogue {dialogue.id}: topic.main_en {dialogue.topic.main_en!r} is not one of the {NUM_TOPICS} topics"
        ) from None


def cut_dialogue(encoded: EncodedDialogue, max_length: int, keep: Keep = "start") -> list[int]:
    """At most ``max_length`` tokens of a rendered dialogue.

    ``start`` keeps the opening turns (where the client states the concern), cut after the last
    whole turn that fits; ``end`` keeps the system prefix and the latest turns that fit. Either
    way a sample that fits is the whole rendering, unchanged.
    """
    if len(encoded.ids) <= max_length:
        return list(encoded.ids)
    if keep == "end":
        return encoded.clipped(len(encoded.ids), max_length, [])[0]
    ends = [end for end in encoded.ends if end <= max_length]
    return list(encoded.ids[: ends[-1] if ends else max_length])


@dataclass
class TopicSample:
    dialogue_id: str
    input_ids: list[int]
    label: int


def collate_topics(samples: Sequence[TopicSample], pad_id: int) -> dict:
    """Right-padded ``input_ids`` and ``attention_mask``, ``labels`` and the ``dialogue_ids``."""
    input_ids, attention = pad_ids([s.input_ids for s in samples], pad_id)
    return {
        "input_ids": input_ids,
        "attention_mask": attention,
        "labels": torch.tensor([s.label for s in samples], dtype=torch.long),
        "dialogue_ids": [s.dialogue_id for s in samples],
    }


class TopicDataModule(KokoroChatDataModule):
    """Whole dialogues labelled with their main topic, on the score-prediction split (8:1:1 of all
    6,589 dialogues; the test tenth is fixed, ``seed`` redraws train/validation).

    Args:
        keep: which part of a dialogue longer than ``max_length`` is kept: ``start`` (the opening
            turns, where the concern is stated; default) or ``end`` (the latest turns).
        system_prompt: an optional system message before every dialogue.
        **kwargs: ``root``, ``seed``, batch sizes, ``max_length``, limits: see
            :class:`kokorozoo.api.KokoroChatDataModule`. ``predict`` uses the test part.
    """

    def __init__(self, keep: Keep = "start", system_prompt: str | None = None, **kwargs):
        super().__init__(**kwargs)
        if keep not in ("start", "end"):
            raise ValueError(f"keep must be 'start' or 'end', got {keep!r}")
        self.keep, self.system_prompt = keep, system_prompt

    def make_split(self, dialogues: Sequence[Dialogue]) -> Split:
        return score_split(dialogues, self.seed)

    def sample(self, dialogue: Dialogue) -> TopicSample:
        encoded = encode_dialogue(self.require_tokenizer(), dialogue_turns(dialogue), self.system_prompt)
        return TopicSample(dialogue.id, cut_dialogue(encoded, self.max_length, self.keep), topic_index(dialogue))

    def train_labels(self) -> torch.Tensor:
        """The training part's topics: the constant baseline answers the most frequent one."""
        return torch.tensor([topic_index(d) for d in self.split.train], dtype=torch.long)

    def collate(self, samples: Sequence[TopicSample], part: Part) -> dict:
        return collate_topics(samples, self.require_tokenizer().pad_token_id)
