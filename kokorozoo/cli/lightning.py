"""``kokorozoo fit|validate|test|predict``: LightningCLI over every registered task and datamodule.

On top of LightningCLI:

- tasks are discovered (entry points) before parsing, so configs can use short class names;
- the datamodule gets what the task owns (tokenizer, generation room);
- the best checkpoint is chosen by the task's own ``monitor``/``mode``, and ``last.ckpt`` is always
  the latest state (:class:`~kokorozoo.runs.LastCheckpoint`); runs log to CSV and TensorBoard;
- ``fit --ckpt_path`` resumes in the checkpoint's own run folder, with its data order, random
  states and best-checkpoint record; resuming a finished run says so and exits 0;
- after ``fit`` the best checkpoint is tested on every process and a metrics summary printed;
- ``test``/``validate``/``predict`` take output locations from the command line and config, never
  from the checkpoint; a checkpoint of another task is an error; without a checkpoint, a task with
  trained parts (heads) is refused and the others are reported as zero-shot;
- checkpoints are read as tensors and plain values only (``weights_only=True``, by kokorozoo and
  by Lightning): a checkpoint that would run code when unpickled is refused in one line;
- a user's mistake (a GPU config without a GPU, a setting that no longer fits when the work is
  split across processes, an unwritable output folder, a bad checkpoint or config file) ends in
  one line, found before any training; so does a tracker that cannot be built or that fails when
  it first logs or later (:mod:`kokorozoo.evaluation.trackers`), the run's own folder keeping what
  was written.
"""

from __future__ import annotations

import importlib
import inspect
import logging
import math
import os
import re
import sys
import tempfile
from argparse import ArgumentError
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
import yaml
from jsonargparse import Namespace
from lightning.pytorch.callbacks import LearningRateMonitor, ModelCheckpoint, ProgressBar, TQDMProgressBar
from lightning.pytorch.cli import LightningCLI
from lightning.pytorch.loggers import CSVLogger, Logger, TensorBoardLogger
from lightning.pytorch.loggers.csv_logs import ExperimentWriter

from kokorozoo.cli.common import INTERRUPTED, LIGHTNING_ADVERT, DropLines
from kokorozoo.data.datamodules import KokoroChatDataModule
from kokorozoo.errors import UsageError
from kokorozoo.evaluation.trackers import failed_tracker, first_line, tracker_failure
from kokorozoo.evaluation.writer import ResultWriter
from kokorozoo.registry import discover_tasks
from kokorozoo.runs import Interrupted, LastCheckpoint, finished_state, run_folder
from kokorozoo.tasks.base import Task, task_class
from kokorozoo.tasks.model_files import read_checkpoint, read_model

GPU_ACCELERATORS = ("gpu", "cuda")
#: Lightning's ``ckpt_path`` keywords for checkpoints found elsewhere than in a file the user names.
LIGHTNING_CHECKPOINT_KEYWORDS = {
    "hpc": "SLURM auto-requeue checkpoints (hpc)",
    "registry": "model-registry checkpoints (registry)",
}


class NothingToDo(Exception):
    """The command has nothing left to do (e.g. resuming a finished run): said in one line, exit 0."""


