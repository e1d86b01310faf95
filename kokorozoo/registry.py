"""Task discovery through the ``kokorozoo.tasks`` entry points (core tasks and plugins alike).

Every task is imported before the CLI parses, so configs can name a task class by its short
class name. A plugin may never shadow a core task's name, and a plugin that fails to import is
reported without breaking the CLI.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from importlib.metadata import entry_points

log = logging.getLogger(__name__)

GROUP = "kokorozoo.tasks"
CORE_DISTRIBUTION = "kokorozoo"


@dataclass(frozen=True)
class TaskEntry:
    name: str
    target: str
    distribution: str
    cls: type | None
    error: str | None = None


class RegistryError(RuntimeError):
    """Two tasks under one name: the message names both providers."""


def discover_tasks() -> dict[str, TaskEntry]:
    """Load every registered task. Core tasks first; a plugin reusing a taken name is an error."""
    found = sorted(
        entry_points(group=GROUP),
        key=lambda ep: (_distribution(ep) != CORE_DISTRIBUTION, ep.name),
    )
    tasks: dict[str, TaskEntry] = {}
    for ep in found:
        dist = _distribution(ep)
        if ep.name in tasks:
            taken = tasks[ep.name]
            if taken.target == ep.value:
                continue  # the same package seen twice (e.g. an editable install)
            raise RegistryError(
                f"task {ep.name!r} from {dist} ({ep.value}) would shadow the task of that name from "
                f"{taken.distribution} ({taken.target}); rename it in {dist}'s entry points"
            )
        try:
            tasks[ep.name] = TaskEntry(ep.name, ep.value, dist, ep.load())
        except Exception as e:  # noqa: BLE001 - a broken plugin must not break the CLI
            log.warning("task %r from %s could not be loaded: %s: %s", ep.name, dist, type(e).__name__, e)
            tasks[ep.name] = TaskEntry(ep.name, ep.value, dist, None, f"{type(e).__name__}: {e}")
    return tasks


def _distribution(ep) -> str:
    return ep.dist.name if ep.dist is not None else "?"
