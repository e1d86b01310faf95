"""The files a test or predict run writes, and what goes into them beside the model.

:class:`ResultWriter` is a Lightning callback (in the style of ``BasePredictionWriter``) that the
``kokorozoo`` CLI gives every trainer. A task's ``test_step``/``predict_step`` return its rows;
the writer keeps them, and at the end of the epoch:

- gathers every process's rows in rank order: each process evaluates a contiguous slice of the
  part (see :mod:`kokorozoo.data.sampling`), so this is the single-process order;
- asks the task for the model's figures (:meth:`~kokorozoo.tasks.base.Task.test_figures`) and
  adds the baselines (:func:`~kokorozoo.evaluation.baselines.run_baselines`, fit on the
  datamodule's whole split), and logs every figure to the trainer's loggers under one naming
  scheme (:meth:`~kokorozoo.evaluation.results.Result.logged_figures`: ``test_acc``,
  ``test_baseline_acc``, ``test_bleu1``);
- writes the task's ``predictions_file`` (one row a prediction) and ``metrics.json`` (a
  :class:`~kokorozoo.evaluation.results.Result`) into ``model.init_args.output_dir``, or the
  run's log folder; only the first process writes, and gives them to the trackers configured
  (:mod:`kokorozoo.evaluation.trackers`).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch
from lightning.pytorch import Callback, LightningModule, Trainer
from lightning.pytorch.loggers import TensorBoardLogger

from kokorozoo.data.datamodules import KokoroChatDataModule
from kokorozoo.evaluation.results import METRICS_FILE, Result, write_result
from kokorozoo.evaluation.trackers import log_report, log_result_files
from kokorozoo.tasks.base import Task


class ResultWriter(Callback):
    """Rows, baselines and files of ``test`` and ``predict`` (see the module docstring)."""

    def __init__(self) -> None:
        self.rows: list[dict] = []

    # -- collecting -----------------------------------------------------------------------------

    def on_test_epoch_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self.rows = []

    def on_predict_epoch_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self.rows = []

    def on_test_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0) -> None:
        self.rows += outputs or []

    def on_predict_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0) -> None:
        self.rows += outputs or []

    # -- at the end -----------------------------------------------------------------------------

    def on_test_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        rows = gather_rows(trainer, self.rows)
        result = evaluate(trainer, pl_module, rows)
        folder = output_folder(trainer, pl_module)  # on every process: the log folder is broadcast
        if trainer.is_global_zero:
            predictions = write_jsonl(folder / pl_module.predictions_file, rows)
            metrics = write_result(result, folder / METRICS_FILE)
            log_result_files(trainer.loggers, [metrics, predictions], trainer.global_step)
            log_report(trainer.loggers, folder, trainer.global_step)

    def on_predict_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        rows = gather_rows(trainer, self.rows)
        folder = output_folder(trainer, pl_module)  # on every process: the log folder is broadcast
        if trainer.is_global_zero:
            log_result_files(trainer.loggers, [write_jsonl(folder / pl_module.predictions_file, rows)])


def evaluate(trainer: Trainer, task: Task, rows: list[dict]) -> Result:
    """The run's result: the task's figures, then the baselines beside them (their answers written
    into ``rows``), the split, the seed and the checkpoint; every figure is logged."""
    from kokorozoo.evaluation.baselines import run_baselines  # scikit-learn: only when a test ends

    figures = dict(task.test_figures(rows))
    per_item = figures.pop("per_item", {})
    result = Result(**figures)
    datamodule = trainer.datamodule
    baselines = run_baselines(task, datamodule, rows, result.tokenize)
    for name, section in baselines.figures.items():
        section = dict(section)
        if columns := section.pop("per_item", None):
            per_item[name] = columns
        result.baselines[name] = section
    result.rules = {**result.rules, **baselines.rules}
    result.per_item = per_item
    for key, values in baselines.row_fields.items():
        for row, value in zip(rows, values):
            row[key] = value
    if isinstance(datamodule, KokoroChatDataModule):
        result.split, result.language = datamodule.split_kind, datamodule.language
        if result.dialogues is not None:  # a dialogue-level task: the seed draws its train/val split
            result.seed = datamodule.seed
    result.checkpoint = trainer.ckpt_path
    result.zero_shot = task.zero_shot
    if (released := getattr(task, "released", None)) is not None:  # tested as the lab released it
        result.extra["released_model"] = released
    figures = result.logged_figures()
    task.log_dict(figures)
    for logger in trainer.loggers:
        if isinstance(logger, TensorBoardLogger):  # the HParams tab: the settings beside the test figures
            logger.log_hyperparams(dict(task.hparams), metrics=figures)
    return result


def gather_rows(trainer: Trainer, rows: list[dict]) -> list[dict]:
    """Every process's rows in rank order (this process's alone when there is one)."""
    if trainer.world_size == 1:
        return rows
    gathered: list[list[dict]] = [[] for _ in range(trainer.world_size)]
    torch.distributed.all_gather_object(gathered, rows)
    return [row for part in gathered for row in part]


def output_folder(trainer: Trainer, task: LightningModule) -> Path:
    """``output_dir`` of the task, or the run's log folder (created). Every process must ask:
    under DDP ``trainer.log_dir`` is broadcast from the first."""
    folder = Path(task.hparams.get("output_dir") or trainer.log_dir or ".")
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def write_jsonl(path: Path, rows: list[dict[str, Any]]) -> Path:
    """One JSON object a line, written aside and renamed: a killed run leaves no half file."""
    tmp = path.with_suffix(path.suffix + ".tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        for row in rows:
            f.write(json.dumps(row, ensure_ascii=False) + "\n")
    os.replace(tmp, path)
    return path