class KokorozooCLI(LightningCLI):
    def add_arguments_to_parser(self, parser) -> None:
        parser.add_argument(
            "--test_after_fit",
            type=bool,
            default=True,
            help="after fit, test the best checkpoint and print the metrics summary",
        )
        parser.add_argument(
            "--last_every_n_steps",
            type=int,
            default=0,
            help="also write last.ckpt every N training steps (it is always written after each validation, at the"
            " end and on Ctrl-C); 0: only then",
        )

    # -- what the checkpoint may and may not change ------------------------------------------------

    def parse_arguments(self, parser, args) -> None:
        """Check the parsed settings before anything prints: a GPU asked for, and a checkpoint of
        another task than the one configured; note the settings a checkpoint may not change
        (:func:`_reading_settings`), which Lightning then reads from the checkpoint."""
        super().parse_arguments(parser, args)
        self._kept: dict[str, Any] = {}
        sub = self.config.get("subcommand")
        if not sub:
            return
        self._check_accelerator(self.config[sub])
        if self.config[sub].get("weights_only", False) is None:  # Lightning's own loads: tensors and plain values only
            self.config[sub].weights_only = True
        ckpt_path = self.config[sub].get("ckpt_path")
        if ckpt_path in LIGHTNING_CHECKPOINT_KEYWORDS:
            raise UsageError(
                f"--ckpt_path {ckpt_path}: give a checkpoint file (a best-*.ckpt or last.ckpt of a run's"
                f" checkpoints folder); kokorozoo reads no {LIGHTNING_CHECKPOINT_KEYWORDS[ckpt_path]}"
            )
        if not ckpt_path or ckpt_path in ("best", "last"):
            return
        record = read_model(ckpt_path)  # the checkpoint checked, its task looked up among the registered
        if record.is_export:
            raise UsageError(f"--ckpt_path {ckpt_path}: an export folder; give a checkpoint file (.ckpt) of a run")
        written_by = record.task
        configured = self.config[sub].get("model", {}).get("class_path")
        if configured and task_class(configured) is not written_by:
            raise UsageError(
                f"{ckpt_path} was written by {written_by.__name__} ({written_by.__module__}.{written_by.__qualname__}),"
                f" but the config names {configured.rpartition('.')[2]} ({configured}): use that task's config, or a"
                " checkpoint of this one"
            )
        self._kept = _reading_settings(configured, self.config[sub].model.init_args) if configured else {}

    def before_instantiate_classes(self) -> None:
        """The task's settings now come from the checkpoint, but the user's output location and
        how the user asked to read the model stay."""
        for name, value in self._kept.items():
            setattr(self.config[self.subcommand].model.init_args, name, value)

    # -- before anything runs ----------------------------------------------------------------------

    @staticmethod
    def _check_accelerator(config) -> None:
        accelerator = str(config.trainer.get("accelerator") or "auto")
        if accelerator in GPU_ACCELERATORS and not torch.cuda.is_available():
            raise UsageError(
                f"{_config_names(config)}asks for a GPU (trainer.accelerator: {accelerator}) and none is visible:"
                " try it anyway on the CPU with --trainer.accelerator cpu (the paper's runs need a GPU with about"
                " 20 GB and the model's local folder in model.init_args.backbone)"
            )

    def after_instantiate_classes(self) -> None:
        self.model.connect_datamodule(self.datamodule)

    def instantiate_trainer(self, **kwargs):
        """The trainer with the task's best checkpoint (unless the config brings a
        ``ModelCheckpoint``), :class:`LastCheckpoint`, the :class:`ResultWriter`, a learning-rate
        monitor, a progress bar whose rate reads in seconds a step for slow steps, and the run's
        loggers (unless configured). The saved ``config.yaml`` lists what was added (the progress
        bar aside: a display), so that ``fit --config`` of it builds the same set, in a new run folder."""
        config, saved = self.config_init[self.subcommand].trainer, self.config[self.subcommand].trainer
        callbacks, specs = _as_list(config.get("callbacks")), _as_list(saved.get("callbacks"))

        def add(cls: type, **init_args: Any) -> None:
            callbacks.append(cls(**init_args))
            specs.append(class_spec(cls, **init_args))

        if not any(isinstance(c, ResultWriter) for c in callbacks):  # test/predict rows, baselines, files
            add(ResultWriter)
        if config.get("enable_checkpointing", True) is not False:
            if not any(isinstance(c, ModelCheckpoint) for c in callbacks):
                add(ModelCheckpoint, **task_checkpoint(self.model))
            every = self.config[self.subcommand].get("last_every_n_steps", 0)
            if (last := next((i for i, c in enumerate(callbacks) if isinstance(c, LastCheckpoint)), None)) is None:
                add(LastCheckpoint, every_n_steps=every)
            elif every:  # the option, as on the command line, over a saved config's LastCheckpoint
                callbacks[last].every_n_steps = specs[last].init_args.every_n_steps = every
        defaults: dict[str, Any] = {"callbacks": callbacks}
        configured = config.get("logger")
        if configured is not False:  # the run's own folder and logs first, whatever tracker is configured
            trackers, tracker_specs = (
                ([], []) if configured in (None, True) else (_as_list(configured), _as_list(saved.logger))
            )
            name, own = saved_own_loggers(trackers, tracker_specs)
            trackers, tracker_specs = (
                [x for i, x in enumerate(xs) if i not in own] for xs in (trackers, tracker_specs)
            )
            loggers = default_loggers(config.get("default_root_dir") or ".", self._resumed_run(), name)
            defaults["logger"] = loggers + trackers
            saved.logger = [*own_logger_specs(loggers[0]), *tracker_specs]
            if not any(isinstance(c, LearningRateMonitor) for c in callbacks):
                add(LearningRateMonitor, logging_interval="step")  # lr-<optimizer> beside the loss
        if config.get("enable_progress_bar") is not False and not any(isinstance(c, ProgressBar) for c in callbacks):
            callbacks.append(StepsProgressBar())
        saved.callbacks = specs
        return super().instantiate_trainer(**{**defaults, **kwargs})

    def _resumed_run(self) -> Path | None:
        """The run folder ``fit --ckpt_path`` continues in."""
        ckpt_path = self.config[self.subcommand].get("ckpt_path")
        if self.subcommand != "fit" or not ckpt_path or not Path(ckpt_path).is_file():
            return None
        return run_folder(ckpt_path)

    def before_fit(self) -> None:
        ckpt_path = self.config.fit.get("ckpt_path")
        if ckpt_path and Path(ckpt_path).is_file():
            done = finished_state(read_checkpoint(ckpt_path))
            trainer = self.trainer
            if done and (done["max_steps"], done["max_epochs"]) == (trainer.max_steps, trainer.max_epochs):
                raise NothingToDo(
                    f"{ckpt_path} is the end of a finished run (step {done['global_step']}): nothing to resume;"
                    f" test it with `kokorozoo test --config ... --ckpt_path {ckpt_path}`"
                )
        self._check_writable()
        self._check_steps_fit_processes()

    def before_test(self) -> None:
        self._before_evaluation()

    def before_validate(self) -> None:
        self._before_evaluation()

    def before_predict(self) -> None:
        self._before_evaluation()

    def _before_evaluation(self) -> None:
        self._check_writable()
        if self.config[self.subcommand].get("ckpt_path") or self.model.remote:
            return
        if self.model.has_heads():
            raise UsageError(
                f"{type(self.model).__name__} has trained parts (heads) that would be random without a checkpoint:"
                " pass --ckpt_path (a best-*.ckpt or last.ckpt written by kokorozoo fit)"
            )
        self.model.zero_shot = self.model.released is None  # a released model is tested as it was trained

    def _check_writable(self) -> None:
        """Find an output folder that cannot be written now, not after hours of training."""
        folders = [self.trainer.default_root_dir]
        if self.model.hparams.get("output_dir"):
            folders.append(self.model.hparams.output_dir)
        for folder in folders:
            try:
                Path(folder).mkdir(parents=True, exist_ok=True)
                tempfile.TemporaryFile(dir=folder).close()
            except OSError as e:
                raise UsageError(f"the output folder {folder} cannot be written: {e.strerror or e}") from None

    def _check_steps_fit_processes(self) -> None:
        """Step-based settings that stop fitting when the training data is split across processes
        fail on one rank with a traceback: check them here, before the processes start."""
        trainer, data = self.trainer, self.datamodule
        interval = self.config.fit.trainer.get("val_check_interval")
        if not isinstance(interval, int) or isinstance(interval, bool) or trainer.check_val_every_n_epoch is None:
            return
        samples = len(data.samples("train"))
        world = trainer.world_size
        batches = math.ceil(math.ceil(samples / world) / data.batch_size)
        if limit := trainer.limit_train_batches:
            batches = min(batches, limit if isinstance(limit, int) else int(batches * limit))
        if interval > batches:
            split = f" each of the {world} processes gets" if world > 1 else " there are"
            raise UsageError(
                f"trainer.val_check_interval ({interval}) is more than the {batches} training batches{split}"
                f" ({samples} samples, batch size {data.batch_size}): set --trainer.val_check_interval to at most"
                f" {batches}, or a fraction of an epoch such as 0.5"
            )

    # -- after fit: test the best checkpoint on every process ---------------------------------------

    def after_fit(self) -> None:
        trainer = self.trainer
        best = trainer.checkpoint_callback
        has_best = best is not None and bool(best.best_model_path)
        if has_best and trainer.is_global_zero:
            print(f"best checkpoint: {best.best_model_path} ({best.monitor} = {float(best.best_model_score):.4f})")
        if self.config.fit.get("test_after_fit", False):
            best_path = best.best_model_path if has_best else None  # named: "best" asks Lightning to guess
            trainer.test(self.model, datamodule=self.datamodule, ckpt_path=best_path, weights_only=True)

    def after_test(self) -> None:
        if self.model.zero_shot and self.trainer.is_global_zero:
            print("no checkpoint: zero-shot (the base model with untrained adapters)")


