"""What every KokoroChat datamodule shares.

:class:`KokoroChatDataModule` owns the data and its split, ``setup`` (which parts a stage encodes,
each once), the four dataloaders, and the connection to the task (``connect``: the tokenizer
belongs to the backbone the task loads, and the room a generating task needs is the task's
setting). A datamodule gives its split (:meth:`~KokoroChatDataModule.make_split`), its samples
(:meth:`~KokoroChatDataModule.sample` per dialogue, or :meth:`~KokoroChatDataModule.encode_part`
for a whole part) and its batches (:meth:`~KokoroChatDataModule.collate`).
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import partial
from typing import Any, Literal

import torch
from lightning.pytorch import LightningDataModule
from torch.utils.data import DataLoader

from kokorozoo.data.loader import KokoroChat, OnError, load_kokorochat
from kokorozoo.data.sampling import EpochSampler, ResumableBatchSampler
from kokorozoo.data.splits import Split
from kokorozoo.data.validation import DataError
from kokorozoo.errors import UsageError
from kokorozoo.progress import progress
from kokorozoo.records import Dialogue

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
        # Lightning's own count of this epoch's trained batches: no public attribute gives it
        return {"epoch": sampler.epoch, "batches": self.trainer.fit_loop.epoch_loop.batch_progress.current.processed}

    def load_state_dict(self, state: dict[str, int]) -> None:
        if state:
            self._resume = (int(state["epoch"]), int(state["batches"]))

    def _process(self) -> tuple[int, int]:
        """This process's rank and the number of processes (kokorozoo shards the data itself)."""
        trainer = self.trainer
        if trainer is None or trainer.world_size == 1:
            return 0, 1
        # the Trainer keeps its use_distributed_sampler setting only there (no public property)
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


def check_split_kind(kind: str, kinds: tuple[str, ...]) -> None:
    """``kind`` must be one of the datamodule's ``kinds`` of split (a config names it)."""
    if kind not in kinds:
        raise UsageError(f"data.init_args.split_kind must be one of {', '.join(kinds)}; got {kind!r}")
