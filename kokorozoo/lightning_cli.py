"""``kokorozoo fit|validate|test|predict``: LightningCLI over every registered task and datamodule.

On top of LightningCLI: tasks are discovered (entry points) before parsing so configs can use
short class names; the datamodule gets the task's tokenizer; the best checkpoint is chosen by the
task's own ``monitor``/``mode`` (and ``last.ckpt`` is kept for resuming); after ``fit`` the best
checkpoint is tested and a metrics summary printed; a user's mistake ends in one line.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.cli import LightningCLI

from kokorozoo.cli import LIGHTNING_COMMANDS
from kokorozoo.data.datamodules import KokoroChatDataModule
from kokorozoo.registry import discover_tasks
from kokorozoo.tasks.base import Task


class KokorozooCLI(LightningCLI):
    def add_arguments_to_parser(self, parser) -> None:
        parser.add_argument(
            "--test_after_fit",
            type=bool,
            default=True,
            help="after fit, test the best checkpoint and print the metrics summary",
        )

    def after_instantiate_classes(self) -> None:
        self.model.connect_datamodule(self.datamodule)

    def _instantiate_trainer(self, config, callbacks):
        given = list(config.get("callbacks") or []) + list(callbacks)
        if config.get("enable_checkpointing", True) is not False and not any(
            isinstance(c, ModelCheckpoint) for c in given
        ):
            callbacks = [*callbacks, task_checkpoint(self.model)]
        if config.get("logger") in (None, True):
            config = {**config, "logger": default_loggers(config.get("default_root_dir") or ".")}
        return super()._instantiate_trainer(config, callbacks)

    def after_fit(self) -> None:
        best = self.trainer.checkpoint_callback
        if best is not None and best.best_model_path:
            print(f"best checkpoint: {best.best_model_path} ({best.monitor} = {float(best.best_model_score):.4f})")
        if self.config[self.subcommand].get("test_after_fit", False) and self.trainer.is_global_zero:
            ckpt = "best" if best is not None and best.best_model_path else None
            self.trainer.test(self.model, datamodule=self.datamodule, ckpt_path=ckpt)


def default_loggers(root: str) -> list:
    """CSV (``metrics.csv``, read by scripts and tests) and TensorBoard (``tensorboard --logdir
    runs``), both in the run's one folder ``<root>/lightning_logs/version_N``."""
    from lightning.pytorch.loggers import CSVLogger, TensorBoardLogger

    csv = CSVLogger(root)
    return [csv, TensorBoardLogger(root, version=csv.version, default_hp_metric=False)]


def task_checkpoint(task: Task) -> ModelCheckpoint:
    """Keep the best checkpoint by the task's criterion, and the last one to resume from."""
    return ModelCheckpoint(
        monitor=task.monitor,
        mode=task.mode,
        save_last=True,
        filename="best-{epoch}-{step}",
        auto_insert_metric_name=False,
    )


def run_lightning_cli(args: Sequence[str] | None = None) -> int:
    """Run LightningCLI on ``args`` (``None``: the command line)."""
    discover_tasks()  # import every task so short class names resolve in configs
    no_exit = {"exit_on_error": False}
    KokorozooCLI(
        Task,
        KokoroChatDataModule,
        subclass_mode_model=True,
        subclass_mode_data=True,
        args=None if args is None else list(args),
        save_config_kwargs={"overwrite": True},
        parser_kwargs={"exit_on_error": False, **{command: no_exit for command in LIGHTNING_COMMANDS}},
    )
    return 0


if __name__ == "__main__":
    sys.exit(run_lightning_cli(sys.argv[1:]))