def _reading_settings(class_path: str, init_args) -> dict[str, Any]:
    """The settings a checkpoint may not override: ``output_dir`` always, and each of the task's
    :attr:`~kokorozoo.tasks.base.Task.reading_settings` the user set to other than its default
    (``--model.init_args.scoring constrained`` tests a model trained with greedy validation)."""
    cls = task_class(class_path)
    defaults = inspect.signature(cls.__init__).parameters
    kept = {"output_dir": init_args.get("output_dir")}
    for name in cls.reading_settings:
        if name in init_args and name in defaults and init_args[name] != defaults[name].default:
            kept[name] = init_args[name]
    return kept


def _config_names(config) -> str:
    files = [str(path) for path in (config.get("config") or []) if path]
    return f"{', '.join(files)} " if files else "the configuration "


def default_loggers(root: str, resumed: Path | None = None, name: str = "lightning_logs") -> list:
    """CSV (``metrics.csv``, read by scripts and tests) and TensorBoard (``tensorboard --logdir
    runs``), both in the run's one folder ``<root>/<name>/version_N`` — the resumed run's own
    folder when resuming (its CSV appended to, never rewritten)."""
    if resumed is not None:
        save_dir, name, version = str(resumed.parent.parent), resumed.parent.name, resumed.name
        csv = AppendingCSVLogger(save_dir, name=name, version=version)
    else:
        save_dir = root
        csv = CSVLogger(save_dir, name=name)
        version = csv.version
    return [csv, TensorBoardLogger(save_dir, name=name, version=version, default_hp_metric=False)]


