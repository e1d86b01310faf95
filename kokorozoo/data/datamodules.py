"""LightningDataModules: the paper's splits, tokenized, masked and batched.

A datamodule gets its tokenizer from the task (``connect``), because the tokenizer belongs to the
backbone the task loads; ``kokorozoo`` connects them before training starts.

Score prediction's answer format (:func:`format_scores`) and its inverse (:func:`parse_scores`)
live here beside :class:`ScoreDataModule`, which writes the answers the models learn.
"""

from __future__ import annotations

import random
import re
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import torch
from lightning.pytorch import LightningDataModule
from torch.utils.data import DataLoader

from kokorozoo.data.dialogue import Turn, dialogue_turns
from kokorozoo.data.encoding import (
    IGNORE_INDEX,
    dialogue_windows,
    encode_dialogue,
    generation_prompt,
    per_turn_samples,
)
from kokorozoo.data.kokorochat import (
    FEEDBACK_ITEMS,
    ITEM_MAX,
    NUM_ITEMS,
    Dialogue,
    KokoroChat,
    OnError,
    load_kokorochat,
)
from kokorozoo.data.splits import Split, response_split, score_split

DEFAULT_SYSTEM_PROMPT = None


def _progress(items, desc: str):
    from tqdm.auto import tqdm

    return tqdm(items, desc=desc, unit="dialogue", leave=False, mininterval=1.0)


class KokoroChatDataModule(LightningDataModule):
    """What every KokoroChat datamodule shares: where the data is, how bad files are handled, the
    split seed, batch sizes and the tokenizer connection.

    Args:
        root: the KokoroChat folder (default: searched, see ``kokorozoo data stats --help``).
        on_error: ``raise`` on an invalid file, or ``skip`` it with a warning.
        seed: chooses the train/validation split.
        batch_size: training batch size.
        eval_batch_size: validation/test batch size (default: ``batch_size``).
        max_length: tokens per sample; longer dialogues keep their latest history.
        limit_train, limit_val, limit_test: use only the first N dialogues of a part (small runs).
        num_workers: DataLoader workers.
    """

    def __init__(
        self,
        root: str | None = None,
        on_error: OnError = "raise",
        seed: int = 0,
        batch_size: int = 8,
        eval_batch_size: int | None = None,
        max_length: int = 4096,
        limit_train: int | None = None,
        limit_val: int | None = None,
        limit_test: int | None = None,
        num_workers: int = 0,
    ):
        super().__init__()
        self.root, self.on_error, self.seed = root, on_error, seed
        self.batch_size, self.eval_batch_size = batch_size, eval_batch_size or batch_size
        self.max_length, self.num_workers = max_length, num_workers
        self.limits = {"train": limit_train, "val": limit_val, "test": limit_test}
        self.tokenizer = None
        self._data: KokoroChat | None = None
        self._split: Split | None = None

    def connect(self, tokenizer) -> None:
        """Use the backbone's tokenizer (called by the CLI, or by hand before ``trainer.fit``)."""
        self.tokenizer = tokenizer

    @property
    def data(self) -> KokoroChat:
        if self._data is None:
            self._data = load_kokorochat(self.root, on_error=self.on_error)
        return self._data

    def make_split(self, dialogues: Sequence[Dialogue]) -> Split:
        raise NotImplementedError

    @property
    def split(self) -> Split:
        if self._split is None:
            split = self.make_split(self.data.dialogues)
            self._split = Split(*(self._limited(part, name) for part, name in zip(
                (split.train, split.val, split.test), ("train", "val", "test"))))
        return self._split

    def _limited(self, dialogues: list[Dialogue], part: str) -> list[Dialogue]:
        limit = self.limits[part]
        return dialogues if limit is None else dialogues[:limit]

    def _require_tokenizer(self):
        if self.tokenizer is None:
            raise RuntimeError("no tokenizer: call datamodule.connect(task.tokenizer) before use")
        return self.tokenizer

    def _loader(self, dataset, batch_size: int, shuffle: bool, collate) -> DataLoader:
        return DataLoader(
            dataset,
            batch_size=batch_size,
            shuffle=shuffle,
            collate_fn=collate,
            num_workers=self.num_workers,
            generator=torch.Generator().manual_seed(self.seed) if shuffle else None,
        )


