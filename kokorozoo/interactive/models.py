"""Models as the parties of a conversation: a response model as a :class:`Speaker` (the next turn
of many conversations at once, each reusing its history's key/value cache), a score model as a
:class:`Rater`. Both are loaded from an export folder or a checkpoint with what it records
(``kokorozoo.json``: the task, its settings and the prompt settings it was trained with), so no
config file is needed.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from kokorozoo.chat_format import stop_token_ids
from kokorozoo.data.datamodules import ResponseDataModule, ScoreDataModule
from kokorozoo.data.dialogue import Turn
from kokorozoo.data.encoding import next_turn_prompt
from kokorozoo.errors import UsageError
from kokorozoo.generation import (
    GREEDY,
    PromptCache,
    Sampling,
    generate_continuing,
    generate_padded,
    shared_prefix_supported,
)
from kokorozoo.records import Dialogue, Role
from kokorozoo.tasks.base import Task
from kokorozoo.tasks.model_files import ModelRecord, read_model

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ModelFile:
    """An export folder or a checkpoint, checked (:func:`~kokorozoo.tasks.model_files.read_model`):
    the task class it holds and the prompt settings it records (what a command checks before
    loading any model)."""

    record: ModelRecord

    @property
    def path(self) -> Path:
        return self.record.path

    @property
    def task(self) -> type[Task]:
        return self.record.task

    @property
    def prompt(self) -> dict[str, Any]:
        return self.record.prompt

    def load(self) -> Task:
        """The task, ready to predict. What the libraries print while loading and a user can do
        nothing about (the weights' progress bar, their deprecation notices, bitsandbytes' line
        about an optional CPU kernel) is kept off a chat's screen."""
        from transformers.utils import logging as hf_logging

        shown = hf_logging.is_progress_bar_enabled()
        hf_logging.disable_progress_bar()
        logging.getLogger("bitsandbytes.backends.cpu.ops").setLevel(logging.ERROR)
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", FutureWarning)
                return self.record.build()
        finally:
            if shown:
                hf_logging.enable_progress_bar()


def find_model(path: str | Path, kinds: tuple[type[Task], ...], what: str) -> ModelFile:
    """The export folder (``kokorozoo export``) or ``.ckpt`` at ``path``, checked; a missing or
    malformed path, or a task that is none of ``kinds``, is a one-line :class:`UsageError`
    (``what`` names the model in it)."""
    path = Path(path)
    if not path.exists():
        raise UsageError(f"{path}: no such model folder or checkpoint ({what})")
    record = read_model(path)
    if not issubclass(record.task, kinds):
        expected = " or ".join(k.__name__ for k in kinds)
        raise UsageError(f"{path}: holds a {record.task.__name__}, but {what} must be a {expected}")
    return ModelFile(record)


def _prompt_settings(task: Task, defaults: dict[str, Any], source: Path) -> dict[str, Any]:
    """The model's recorded prompt settings; the datamodule's defaults for what a model saved
    before kokorozoo recorded them lacks (said once in the log)."""
    missing = sorted(set(defaults) - set(task.prompt_settings))
    if missing:
        log.warning(
            "%s does not record %s (saved by an older kokorozoo): using the defaults %s",
            source,
            ", ".join(missing),
            {k: defaults[k] for k in missing},
        )
    return {**defaults, **{k: v for k, v in task.prompt_settings.items() if k in defaults}}


