"""The package's floors: every import, lazy ones included, goes to the same floor or below, and no
two rooms import each other round a circle. A new module has to be given a floor here, which is the
point: where it sits is a decision, not an accident."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "kokorozoo"

#: Floor of each room (a top-level module or subpackage), from the leaves up.
FLOORS = {
    "records": 0,
    "errors": 0,
    "progress": 0,
    "runs": 0,
    "chat_format": 0,
    "registry": 0,  # names the Task base instead of importing it: the tasks look themselves up here
    "data": 1,
    "backbone": 2,
    "metrics": 2,
    "generation": 2,
    "endpoints": 2,
    "tasks": 3,
    "evaluation": 4,
    "interactive": 4,
    "api": 4,
    "serving": 4,
    "cli": 5,
}


def room(path: Path) -> str:
    return path.relative_to(PACKAGE).parts[0].removesuffix(".py")


def imported_rooms(path: Path) -> set[str]:
    """The rooms ``path`` imports (absolute ``kokorozoo.*`` imports and relative ones)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        names = []
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [node.module] + [f"{node.module}.{a.name}" for a in node.names if node.module == "kokorozoo"]
        for name in names:
            parts = name.split(".")
            if parts[0] == "kokorozoo" and len(parts) > 1 and parts[1] in FLOORS:
                found.add(parts[1])
    return found - {room(path)}


#: Every module but the package's own ``__init__``/``__main__``, which sit above the floors.
MODULES = sorted(p for p in PACKAGE.rglob("*.py") if p.parent != PACKAGE or p.stem not in {"__init__", "__main__"})


def test_every_room_has_a_floor():
    rooms = {room(p) for p in MODULES}
    assert rooms == set(FLOORS), "give each new module a floor in FLOORS"


@pytest.mark.parametrize("path", MODULES, ids=lambda p: str(p.relative_to(PACKAGE)))
def test_imports_never_run_back_up(path):
    upward = {r for r in imported_rooms(path) if FLOORS[r] > FLOORS[room(path)]}
    assert not upward, f"{path.relative_to(PACKAGE)} imports {sorted(upward)} from a higher floor"


def test_the_records_are_a_leaf():
    assert imported_rooms(PACKAGE / "records.py") == set()


def test_no_circle_between_rooms():
    edges: dict[str, set[str]] = {r: set() for r in FLOORS}
    for path in MODULES:
        edges[room(path)] |= imported_rooms(path)

    def reach(start: str) -> set[str]:
        seen, todo = set(), list(edges[start])
        while todo:
            r = todo.pop()
            if r not in seen:
                seen.add(r)
                todo.extend(edges[r])
        return seen

    circles = sorted(r for r in FLOORS if r in reach(r))
    assert not circles, f"rooms on a circle: {circles}"