def own_logger_specs(csv: CSVLogger) -> list[Namespace]:
    """The run's own loggers as ``config.yaml`` lists them: without a version, so that a run of
    the config gets a new folder (:func:`saved_own_loggers` finds them there)."""
    where = {"save_dir": str(csv.save_dir), "name": csv.name}
    return [class_spec(CSVLogger, **where), class_spec(TensorBoardLogger, **where, default_hp_metric=False)]


def saved_own_loggers(loggers: list, specs: list) -> tuple[str, set[int]]:
    """The folder name and the places of a saved config's own loggers among the configured ones:
    a CSVLogger and a TensorBoardLogger into one folder, without a version (:func:`own_logger_specs`).
    They are built again by :func:`default_loggers`, in the same versioned folder; none: the default."""
    where = {}
    for i, (logger, spec) in enumerate(zip(loggers, specs)):
        args = spec.get("init_args") or {}
        if type(logger) in (CSVLogger, TensorBoardLogger) and args.get("version") is None:
            where.setdefault(type(logger), (i, str(args.get("save_dir")), args.get("name")))
    if len(where) == 2 and where[CSVLogger][1:] == where[TensorBoardLogger][1:]:
        return where[CSVLogger][2] or "lightning_logs", {where[CSVLogger][0], where[TensorBoardLogger][0]}
    return "lightning_logs", set()


def class_spec(cls: type, **init_args: Any) -> Namespace:
    """``cls(**init_args)`` as a config names it (``class_path``/``init_args``)."""
    return Namespace(class_path=f"{cls.__module__}.{cls.__qualname__}", init_args=Namespace(**init_args))


def _as_list(value: Any) -> list:
    return [] if value is None else list(value) if isinstance(value, list) else [value]


class _AppendingWriter(ExperimentWriter):
    """Keeps a resumed run's ``metrics.csv`` (Lightning's writer deletes it) and appends to it."""

    def _check_log_dir_exists(self) -> None:
        if os.path.isfile(self.metrics_file_path):
            with open(self.metrics_file_path, encoding="utf-8") as f:
                self.metrics_keys = f.readline().strip().split(",")


class AppendingCSVLogger(CSVLogger):
    """The CSV logger of a resumed run: the rows after the checkpoint are added to the run's file."""

    @property
    def experiment(self) -> ExperimentWriter:
        if self._experiment is None:
            self._experiment = _AppendingWriter(log_dir=self.log_dir)
        return self._experiment


class StepsProgressBar(TQDMProgressBar):
    """Lightning's bar, its rate in seconds a step when a step takes more than a second (a
    backbone's training steps): Lightning's own shows ``0.00it/s`` there."""

    BAR_FORMAT = TQDMProgressBar.BAR_FORMAT.replace("{rate_noinv_fmt}", "{rate_fmt}")


def task_checkpoint(task: Task) -> dict[str, Any]:
    """The ``ModelCheckpoint`` settings that keep the best checkpoint by the task's criterion
    (``last.ckpt`` is LastCheckpoint's)."""
    return {
        "monitor": task.monitor,
        "mode": task.mode,
        "filename": "best-{epoch}-{step}",
        "auto_insert_metric_name": False,
    }