class Speaker:
    """A response model as one side of conversations: the role it was trained to speak, the next
    turn of many conversations in one batch (greedy, the model's own ``max_new_tokens`` and
    ``min_new_tokens``, unless :meth:`decode_with` says otherwise), each prompt cut to the model's
    length as its training cut it."""

    def __init__(self, task: Task, source: str | Path = "model"):
        self.task, self.source = task, str(source)
        settings = _prompt_settings(task, ResponseDataModule().prompt_settings(), Path(self.source))
        self.role: Role = settings["role"]
        self.system_prompt: str | None = settings["system_prompt"]
        hp = task.hparams
        self.max_new_tokens, self.min_new_tokens = int(hp.max_new_tokens), int(hp.min_new_tokens)
        #: Greedy, as the model was evaluated, unless the user asks for sampling (kokorozoo chat).
        self.sampling: Sampling = GREEDY
        self.max_length = int(settings["max_length"])
        self._check_room()
        #: The cached decoder serves the model exactly (see kokorozoo.generation); else generate.
        wanted = hp.get("generation", "shared_prefix") == "shared_prefix"
        self.cached = wanted and shared_prefix_supported(task.model)
        if wanted and not self.cached:
            log.warning(
                "%s: this model's attention or generation config needs generate: every turn recomputes its history",
                source,
            )

    def _check_room(self) -> None:
        if self.max_length <= self.max_new_tokens:
            raise UsageError(
                f"{self.source}: max_length {self.max_length} leaves no room for a prompt before"
                f" max_new_tokens {self.max_new_tokens}"
            )

    def decode_with(self, max_new_tokens: int | None = None, sampling: Sampling | None = None) -> None:
        """Decode otherwise than the model was evaluated (``kokorozoo chat --max-new-tokens``,
        ``--temperature``); a turn still gets at least ``min_new_tokens`` unless it is capped lower."""
        if max_new_tokens is not None:
            self.max_new_tokens = max_new_tokens
            self.min_new_tokens = min(self.min_new_tokens, max_new_tokens)
            self._check_room()
        if sampling is not None:
            self.sampling = sampling

    @staticmethod
    def find(path: str | Path, role: Role, what: str) -> ModelFile:
        """The response model at ``path``, checked to speak as ``role`` (nothing loaded yet)."""
        from kokorozoo.tasks.response import ResponseTask

        found = find_model(path, (ResponseTask,), what)
        speaks = found.prompt.get("role", "counselor")
        if speaks != role:
            raise UsageError(
                f"{path}: a {speaks} model (trained with data.init_args.role: {speaks}), but {what}"
                f" must speak as the {role}"
            )
        return found

    @classmethod
    def load(cls, found: ModelFile) -> Speaker:
        return cls(found.load(), found.path)

    @property
    def tokenizer(self):
        return self.task.tokenizer

    def prompt(self, turns: Sequence[Turn]) -> list[int]:
        """The prompt for this speaker's turn after ``turns`` (room kept for ``max_new_tokens``)."""
        return next_turn_prompt(
            self.tokenizer, turns, self.role, self.max_length - self.max_new_tokens, self.system_prompt
        )

    @torch.no_grad()
    def next_turns(
        self,
        histories: Sequence[Sequence[Turn]],
        caches: Sequence[PromptCache | None] | None = None,
        on_text: Callable[[int, str], None] | None = None,
    ) -> tuple[list[str], list[PromptCache | None]]:
        """This speaker's next turn after each history, and the caches to pass with the next
        call for the same conversations (history computed once, not once per turn);
        ``on_text(i, text_so_far)`` as conversation ``i``'s tokens come."""
        prompts = [self.prompt(turns) for turns in histories]
        on_token = self._text_callback(len(prompts), on_text) if on_text else None
        caches = list(caches) if caches is not None else [None] * len(prompts)
        settings = dict(
            max_new_tokens=self.max_new_tokens,
            min_new_tokens=self.min_new_tokens,
            stop_ids=stop_token_ids(self.tokenizer),
            pad_id=self.tokenizer.pad_token_id,
        )
        if self.cached:
            new_tokens, caches = generate_continuing(
                self.task.model, prompts, caches, on_token=on_token, sampling=self.sampling, **settings
            )
        else:
            new_tokens = generate_padded(self.task.model, prompts, sampling=self.sampling, **settings)
            caches = [None] * len(prompts)
            for i, tokens in enumerate(new_tokens if on_token else []):
                for token in tokens:
                    on_token(i, token)
        #: How many tokens each conversation's turn took (its stop token included): what it cost.
        self.new_token_counts = [len(tokens) for tokens in new_tokens]
        return [text.strip() for text in self.tokenizer.batch_decode(new_tokens, skip_special_tokens=True)], caches

    def _text_callback(self, n: int, on_text: Callable[[int, str], None]) -> Callable[[int, int], None]:
        """A per-token callback calling ``on_text`` with each conversation's text so far, held
        back while it ends inside a character (a byte-level token can split one)."""
        ids: list[list[int]] = [[] for _ in range(n)]

        def on_token(i: int, token: int) -> None:
            ids[i].append(token)
            text = self.tokenizer.decode(ids[i], skip_special_tokens=True)
            if not text.endswith("\ufffd"):
                on_text(i, text)

        return on_token


class Rater:
    """A score model (``ScoreHeadsTask``, or ``ScoreTask`` answering in text) rating whole
    sessions on the 20 items, each prompt built by the model's own
    :class:`~kokorozoo.data.datamodules.ScoreDataModule` as its training built it."""

    def __init__(self, task: Task, source: str | Path = "scorer", batch_size: int = 8):
        self.task, self.source, self.batch_size = task, str(source), batch_size
        settings = _prompt_settings(task, ScoreDataModule().prompt_settings(), Path(self.source))
        self.datamodule = ScoreDataModule(**settings)
        self.datamodule.connect(task.tokenizer)

    @staticmethod
    def find(path: str | Path) -> ModelFile:
        from kokorozoo.tasks.score import ScoreHeadsTask, ScoreTask

        return find_model(path, (ScoreHeadsTask, ScoreTask), "the scorer")

    @classmethod
    def load(cls, found: ModelFile) -> Rater:
        return cls(found.load(), found.path)

    @torch.no_grad()
    def rate(self, dialogues: Sequence[Dialogue]) -> list[list[int | None]]:
        """The predicted 20 items (0-5; None where a text answer gave none) of each dialogue."""
        from lightning.pytorch.utilities import move_data_to_device

        device = next(self.task.model.parameters()).device
        rated: list[list[int | None]] = []
        for start in range(0, len(dialogues), self.batch_size):
            samples = [self.datamodule.sample(d) for d in dialogues[start : start + self.batch_size]]
            batch = move_data_to_device(self.datamodule.collate(samples, "test"), device)
            preds = self.task.infer(batch)[0].cpu()
            rated += [[None if torch.isnan(v) else int(v) for v in row] for row in preds]
        return rated
