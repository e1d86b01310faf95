"""Task discovery through the ``kokorozoo.tasks`` entry points (core tasks and plugins alike).

A distribution registers a task under a short name::

    [project.entry-points."kokorozoo.tasks"]      # pyproject.toml
    topic = "kokorozoo_topic:TopicTask"

Nothing is imported until a command needs the tasks (``fit``/``validate``/``test``/``predict``
and ``kokorozoo tasks``; ``data`` and ``export`` never do). Then every task is imported before the
CLI parses, so configs can name a task by its class name (``class_path: TopicTask``): jsonargparse
resolves a short class name among the subclasses already imported.

Rules, in the order the entry points are read (core first, then plugins by distribution):

- a plugin can never shadow a core task: neither its entry-point name nor its class name may be
  one a core task already uses (configs name tasks by class, so a second ``ResponseTask`` would
  make every response config ambiguous). Two plugins clashing is the same error. A clash is a
  :class:`RegistryError` naming both sides; the shadowing plugin is not imported when its
  entry-point name is taken.
- a task that fails to import (or is not a :class:`~kokorozoo.tasks.base.Task`) is reported as a
  :class:`TaskEntry` with its error, once, as a warning; every other task still works.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from importlib.metadata import EntryPoint, entry_points

log = logging.getLogger(__name__)

GROUP = "kokorozoo.tasks"
CORE_DISTRIBUTION = "kokorozoo"

_reported: set[tuple[str, str, str]] = set()  # broken tasks already warned about in this process


@dataclass(frozen=True)
class TaskEntry:
    """One registered task.

    ``name``: the entry-point name; ``target``: ``module:Class``; ``distribution`` and ``version``:
    the package that registers it; ``cls``: the class once imported; ``error``: why it cannot be
    used (one line), None when it can; ``conflict``: set when the entry shadows another task (the
    :class:`RegistryError` message).
    """

    name: str
    target: str
    distribution: str
    cls: type | None
    error: str | None = None
    version: str = ""
    conflict: str | None = None

    @property
    def ok(self) -> bool:
        return self.error is None

    @property
    def is_core(self) -> bool:
        return self.distribution == CORE_DISTRIBUTION

    @property
    def class_name(self) -> str:
        """The name a config gives as ``class_path``."""
        return self.cls.__name__ if self.cls is not None else self.target.rpartition(":")[2].rpartition(".")[2]

    @property
    def class_path(self) -> str:
        if self.cls is not None:
            return f"{self.cls.__module__}.{self.cls.__qualname__}"
        return self.target.replace(":", ".")

    @property
    def provider(self) -> str:
        return f"{self.distribution} {self.version}".strip()

    def describe(self) -> str:
        return f"task {self.name!r} ({self.target}) of {self.provider}"


class RegistryError(RuntimeError):
    """Two tasks under one name (entry point or class): the message names both providers."""


def scan_tasks() -> list[TaskEntry]:
    """Every registered task with its status, core first; never raises.

    Entries that shadow an earlier one carry ``conflict``; :func:`discover_tasks` turns that into
    a :class:`RegistryError`, ``kokorozoo tasks`` shows it in its table.
    """
    entries: list[TaskEntry] = []
    by_name: dict[str, TaskEntry] = {}
    by_class: dict[str, TaskEntry] = {}
    for ep in sorted(entry_points(group=GROUP), key=_order):
        dist, version = _distribution(ep), _version(ep)
        taken = by_name.get(ep.name)
        if taken is not None:
            if taken.target == ep.value:
                continue  # the same registration seen twice (e.g. an editable install and its egg-info)
            entry = TaskEntry(ep.name, ep.value, dist, None, version=version)  # never imported
            entries.append(_shadowing(entry, taken, f"the name {ep.name!r}", "rename its entry point"))
            continue
        entry = _load(ep, dist, version)
        other = by_class.get(entry.class_name) if entry.cls is not None else None
        if other is not None and other.cls is not entry.cls:
            entry = _shadowing(entry, other, f"the class name {entry.class_name!r}", "rename its class")
        elif entry.cls is not None:
            by_class.setdefault(entry.class_name, entry)
        by_name[ep.name] = entry
        entries.append(entry)
    return entries


def discover_tasks() -> dict[str, TaskEntry]:
    """Import every registered task (so configs can use class names); name -> entry.

    Raises :class:`RegistryError` when a task shadows another; a task that cannot be imported is
    in the result with its ``error`` (and a warning is logged once), the others work.
    """
    entries = scan_tasks()
    conflicts = [e.conflict for e in entries if e.conflict]
    if conflicts:
        raise RegistryError("; ".join(conflicts))
    for entry in entries:
        key = (entry.name, entry.provider, entry.error or "")
        if entry.error and key not in _reported:
            _reported.add(key)
            log.warning(
                "kokorozoo: warning: %s could not be loaded and is unavailable (%s); `kokorozoo tasks` lists every"
                " task",
                entry.describe(),
                entry.error,
            )
    return {entry.name: entry for entry in entries}


def _load(ep: EntryPoint, dist: str, version: str) -> TaskEntry:
    try:
        obj = ep.load()
    except Exception as e:  # noqa: BLE001 - a broken plugin must not break the CLI
        return TaskEntry(ep.name, ep.value, dist, None, _one_line(e), version)
    if not _is_task(obj):
        error = f"TypeError: {ep.value} is not a kokorozoo Task subclass"
        return TaskEntry(ep.name, ep.value, dist, None, error, version)
    return TaskEntry(ep.name, ep.value, dist, obj, None, version)


#: The base every task derives from, named rather than imported: the registry sits below the
#: tasks (the model-file reader in ``kokorozoo.tasks`` looks tasks up here).
TASK_BASE = "kokorozoo.tasks.base.Task"


def _is_task(obj: object) -> bool:
    return isinstance(obj, type) and any(f"{c.__module__}.{c.__qualname__}" == TASK_BASE for c in obj.__mro__)


def _kind(entry: TaskEntry) -> str:
    return "the core task" if entry.is_core else "the task"


def _shadowing(entry: TaskEntry, taken: TaskEntry, what: str, fix: str) -> TaskEntry:
    """``entry`` marked as shadowing ``taken``: a one-line status for the table and the error."""
    message = (
        f"{entry.describe()} would shadow {_kind(taken)} {taken.name!r} ({taken.target}) of {taken.provider}: "
        f"{what} is taken; {fix} in {entry.distribution} or uninstall it"
    )
    status = f"shadows {_kind(taken)} {taken.name!r} of {taken.provider}"
    return TaskEntry(entry.name, entry.target, entry.distribution, entry.cls, status, entry.version, message)


def _one_line(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return f"{type(e).__name__}: {text[0]}" if text else type(e).__name__


def _order(ep: EntryPoint) -> tuple[bool, str, str]:
    """Core first, then plugins by distribution: the first of two clashing tasks keeps the name."""
    return _distribution(ep) != CORE_DISTRIBUTION, _distribution(ep), ep.name


def _distribution(ep: EntryPoint) -> str:
    return ep.dist.name if ep.dist is not None else "?"


def _version(ep: EntryPoint) -> str:
    return ep.dist.version if ep.dist is not None else ""
