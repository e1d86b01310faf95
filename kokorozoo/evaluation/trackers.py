"""A run's result files in the trackers it logs to, beside the figures they already get.

The figures reach every logger through ``log_dict``; the files a test or predict run writes
(``metrics.json``, the predictions) are the run's whole result, so each tracker keeps them too,
through its own public API: MLflow and W&B as the run's files (artifacts), TensorBoard as text on
its Text tab (``metrics.json`` only: predictions can be many megabytes). Called on the first
process only, after the files are written; nothing here waits for the other processes.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from lightning.pytorch.loggers import Logger, MLFlowLogger, TensorBoardLogger, WandbLogger

from kokorozoo.evaluation.results import METRICS_FILE


def log_result_files(loggers: Iterable[Logger], files: Iterable[Path], step: int = 0) -> None:
    """Give each tracker among ``loggers`` the written ``files``."""
    files = [Path(f) for f in files]
    for logger in loggers:
        if isinstance(logger, MLFlowLogger):
            for path in files:
                logger.experiment.log_artifact(logger.run_id, str(path))
        elif isinstance(logger, WandbLogger):
            for path in files:  # copied into the run now: an offline run carries them when synced
                logger.experiment.save(str(path), base_path=str(path.parent), policy="now")
        elif isinstance(logger, TensorBoardLogger):
            for path in files:
                if path.name == METRICS_FILE:  # indented: Markdown shows it as it is
                    text = "".join(f"    {line}\n" for line in path.read_text(encoding="utf-8").splitlines())
                    logger.experiment.add_text(path.name, text, global_step=step)
            logger.experiment.flush()