def pad_ids(sequences: Sequence[Sequence[int]], value: int, left: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """Pad token lists into a [B, W] tensor and its attention mask; ``left`` for prompts that
    generation (or a last-token head) continues from the right edge."""
    width = max(len(seq) for seq in sequences)
    padded = torch.full((len(sequences), width), value, dtype=torch.long)
    attention = torch.zeros((len(sequences), width), dtype=torch.long)
    for row, seq in enumerate(sequences):
        cols = slice(width - len(seq), width) if left else slice(0, len(seq))
        padded[row, cols] = torch.tensor(seq, dtype=torch.long)
        attention[row, cols] = 1
    return padded, attention


def pad_samples(samples: Sequence[tuple[list[int], list[int]]], pad_id: int) -> dict[str, torch.Tensor]:
    """Right-pad (input_ids, labels) pairs into a batch with an attention mask."""
    input_ids, attention = pad_ids([ids for ids, _ in samples], pad_id)
    labels, _ = pad_ids([labels for _, labels in samples], IGNORE_INDEX)
    return {"input_ids": input_ids, "labels": labels, "attention_mask": attention}


@dataclass  # not frozen: Lightning walks batches and rebuilds dataclasses when moving them to a device
class GenerationRequest:
    """One counselor turn to generate: where it is, its prompt tokens and the reference text."""

    dialogue_id: str
    turn_index: int
    history_turns: int
    prompt_ids: list[int]
    reference: str


class ResponseDataModule(KokoroChatDataModule):
    """Response generation (the paper's Kokoro-Low/High/Full): learn every counselor turn.

    Args:
        subset: ``low`` (< 70), ``high`` (70-98) or ``full`` (<= 98); test is always score >= 99.
        mode: ``dialogue`` trains all counselor turns of a dialogue in one sequence (windowed when
            longer than ``max_length``); ``per_turn`` makes one sample per counselor turn, as the
            paper did. Both put the loss on the same tokens.
        system_prompt: an optional system message before every dialogue.
        test_turns: generate this many test counselor turns, drawn with ``seed`` (all when None).
        max_new_tokens: room kept for the generated turn when prompts are cut to ``max_length``.
    """

    def __init__(
        self,
        subset: Literal["low", "high", "full"] = "high",
        mode: Literal["dialogue", "per_turn"] = "dialogue",
        system_prompt: str | None = DEFAULT_SYSTEM_PROMPT,
        test_turns: int | None = None,
        max_new_tokens: int = 256,
        **kwargs,
    ):
        super().__init__(**kwargs)
        if subset not in ("low", "high", "full"):
            raise ValueError(f"subset must be low, high or full, got {subset!r}")
        if mode not in ("dialogue", "per_turn"):
            raise ValueError(f"mode must be 'dialogue' or 'per_turn', got {mode!r}")
        self.subset, self.mode, self.system_prompt = subset, mode, system_prompt
        self.test_turns, self.max_new_tokens = test_turns, max_new_tokens
        self._samples: dict[str, list] = {}

    def make_split(self, dialogues: Sequence[Dialogue]) -> Split:
        return response_split(dialogues, self.subset, self.seed)

    def encode(self, dialogue: Dialogue):
        return encode_dialogue(self._require_tokenizer(), dialogue_turns(dialogue), self.system_prompt)

    def training_samples(self, dialogues: Sequence[Dialogue], desc: str) -> list[tuple[list[int], list[int]]]:
        make = dialogue_windows if self.mode == "dialogue" else per_turn_samples
        return [s for d in _progress(dialogues, desc) for s in make(self.encode(d), self.max_length)]

    def generation_requests(self, dialogues: Sequence[Dialogue]) -> list[GenerationRequest]:
        """The test counselor turns (a seeded sample of ``test_turns`` when set), in dialogue order."""
        turns = {d.id: dialogue_turns(d) for d in dialogues}
        encoded = {d.id: self.encode(d) for d in _progress(dialogues, "Encoding test")}
        chosen = [(d.id, t) for d in dialogues for t in encoded[d.id].targets]
        if self.test_turns is not None and self.test_turns < len(chosen):
            keep = set(random.Random(self.seed).sample(range(len(chosen)), self.test_turns))
            chosen = [x for i, x in enumerate(chosen) if i in keep]
        budget = self.max_length - self.max_new_tokens
        requests = []
        for dialogue_id, t in chosen:
            prompt, first_turn = generation_prompt(encoded[dialogue_id], t, budget)
            requests.append(GenerationRequest(dialogue_id, t, t - first_turn, prompt, turns[dialogue_id][t].text))
        return requests

    def setup(self, stage: str | None = None) -> None:
        if stage in ("fit", None) and "train" not in self._samples:
            self._samples["train"] = self.training_samples(self.split.train, "Encoding train")
        if stage in ("fit", "validate", None) and "val" not in self._samples:
            self._samples["val"] = self.training_samples(self.split.val, "Encoding val")
        if stage in ("test", "predict", None) and "test" not in self._samples:
            self._samples["test"] = self.generation_requests(self.split.test)

    def _collate_train(self, samples):
        return pad_samples(samples, self._require_tokenizer().pad_token_id)

    @staticmethod
    def _collate_generate(requests):
        """The requests as they are: the task generates from their token lists (padding, when its
        way of generating needs any, is done there)."""
        return {"requests": list(requests)}

    def train_dataloader(self) -> DataLoader:
        return self._loader(self._samples["train"], self.batch_size, True, self._collate_train)

    def val_dataloader(self) -> DataLoader:
        return self._loader(self._samples["val"], self.eval_batch_size, False, self._collate_train)

    def test_dataloader(self) -> DataLoader:
        return self._loader(self._samples["test"], self.eval_batch_size, False, self._collate_generate)

    def predict_dataloader(self) -> DataLoader:
        return self.test_dataloader()


# ---------------------------------------------------------------------------------------------
# Score prediction: the instruction, the one answer format and its parser, the datamodule

#: The request that follows the dialogue (a user message): predict the client's 20 ratings, in the
#: answer format, with each item named as the Japanese review form names it.
SCORE_INSTRUCTION = (
    "以上のカウンセリング対話について、相談者（クライアント）が対話後に付けた評価を予測してください。"
    "次の20項目をそれぞれ0から5の整数で、「D1: 3」のように1行に1項目ずつ、D1からD20の順に答えてください。\n"
    + "\n".join(f"D{i}: {item.jp}" for i, item in enumerate(FEEDBACK_ITEMS, start=1))
)

# "D<item>: <value>" after NFKC (full-width letters, digits and colons become ASCII); the value is
# the whole number that follows, sign and decimals included, so "35", "-1" and "3.5" are seen whole
# and rejected rather than read as 3.
_SCORE_LINE = re.compile(r"(?<![0-9A-Za-z_])D[ \t]*(\d{1,2})[ \t]*[:=][ \t]*([+-]?\d+(?:\.\d+)?)", re.IGNORECASE)
_LEVELS = {str(level): float(level) for level in range(ITEM_MAX + 1)}


def format_scores(scores: Sequence[int]) -> str:
    """The answer a score model is trained to write: one line per item, ``D1: 3`` .. ``D20: 5``."""
    if len(scores) != NUM_ITEMS:
        raise ValueError(f"expected {NUM_ITEMS} scores, got {len(scores)}")
    return "\n".join(f"D{i}: {int(value)}" for i, value in enumerate(scores, start=1))


def parse_scores(text: object) -> torch.Tensor:
    """The 20 scores in a model's answer, float Tensor[20] with NaN for every item it lacks; never
    raises. Rules: NFKC first; each ``D<n>: <value>`` anywhere (text around it is ignored) sets
    item n (1-20; other numbers are ignored); a value must be one digit 0-5 (``6``, ``-1``, ``3.5``
    make the item invalid); an item given twice counts only if both values agree."""
    scores = torch.full((NUM_ITEMS,), float("nan"))
    if not isinstance(text, str):
        return scores
    seen: dict[int, float] = {}
    for number, value in _SCORE_LINE.findall(unicodedata.normalize("NFKC", text)):
        item = int(number) - 1
        if not 0 <= item < NUM_ITEMS:
            continue
        score = _LEVELS.get(value, float("nan"))
        seen[item] = score if item not in seen or seen[item] == score else float("nan")
    for item, score in seen.items():
        scores[item] = score
    return scores


@dataclass
class ScoreSample:
    """One dialogue for score prediction: prompt + answer tokens, labels on the answer only, and
    the gold scores. ``input_ids[:prompt_length]`` is the prompt that generation and heads see."""

    dialogue_id: str
    input_ids: list[int]
    labels: list[int]
    prompt_length: int
    scores: list[int]

    @property
    def prompt_ids(self) -> list[int]:
        return self.input_ids[: self.prompt_length]


def collate_scores(samples: Sequence[ScoreSample], pad_id: int) -> dict:
    """A batch for either score task: ``input_ids``/``labels``/``attention_mask`` right-padded
    (prompt + answer, for the answer's loss), ``prompt`` left-padded (for generation and for the
    heads, which read the last position), the gold ``scores`` [B, 20] and the ``dialogue_ids``."""
    batch = pad_samples([(s.input_ids, s.labels) for s in samples], pad_id)
    prompt_ids, prompt_attention = pad_ids([s.prompt_ids for s in samples], pad_id, left=True)
    batch["prompt"] = {"input_ids": prompt_ids, "attention_mask": prompt_attention}
    batch["scores"] = torch.tensor([s.scores for s in samples], dtype=torch.long)
    batch["dialogue_ids"] = [s.dialogue_id for s in samples]
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
        **kwargs: see :class:`KokoroChatDataModule`.
    """

    def __init__(self, instruction: str = SCORE_INSTRUCTION, system_prompt: str | None = None, **kwargs):
        super().__init__(**kwargs)
        self.instruction, self.system_prompt = instruction, system_prompt
        self._samples: dict[str, list[ScoreSample]] = {}

    def make_split(self, dialogues: Sequence[Dialogue]) -> Split:
        return score_split(dialogues, self.seed)

    def sample(self, dialogue: Dialogue) -> ScoreSample:
        turns = dialogue_turns(dialogue) + [
            Turn("client", self.instruction, 0),  # user: the request
            Turn("counselor", format_scores(dialogue.feedback.items), 0),  # assistant: the answer
        ]
        encoded = encode_dialogue(self._require_tokenizer(), turns, self.system_prompt)
        answer = len(turns) - 1
        request = encoded.prefix + encoded.ends[answer] - encoded.starts[answer - 1]
        if request > self.max_length:
            raise ValueError(
                f"max_length {self.max_length} cannot hold the instruction and the answer ({request} tokens)"
            )
        ids, labels = encoded.clipped(encoded.ends[answer], self.max_length, [answer])
        answer_length = encoded.ends[answer] - encoded.content_starts[answer]
        return ScoreSample(dialogue.id, ids, labels, len(ids) - answer_length, list(dialogue.feedback.items))

    def setup(self, stage: str | None = None) -> None:
        parts = {"fit": ("train", "val"), "validate": ("val",), "test": ("test",), "predict": ("test",)}
        for part in parts.get(stage, ("train", "val", "test")):
            if part not in self._samples:
                dialogues = getattr(self.split, part)
                self._samples[part] = [self.sample(d) for d in _progress(dialogues, f"Encoding {part}")]

    def train_scores(self) -> torch.Tensor:
        """The gold scores of the whole training part of this seed's split (never cut by
        ``limit_train``), LongTensor[N, 20]: what the constant per-item-mode baseline is fit on."""
        train = self.make_split(self.data.dialogues).train
        return torch.tensor([d.feedback.items for d in train], dtype=torch.long)

    def _collate(self, samples: Sequence[ScoreSample]) -> dict:
        return collate_scores(samples, self._require_tokenizer().pad_token_id)

    def train_dataloader(self) -> DataLoader:
        return self._loader(self._samples["train"], self.batch_size, True, self._collate)

    def val_dataloader(self) -> DataLoader:
        return self._loader(self._samples["val"], self.eval_batch_size, False, self._collate)

    def test_dataloader(self) -> DataLoader:
        return self._loader(self._samples["test"], self.eval_batch_size, False, self._collate)

    def predict_dataloader(self) -> DataLoader:
        return self.test_dataloader()
