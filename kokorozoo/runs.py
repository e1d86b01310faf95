"""Long runs: checkpoints that never lose the latest state, resuming that reproduces, run folders.

- :class:`LastCheckpoint` keeps ``last.ckpt`` the latest state: after every validation, every
  ``every_n_steps`` training steps if asked, at the end of training, and when the user presses
  Ctrl-C (the step under way finishes, ``last.ckpt`` is written, the run stops with
  :class:`Interrupted`; a second Ctrl-C stops at once). It also carries
  the random states (dropout) and whether the run finished, so a resumed run continues exactly.
- :func:`run_folder` is the run folder a checkpoint belongs to: a resumed run writes there, so it
  keeps its logs and its best-checkpoint record.
"""

from __future__ import annotations

import os
import random
import signal
from pathlib import Path
from typing import Any

import torch
from lightning.pytorch.callbacks import Checkpoint, ModelCheckpoint

LAST = "last.ckpt"


def run_folder(checkpoint: str | Path) -> Path | None:
    """``<root>/lightning_logs/version_N`` for a checkpoint in its ``checkpoints`` folder."""
    path = Path(checkpoint).resolve()
    return path.parent.parent if path.parent.name == "checkpoints" else None


def finished_state(checkpoint: dict[str, Any]) -> dict | None:
    """What :class:`LastCheckpoint` recorded when the run finished (its step and limits), or None."""
    for key, state in (checkpoint.get("callbacks") or {}).items():
        if key.startswith(LastCheckpoint.__name__) and state.get("finished"):
            return state
    return None


class Interrupted(Exception):
    """The user stopped the run (Ctrl-C) and ``last.ckpt`` holds it: said in one line, exit 130."""


class LastCheckpoint(Checkpoint):
    """Write ``last.ckpt`` in the run's checkpoint folder after every validation, every
    ``every_n_steps`` steps (0: never), at the end of training and on Ctrl-C; carry the random
    states and whether the run finished. A ``Checkpoint``, so Lightning runs it after the
    ``ModelCheckpoint`` that keeps the best one: ``last.ckpt`` then holds the latest best record."""

    def __init__(self, every_n_steps: int = 0):
        self.every_n_steps = every_n_steps
        self.finished: dict | None = None
        self.interrupted = False
        self._previous_handler = None

    @property
    def state_key(self) -> str:
        return self.__class__.__name__

    def path(self, trainer) -> Path:
        best = next((c for c in trainer.callbacks if isinstance(c, ModelCheckpoint)), None)
        folder = best.dirpath if best is not None and best.dirpath else Path(trainer.log_dir or ".") / "checkpoints"
        return Path(folder) / LAST

    def save(self, trainer) -> None:
        """Write to a temporary file and rename it, so that a kill at any moment leaves the
        previous ``last.ckpt`` or the new one, never half of one."""
        path = self.path(trainer)
        partial = path.with_name(path.name + ".partial")
        trainer.save_checkpoint(partial, weights_only=False)  # the whole state: a resume needs it
        if trainer.is_global_zero:
            os.replace(partial, path)
        trainer.strategy.barrier("LastCheckpoint.save")

    # -- when ------------------------------------------------------------------------------------

    def on_train_start(self, trainer, pl_module) -> None:
        self.finished, self.interrupted = None, False
        if trainer.is_global_zero or trainer.world_size == 1:
            try:
                self._previous_handler = signal.signal(signal.SIGINT, self._on_interrupt)
            except ValueError:  # not the main thread: Lightning's own handling stays
                self._previous_handler = None

    def _on_interrupt(self, signum, frame) -> None:
        if self.interrupted:  # a second Ctrl-C: stop at once
            raise KeyboardInterrupt
        self.interrupted = True

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if trainer.strategy.reduce_boolean_decision(self.interrupted, all=False):
            self.interrupted = True
            self.save(trainer)
            for logger in trainer.loggers:  # keep what was logged up to here
                logger.save()
            self._restore_handler()
            # stop here: Lightning's own stop (should_stop) would validate once more and save
            # checkpoints the uninterrupted run never has
            raise Interrupted(
                f"interrupted at step {trainer.global_step}: resume with --ckpt_path {self.path(trainer)}"
            )
        if self.every_n_steps and trainer.global_step % self.every_n_steps == 0:
            self.save(trainer)

    def on_validation_end(self, trainer, pl_module) -> None:
        if not trainer.sanity_checking and trainer.state.fn == "fit":
            self.save(trainer)

    def _restore_handler(self) -> None:
        if self._previous_handler is not None:
            signal.signal(signal.SIGINT, self._previous_handler)
            self._previous_handler = None

    def on_train_end(self, trainer, pl_module) -> None:
        self._restore_handler()
        self.finished = {
            "finished": True,
            "global_step": trainer.global_step,
            "max_steps": trainer.max_steps,
            "max_epochs": trainer.max_epochs,
        }
        self.save(trainer)

    # -- what travels in the checkpoint ----------------------------------------------------------

    def state_dict(self) -> dict[str, Any]:
        state: dict[str, Any] = {
            "torch_rng": torch.get_rng_state(),
            "python_rng": _python_rng_state(),
        }
        if torch.cuda.is_available():
            state["cuda_rng"] = torch.cuda.get_rng_state_all()
        return {**state, **(self.finished or {})}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        torch.set_rng_state(state["torch_rng"])
        version, internal, gauss = state["python_rng"]
        random.setstate((int(version), tuple(int(x) for x in internal), gauss))
        if "cuda_rng" in state and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(state["cuda_rng"])


def _python_rng_state() -> list:
    """``random.getstate()`` as plain lists, so checkpoints load with ``weights_only=True``."""
    version, internal, gauss = random.getstate()
    return [version, list(internal), gauss]
