"""Score prediction (the paper's Table 5): one sample per dialogue, the 20 scores as the answer."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import torch

from kokorozoo.data.batching import batch_samples, pad_ids
from kokorozoo.data.datamodules.base import KokoroChatDataModule, Part, check_split_kind
from kokorozoo.data.dialogue import dialogue_turns
from kokorozoo.data.encoding import encode_dialogue
from kokorozoo.data.score_format import SCORE_INSTRUCTION, format_scores
from kokorozoo.data.splits import SCORE_SPLITS, Split, score_split
from kokorozoo.data.stats import dialogue_statistics
from kokorozoo.errors import UsageError
from kokorozoo.records import Dialogue, Turn


@dataclass
class ScoreSample:
    """One dialogue for score prediction: prompt + answer tokens, labels on the answer only, and
    the gold scores. ``input_ids[:prompt_length]`` is the prompt that generation and heads see."""

    dialogue_id: str
    input_ids: list[int]
    labels: list[int]
    prompt_length: int
    scores: list[int]
    #: The dialogue's :data:`~kokorozoo.data.stats.STATISTICS`, for heads that read them.
    statistics: tuple[float, ...] = ()
    #: The dialogue's merged turns as (role, text): what a model behind an endpoint is sent.
    turns: tuple[tuple[str, str], ...] = ()

    @property
    def prompt_ids(self) -> list[int]:
        return self.input_ids[: self.prompt_length]


def collate_scores(samples: Sequence[ScoreSample], pad_id: int, packing: bool = False) -> dict:
    """A batch for either score task: ``input_ids``/``labels``/``attention_mask`` right-padded, or
    ``input_ids``/``labels``/``position_ids`` packed (prompt + answer, for the answer's loss),
    ``prompt`` left-padded (for generation and for the heads, which read the last position), the
    gold ``scores`` [B, 20], the dialogues' ``statistics`` [B, 8] and the ``dialogue_ids``."""
    batch = batch_samples([(s.input_ids, s.labels) for s in samples], pad_id, packing)
    prompt_ids, prompt_attention = pad_ids([s.prompt_ids for s in samples], pad_id, left=True)
    batch["prompt"] = {"input_ids": prompt_ids, "attention_mask": prompt_attention}
    batch["scores"] = torch.tensor([s.scores for s in samples], dtype=torch.long)
    batch["statistics"] = torch.tensor([s.statistics for s in samples], dtype=torch.float32).reshape(len(samples), -1)
    batch["dialogue_ids"] = [s.dialogue_id for s in samples]
    batch["turns"] = [s.turns for s in samples]
    return batch


class ScoreDataModule(KokoroChatDataModule):
    """Score prediction (the paper's Table 5): the paper's random 8:1:1 split (:func:`score_split`:
    the test tenth fixed, ``seed`` draws train/validation), the whole merged dialogue in.

    A sample is ONE chat-template rendering (:func:`encode_dialogue`) of the dialogue's turns, then
    :data:`SCORE_INSTRUCTION` as a user turn and the gold :func:`format_scores` answer as an
    assistant turn; labels cover only the answer and its end-of-turn token. A dialogue longer than
    ``max_length`` keeps its latest turns (cut at a turn boundary, inside the last turn only when
    not even that fits) and always the instruction and the answer. The prompt is the sample up to
    the answer's text, so generation and the heads see exactly the tokens training saw.

    Args:
        instruction: the request after the dialogue.
        system_prompt: an optional system message before the dialogue.
        packing: the answer-loss view (``input_ids``/``labels``) without padding: a batch's
            samples in one row, attention kept inside each (the same loss on fewer tokens). The
            prompts that generation and the heads read stay left-padded, so ``ScoreHeadsTask``
            trains as without it.
        split_kind: ``random`` (the paper's 8:1:1) or ``client_disjoint`` (grouped by client: no
            test client is seen in training or validation); every report names it.
        **kwargs: see :class:`KokoroChatDataModule`.
    """

    def __init__(
        self,
        instruction: str = SCORE_INSTRUCTION,
        system_prompt: str | None = None,
        packing: bool = False,
        split_kind: Literal["random", "client_disjoint"] = "random",
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.instruction, self.system_prompt, self.packing = instruction, system_prompt, packing
        check_split_kind(split_kind, SCORE_SPLITS)
        self.split_kind = split_kind

    def make_split(self, dialogues: Sequence[Dialogue]) -> Split:
        return score_split(dialogues, self.seed, self.split_kind)

    def prompt_settings(self) -> dict[str, Any]:
        return {**super().prompt_settings(), "instruction": self.instruction, "system_prompt": self.system_prompt}

    def sample(self, dialogue: Dialogue) -> ScoreSample:
        turns = dialogue_turns(dialogue) + [
            Turn("client", self.instruction, 0),  # user: the request
            Turn("counselor", format_scores(dialogue.feedback.items), 0),  # assistant: the answer
        ]
        encoded = encode_dialogue(self.require_tokenizer(), turns, self.system_prompt)
        answer = len(turns) - 1
        request = encoded.prefix + encoded.ends[answer] - encoded.starts[answer - 1]
        if request > self.max_length:
            raise UsageError(
                f"data.init_args.max_length ({self.max_length}) cannot hold the instruction and the answer"
                f" ({request} tokens): raise it to at least {request}"
            )
        ids, labels = encoded.clipped(encoded.ends[answer], self.max_length, [answer])
        answer_length = encoded.ends[answer] - encoded.content_starts[answer]
        return ScoreSample(
            dialogue.id,
            ids,
            labels,
            len(ids) - answer_length,
            list(dialogue.feedback.items),
            dialogue_statistics(dialogue),
            tuple((turn.role, turn.text) for turn in turns[:-2]),
        )

    def training_part(self) -> list[Dialogue]:
        """The whole training part of this seed's split (never cut by ``limit_train``)."""
        return self.whole_split().train

    def train_labels(self) -> torch.Tensor:
        return self.train_scores()

    def train_scores(self) -> torch.Tensor:
        """The training part's gold scores, LongTensor[N, 20]: what the constant per-item-mode
        baseline is fit on."""
        return torch.tensor([d.feedback.items for d in self.training_part()], dtype=torch.long)

    def train_statistics(self) -> torch.Tensor:
        """The training part's :data:`~kokorozoo.data.stats.STATISTICS`, [N, 8]: what heads
        reading them are standardised on."""
        return torch.tensor([dialogue_statistics(d) for d in self.training_part()], dtype=torch.float32)

    def collate(self, samples: Sequence[ScoreSample], part: Part) -> dict:
        return collate_scores(samples, self.require_tokenizer().pad_token_id, self.packing)
