"""What kokorozoo does with the trackers a run logs to (MLflow, W&B, TensorBoard), beside
Lightning's own logging.

- The figures reach every logger through ``log_dict``; the files a test or predict run writes
  (``metrics.json``, the predictions) are the run's whole result, so each tracker keeps them too,
  through its own public API: MLflow and W&B as the run's files (artifacts), TensorBoard as text
  on its Text tab (``metrics.json`` only: predictions can be many megabytes). Called on the first
  process only, after the files are written; nothing here waits for the other processes.
- A tracker that fails (a server that cannot be reached, a store that cannot be written) is a
  user's setting that does not work: :func:`failed_tracker` finds it in the traceback, and the CLI
  says it in one line (:func:`tracker_failure`); the run's own folder keeps what was written.
"""

from __future__ import annotations

import traceback
from collections.abc import Iterable
from pathlib import Path

from lightning.pytorch.loggers import Logger, MLFlowLogger, TensorBoardLogger, WandbLogger

from kokorozoo.errors import UsageError
from kokorozoo.evaluation.results import METRICS_FILE


def log_result_files(loggers: Iterable[Logger], files: Iterable[Path], step: int = 0) -> None:
    """Give each tracker among ``loggers`` the written ``files``."""
    files = [Path(f) for f in files]
    for logger in loggers:
        try:
            _log_files(logger, files, step)
        except Exception as e:  # the files are written: the tracker's failure is said, they stay
            raise tracker_failure(logger, e) from e


def log_report(loggers: Iterable[Logger], run_folder: Path, step: int = 0) -> None:
    """Give the trackers that keep files (MLflow, W&B) the run's report: ``report.html`` and its
    figures (PNG), built into ``run_folder/report`` only when such a tracker is configured (the
    run's own TensorBoard has the figures as scalars; building the page costs seconds)."""
    keepers = [logger for logger in loggers if isinstance(logger, (MLFlowLogger, WandbLogger))]
    if not keepers:
        return
    from kokorozoo.evaluation.reports import build_run_report  # matplotlib: only when asked for

    page = build_run_report([run_folder], run_folder / "report")
    figures = sorted(page.parent.glob("*.png"))
    for logger in keepers:
        try:
            _log_files(logger, [page, *figures], step, subfolder="report")
        except Exception as e:  # the report is written: the tracker's failure is said, it stays
            raise tracker_failure(logger, e) from e


def _log_files(logger: Logger, files: list[Path], step: int, subfolder: str | None = None) -> None:
    if isinstance(logger, MLFlowLogger):
        for path in files:
            logger.experiment.log_artifact(logger.run_id, str(path), subfolder)
    elif isinstance(logger, WandbLogger):
        for path in files:  # copied into the run now: an offline run carries them when synced
            base = path.parent.parent if subfolder else path.parent
            logger.experiment.save(str(path), base_path=str(base), policy="now")
    elif isinstance(logger, TensorBoardLogger):
        for path in files:
            if path.name == METRICS_FILE:  # indented: Markdown shows it as it is
                text = "".join(f"    {line}\n" for line in path.read_text(encoding="utf-8").splitlines())
                logger.experiment.add_text(path.name, text, global_step=step)
        logger.experiment.flush()


def failed_tracker(error: BaseException) -> Logger | None:
    """The logger whose own code raised ``error`` (at start-up, when it first reaches its store,
    or while logging), if any: the innermost one on the traceback."""
    found = None
    for frame, _ in traceback.walk_tb(error.__traceback__):
        owner = frame.f_locals.get("self")
        if isinstance(owner, Logger):
            found = owner
    return found


def tracker_failure(logger: Logger, error: BaseException) -> UsageError:
    """The one line for ``logger``'s failure: its class and the reason (the first line of it)."""
    return UsageError(f"{type(logger).__name__} failed: {first_line(error)}")


def first_line(error: BaseException) -> str:
    """An exception's first line, or its type where it says nothing."""
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__
