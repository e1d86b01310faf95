"""``kokorozoo tasks``: every registered task, core and plugins, and whether it can be used."""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence

from kokorozoo.registry import RegistryError, TaskEntry, scan_tasks


def format_tasks(entries: Sequence[TaskEntry]) -> str:
    """The table: name, class (what a config writes as ``class_path``), the distribution
    providing it, and ``ok`` or the reason it cannot be used."""
    if not entries:
        return "no tasks registered (is kokorozoo installed? pip install -e .)"
    rows = [("NAME", "CLASS", "PROVIDED BY", "STATUS")]
    rows += [(e.name, e.class_name, e.provider, "ok" if e.ok else f"error: {e.error}") for e in entries]
    widths = [max(len(row[i]) for row in rows) for i in range(3)]
    lines = ["  ".join([*(cell.ljust(width) for cell, width in zip(row, widths)), row[3]]) for row in rows]
    lines += ["", "A config names a task by its class, e.g. model: {class_path: ResponseTask}."]
    return "\n".join(lines)


def _tasks(args: argparse.Namespace) -> int:
    entries = scan_tasks()
    if args.json:
        rows = [
            {
                "name": e.name,
                "class": e.class_name,
                "class_path": e.class_path,
                "distribution": e.distribution,
                "version": e.version,
                "core": e.is_core,
                "status": "ok" if e.ok else "error",
                "error": e.error,
                "conflict": e.conflict,
            }
            for e in entries
        ]
        print(json.dumps(rows, ensure_ascii=False))
    else:
        print(format_tasks(entries))
    conflicts = [e.conflict for e in entries if e.conflict]
    if conflicts:
        raise RegistryError("; ".join(conflicts))
    return 0


def add_parser(commands: argparse._SubParsersAction) -> None:
    """``kokorozoo tasks``."""
    tasks = commands.add_parser(
        "tasks",
        help="list the registered tasks, core and plugins",
        description="List every task registered under the kokorozoo.tasks entry points (core and installed "
        "plugins): its name, its class (what a config gives as model.class_path), the distribution providing "
        "it, and ok or why it cannot be used. A plugin that fails to import is listed with its error (exit 0); "
        "a plugin that shadows a core task is an error (exit 2).",
    )
    tasks.add_argument("--json", action="store_true", help="print one JSON list")
    tasks.set_defaults(handler=_tasks)