def check_config_files(args: Sequence[str]) -> None:
    """A config file that is missing, empty or not a mapping of settings, named in one line
    (jsonargparse says only ``Unexpected config``)."""
    for i, arg in enumerate(args):
        if arg in ("--config", "-c") and i + 1 < len(args):
            path = args[i + 1]
        elif arg.startswith("--config="):
            path = arg.split("=", 1)[1]
        else:
            continue
        if not os.path.isfile(path):
            raise UsageError(f"{path}: no such config file")
        try:
            with open(path, encoding="utf-8") as f:
                content = yaml.safe_load(f)
        except yaml.YAMLError as e:
            raise UsageError(f"{path}: not valid YAML ({str(e).splitlines()[0]})") from None
        if content is None:
            raise UsageError(f"{path}: the config file is empty (expected settings such as trainer:, model:, data:)")
        if not isinstance(content, dict):
            raise UsageError(
                f"{path}: expected a mapping of settings (trainer:, model:, data:), got a {type(content).__name__}"
            )


def lightning_messages_to_stdout() -> None:
    """Lightning's progress messages ("GPU available", "Restoring states ...") go to stdout, so that
    stderr holds warnings and errors only: a user's mistake is then one line there. Its
    advertisement goes nowhere."""
    for name in ("lightning.pytorch", "lightning.fabric"):
        for handler in logging.getLogger(name).handlers:
            handler.addFilter(DropLines(LIGHTNING_ADVERT))
            if isinstance(handler, logging.StreamHandler) and handler.stream is sys.__stderr__:
                handler.setStream(sys.stdout)


def unbuildable_logger_line(error: BaseException) -> str | None:
    """The one line for a configured logger that cannot be built: its package is not installed
    (``MLFlowLogger`` without mlflow) or it refuses its settings (a tracking URI it cannot use).
    jsonargparse wraps the reason in ValueErrors; None for anything else."""
    cause, names, reason = error, [], error
    while cause is not None:
        names += re.findall(r"class_path[ =]'([^']+)'", str(cause))
        reason = cause
        if isinstance(cause, ImportError):
            return f"{names[0] if names else 'a configured class'} cannot be built: {first_line(cause)}"
        cause = cause.__cause__ or cause.__context__
    if names and _is_logger(names[0]) and reason is not error:
        return f"{names[0]} cannot be built: {first_line(reason)}"
    return None


def _is_logger(class_path: str) -> bool:
    module, _, name = class_path.rpartition(".")
    try:
        cls = getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError, ValueError):
        return False
    return isinstance(cls, type) and issubclass(cls, Logger)


def config_error_line(error: ArgumentError) -> str:
    """jsonargparse explains a bad setting as a chain of exceptions, from the key (the outermost,
    its first line) down to the reason (the innermost, e.g. ``Option 'lr_typo' is not accepted``):
    the key and the reason, in one line."""
    reason: BaseException = error
    while reason.__cause__ is not None:
        reason = reason.__cause__
    key, because = (str(e).strip().partition("\n")[0] for e in (error, reason))
    return key if because in key else f"{key} {because}"


def run_lightning_cli(args: Sequence[str] | None = None) -> int:
    """Run LightningCLI on ``args`` (``None``: the command line); a bad setting is a
    :class:`UsageError` in one line."""
    check_config_files(list(sys.argv[1:] if args is None else args))
    lightning_messages_to_stdout()
    discover_tasks()  # import every task so short class names resolve in configs
    no_exit = {"exit_on_error": False}
    try:
        KokorozooCLI(
            Task,
            KokoroChatDataModule,
            subclass_mode_model=True,
            subclass_mode_data=True,
            args=None if args is None else list(args),
            save_config_kwargs={"overwrite": True},
            trainer_defaults={"use_distributed_sampler": False},
            parser_kwargs={"exit_on_error": False, **{command: no_exit for command in KokorozooCLI.subcommands()}},
        )
    except ArgumentError as e:
        raise UsageError(config_error_line(e)) from None
    except NothingToDo as e:
        print(f"kokorozoo: {e}")
    except Interrupted as e:
        print(f"kokorozoo: {e}", file=sys.stderr)
        return INTERRUPTED
    except UsageError:
        raise
    except Exception as e:  # a tracker's logger that cannot be built, or that fails when it logs
        if (line := unbuildable_logger_line(e) if isinstance(e, ValueError) else None) is not None:
            raise UsageError(line) from None
        if (logger := failed_tracker(e)) is None:
            raise
        raise tracker_failure(logger, e) from None
    return 0
