"""One progress bar for every long loop of kokorozoo.

A bar with the rate and the time left helps a person at a terminal; in a log file or a CI job
the same carriage-return redraws are noise. So the bar is shown only when stderr is a terminal,
and the iterable passes through untouched otherwise.
"""

from __future__ import annotations

import sys
from collections.abc import Iterable
from typing import TypeVar

T = TypeVar("T")

#: What the bar shows: where it is, the rate and the time left (tqdm's default, without colour).
BAR_FORMAT = "{desc}: {percentage:3.0f}%|{bar:20}| {n_fmt}/{total_fmt} [{elapsed}<{remaining}, {rate_fmt}]"


def progress(iterable: Iterable[T], desc: str, unit: str = "it", total: int | None = None) -> Iterable[T]:
    """``iterable`` wrapped in a tqdm bar on a terminal, ``iterable`` itself elsewhere.

    ``total`` defaults to ``len(iterable)`` where it has one; give it for a generator, or the bar
    can show no time left."""
    if not sys.stderr.isatty():
        return iterable
    from tqdm.auto import tqdm

    if total is None and hasattr(iterable, "__len__"):
        total = len(iterable)
    bar_format = BAR_FORMAT if total is not None else None
    return tqdm(iterable, desc=desc, unit=unit, total=total, file=sys.stderr, bar_format=bar_format)
