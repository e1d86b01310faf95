"""LightningDataModules: the paper's splits, tokenized, masked and batched.

:class:`KokoroChatDataModule` owns what every datamodule shares: the data and its split, ``setup``
(which parts a stage encodes, each once), the four dataloaders, and the connection to the task
(``connect``: the tokenizer belongs to the backbone the task loads, and the room a generating task
needs is the task's setting). A datamodule gives its split (:meth:`~KokoroChatDataModule.make_split`),
its samples (:meth:`~KokoroChatDataModule.sample` per dialogue, or
:meth:`~KokoroChatDataModule.encode_part` for a whole part) and its batches
(:meth:`~KokoroChatDataModule.collate`).
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass
from functools import partial
from typing import Any, Literal

import torch
from lightning.pytorch import LightningDataModule
from torch.utils.data import DataLoader

from kokorozoo.data.batching import batch_samples, pad_ids
from kokorozoo.data.dialogue import Turn, dialogue_turns
from kokorozoo.data.encoding import dialogue_windows, encode_dialogue, generation_prompt, per_turn_samples
from kokorozoo.data.kokorochat import DataError, Dialogue, KokoroChat, OnError, Role, load_kokorochat
from kokorozoo.data.sampling import EpochSampler, ResumableBatchSampler
from kokorozoo.data.score_format import SCORE_INSTRUCTION, format_scores
from kokorozoo.data.splits import RESPONSE_SPLITS, SCORE_SPLITS, Split, response_split, score_split
from kokorozoo.data.stats import dialogue_statistics
from kokorozoo.errors import UsageError
from kokorozoo.progress import progress

Part = Literal["train", "val", "test"]
#: The parts each Lightning stage reads (``predict`` reads the test part).
STAGE_PARTS: dict[str, tuple[Part, ...]] = {
    "fit": ("train", "val"),
    "validate": ("val",),
    "test": ("test",),
    "predict": ("test",),
}


class KokoroChatDataModule(LightningDataModule):
    """What every KokoroChat datamodule shares: where the data is, how bad files are handled, the
    split seed, batch sizes, the task connection, ``setup`` and the dataloaders.

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

    #: Which kind of split :meth:`make_split` draws (named in every report), and the language of
    #: the dialogues' text.
    split_kind: str = "random"
    language: str = "ja"

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
        self.max_new_tokens = 0
        self._data: KokoroChat | None = None
        self._split: Split | None = None
        self._samples: dict[str, list] = {}
        self._resume: tuple[int, int] | None = None

    # -- what a datamodule gives ----------------------------------------------------------------

    def make_split(self, dialogues: Sequence[Dialogue]) -> Split:
        """The train/validation/test split of all dialogues (before ``limit_*``)."""
        raise NotImplementedError

    def sample(self, dialogue: Dialogue) -> Any:
        """One dialogue's sample (the default :meth:`encode_part` makes one per dialogue)."""
        raise NotImplementedError

    def encode_part(self, part: Part, dialogues: Sequence[Dialogue]) -> list:
        """The samples of one part: one :meth:`sample` per dialogue unless overridden."""
        return [self.sample(d) for d in progress(dialogues, f"Encoding {part}", unit="dialogue")]

    def collate(self, samples: Sequence[Any], part: Part) -> dict:
        """A batch of ``part``'s samples."""
        raise NotImplementedError

    # -- the connection to the task ---------------------------------------------------------------

    def connect(self, tokenizer, max_new_tokens: int = 0) -> None:
        """Use the backbone's tokenizer, and keep ``max_new_tokens`` of room after every generation
        prompt (called by the CLI through ``Task.connect_datamodule``, or by hand before use)."""
        self.tokenizer, self.max_new_tokens = tokenizer, max_new_tokens

    def prompt_settings(self) -> dict[str, Any]:
        """The settings that shape a model's inputs (recorded by the task when connected, carried
        by its checkpoints and exports): what ``kokorozoo chat`` and ``simulate`` need to prompt
        the model as it was trained, with no config."""
        return {"max_length": self.max_length}

    def train_labels(self) -> torch.Tensor | None:
        """The training part's labels, [N] or [N, items]: what the constant baseline (each label's
        most frequent value) is fit on. None: this data has no such baseline."""
        return None

    def whole_split(self) -> Split:
        """The split of all dialogues, no ``limit_*`` applied: what the baselines are fit on."""
        return self.make_split(self.data.dialogues)

    def require_tokenizer(self):
        if self.tokenizer is None:
            raise RuntimeError("no tokenizer: call datamodule.connect(task.tokenizer) before use")
        return self.tokenizer

    # -- data, split, setup and loaders -----------------------------------------------------------

    @property
    def data(self) -> KokoroChat:
        if self._data is None:
            data = load_kokorochat(self.root, on_error=self.on_error)
            if not data.dialogues:
                skipped = f"no valid dialogue left ({len(data.skipped)} invalid files skipped)"
                raise DataError(str(data.root), "<folder>", skipped)
            self._data = data
        return self._data

    @property
    def split(self) -> Split:
        """The split with ``limit_*`` applied (the first N dialogues of each part)."""
        if self._split is None:
            split = self.make_split(self.data.dialogues)
            self._split = Split(*(self._limited(getattr(split, part), part) for part in ("train", "val", "test")))
        return self._split

    def _limited(self, dialogues: list[Dialogue], part: str) -> list[Dialogue]:
        limit = self.limits[part]
        return dialogues if limit is None else dialogues[:limit]

    def samples(self, part: Part) -> list:
        """The encoded samples of ``part``, made once."""
        if part not in self._samples:
            self._samples[part] = self.encode_part(part, getattr(self.split, part))
        return self._samples[part]

    def setup(self, stage: str | None = None) -> None:
        for part in STAGE_PARTS.get(stage, ("train", "val", "test")):
            self.samples(part)

    def _loader(self, part: Part) -> DataLoader:
        """A loader whose order depends on (seed, epoch, process) only, starting where a resumed
        run's checkpoint left its epoch (see :mod:`kokorozoo.data.sampling`)."""
        train = part == "train"
        rank, world = self._process()
        sampler = EpochSampler(len(self.samples(part)), shuffle=train, seed=self.seed, rank=rank, world=world)
        batches = ResumableBatchSampler(sampler, self.batch_size if train else self.eval_batch_size)
        if train and self._resume is not None:
            epoch, trained = self._resume
            self._resume = None
            # Lightning builds the first iterator before it sets the epoch: start it at the right one
            sampler.set_epoch(epoch + 1 if trained >= len(batches) else epoch)
            batches.skip = trained if trained < len(batches) else 0
        return DataLoader(
            self.samples(part),
            batch_sampler=batches,
            collate_fn=partial(self.collate, part=part),
            num_workers=self.num_workers,
            # its own generator: starting an iterator would otherwise draw from the global RNG that
            # dropout uses, and a resumed run starts its iterators at other moments
            generator=torch.Generator().manual_seed(self.seed),
        )

    def state_dict(self) -> dict[str, int]:
        """Where training is, saved in every checkpoint: the epoch being drawn and how many of its
        batches were trained (all of them in a checkpoint taken at an epoch's end); a resumed run
        starts there."""
        loader = self.trainer.train_dataloader if self.trainer is not None else None
        sampler = getattr(getattr(loader, "batch_sampler", None), "sampler", None)
        if not isinstance(sampler, EpochSampler):
            return {}
        return {"epoch": sampler.epoch, "batches": self.trainer.fit_loop.epoch_loop.batch_progress.current.processed}

    def load_state_dict(self, state: dict[str, int]) -> None:
        if state:
            self._resume = (int(state["epoch"]), int(state["batches"]))

    def _process(self) -> tuple[int, int]:
        """This process's rank and the number of processes (kokorozoo shards the data itself)."""
        trainer = self.trainer
        if trainer is None or trainer.world_size == 1:
            return 0, 1
        if trainer._accelerator_connector.use_distributed_sampler:
            raise ValueError(
                "kokorozoo's datamodules shard the data across processes themselves:"
                " set trainer.use_distributed_sampler to false (the kokorozoo CLI's default)"
            )
        return trainer.global_rank, trainer.world_size

    def train_dataloader(self) -> DataLoader:
        return self._loader("train")

    def val_dataloader(self) -> DataLoader:
        return self._loader("val")

    def test_dataloader(self) -> DataLoader:
        return self._loader("test")

    def predict_dataloader(self) -> DataLoader:
        return self._loader("test")


