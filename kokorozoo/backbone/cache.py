"""Built-once model folders: the embedded backbones are written into a temporary folder beside
their target and renamed into place, so a killed build never leaves a half model behind and two
processes building the same model both end with one complete copy."""

from __future__ import annotations

import logging
import shutil
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

log = logging.getLogger(__name__)


def build_once(target: Path, write: Callable[[Path], None]) -> Path:
    """``target``, made by ``write(folder)`` on first use and reused after."""
    if target.is_dir():
        return target
    started = time.perf_counter()
    target.parent.mkdir(parents=True, exist_ok=True)
    workdir = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    try:
        write(workdir)
        try:
            workdir.rename(target)
        except OSError:
            if not target.is_dir():  # another process finished first: its copy is as good
                raise
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    log.info("Built %s (%.1f s)", target, time.perf_counter() - started)
    return target