# ---------------------------------------------------------------------------------------------
# Response generation


@dataclass  # not frozen: Lightning walks batches and rebuilds dataclasses when moving them to a device
class GenerationRequest:
    """One target turn to generate: where it is, its prompt tokens and the reference text."""

    dialogue_id: str
    turn_index: int
    history_turns: int
    prompt_ids: list[int]
    reference: str


class ResponseDataModule(KokoroChatDataModule):
    """Response generation (the paper's Kokoro-Low/High/Full): learn every counselor turn, or
    every client turn for a client model.

    Args:
        subset: ``low`` (< 70), ``high`` (70-98) or ``full`` (<= 98); test is always score >= 99.
        role: whose turns are learnt and generated: ``counselor`` (the paper's model) or
            ``client`` (a simulated client). The same data, splits and chat rendering (the client
            stays the ``user``); only the targets change.
        mode: ``dialogue`` trains all target turns of a dialogue in one sequence (windowed when
            longer than ``max_length``); ``per_turn`` makes one sample per target turn, as the
            paper did. Both put the loss on the same tokens.
        system_prompt: an optional system message before every dialogue.
        test_turns: generate this many test target turns, drawn with ``seed`` (all when None).
        packing: training and validation batches without padding: a batch's samples in one row,
            attention kept inside each (:func:`~kokorozoo.data.batching.pack_samples`); the same
            loss as padded batches on fewer tokens.
        split_kind: ``random`` (the paper's) or ``counselor_disjoint`` (the same test dialogues;
            every dialogue of a test counselor is left out of train and validation, so the model
            is tested on counselors it has never read); every report names it.

    Generation prompts are cut to ``max_length`` minus the task's ``max_new_tokens`` (given by
    ``connect``), so a generated turn always has room.
    """

    def __init__(
        self,
        subset: Literal["low", "high", "full"] = "high",
        role: Role = "counselor",
        mode: Literal["dialogue", "per_turn"] = "dialogue",
        system_prompt: str | None = None,
        test_turns: int | None = None,
        packing: bool = False,
        split_kind: Literal["random", "counselor_disjoint"] = "random",
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.packing = packing
        _check_split_kind(split_kind, RESPONSE_SPLITS)
        self.split_kind = split_kind
        if subset not in ("low", "high", "full"):
            raise ValueError(f"subset must be low, high or full, got {subset!r}")
        if mode not in ("dialogue", "per_turn"):
            raise ValueError(f"mode must be 'dialogue' or 'per_turn', got {mode!r}")
        if role not in ("counselor", "client"):
            raise ValueError(f"role must be 'counselor' or 'client', got {role!r}")
        self.subset, self.mode, self.system_prompt, self.test_turns = subset, mode, system_prompt, test_turns
        self.role = role

    def make_split(self, dialogues: Sequence[Dialogue]) -> Split:
        return response_split(dialogues, self.subset, self.seed, self.split_kind)

    def prompt_settings(self) -> dict[str, Any]:
        return {**super().prompt_settings(), "role": self.role, "system_prompt": self.system_prompt}

    def encode(self, dialogue: Dialogue):
        return encode_dialogue(self.require_tokenizer(), dialogue_turns(dialogue), self.system_prompt, self.role)

    def encode_part(self, part: Part, dialogues: Sequence[Dialogue]) -> list:
        if part == "test":
            return self.generation_requests(dialogues)
        return self.training_samples(dialogues, f"Encoding {part}")

    def training_samples(self, dialogues: Sequence[Dialogue], desc: str) -> list[tuple[list[int], list[int]]]:
        make = dialogue_windows if self.mode == "dialogue" else per_turn_samples
        return [s for d in progress(dialogues, desc, unit="dialogue") for s in make(self.encode(d), self.max_length)]

    def generation_requests(self, dialogues: Sequence[Dialogue]) -> list[GenerationRequest]:
        """The test target turns (a seeded sample of ``test_turns`` when set), in dialogue order."""
        turns = {d.id: dialogue_turns(d) for d in dialogues}
        encoded = {d.id: self.encode(d) for d in progress(dialogues, "Encoding test", unit="dialogue")}
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

    def collate(self, samples: Sequence, part: Part) -> dict:
        """Training and validation: right-padded (or packed) token batches. Test: the requests as
        they are (the task generates from their token lists; padding, when its way of generating
        needs any, is done there)."""
        if part == "test":
            return {"requests": list(samples)}
        return batch_samples(samples, self.require_tokenizer().pad_token_id, self.packing)


def _check_split_kind(kind: str, kinds: tuple[str, ...]) -> None:
    if kind not in kinds:
        raise UsageError(f"data.init_args.split_kind must be one of {', '.join(kinds)}; got {kind!r}")


# ---------------------------------------------------------------------------------------------
# Score prediction


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

    def __init__(self, instruction: str = SCORE_INSTRUCTION, system_prompt: str | None = None,
                 packing: bool = False, split_kind: Literal["random", "client_disjoint"] = "random", **kwargs):
        super().__init__(**kwargs)
        self.instruction, self.system_prompt, self.packing = instruction, system_prompt, packing
        _check_split_kind(split_kind, SCORE_SPLITS)
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
        return ScoreSample(dialogue.id, ids, labels, len(ids) - answer_length, list(dialogue.feedback.items),
                           dialogue_statistics(dialogue))

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
