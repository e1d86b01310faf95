"""Reading KokoroChat: where the release is found, and every file of it read and validated into
:class:`KokoroChat` (the dialogues sorted by id, and the files skipped as invalid).

One JSON file per dialogue (the public GitHub layout, ``kokorochat_dialogues/<id>.json``). A bad
file raises :class:`~kokorozoo.data.validation.DataError` naming the file and the field, or is
skipped and reported with ``on_error="skip"``. Nothing valid is ever dropped.
"""

from __future__ import annotations

import gc
import json
import logging
import os
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from kokorozoo.data.validation import DataError, parse_dialogue
from kokorozoo.records import Dialogue

log = logging.getLogger(__name__)

DEFAULT_SEARCH_PATHS_DOC = """\
Where KokoroChat is looked for, in order:
  1. the path you pass (--root DIR, or root= in Python)
  2. the environment variable KOKOROCHAT_ROOT
  3. ./kokorochat_dialogues and ./kokorochat/kokorochat_dialogues (the current directory)
  4. ../shared/kokorochat/kokorochat_dialogues (beside the current directory)
  5. ../shared/kokorochat/kokorochat_dialogues beside this project's checkout
A path may name the dialogue folder itself or the release folder that holds kokorochat_dialogues/.
Get the data from https://github.com/UEC-InabaLab/KokoroChat (clone it and point KOKOROCHAT_ROOT
at the clone) or load it from the hub with load_kokorochat_hub()."""


OnError = Literal["raise", "skip"]


@dataclass
class KokoroChat:
    """The loaded dialogues (sorted by id) and the files skipped as invalid."""

    dialogues: list[Dialogue]
    skipped: list[DataError]
    root: str

    def __len__(self) -> int:
        return len(self.dialogues)

    def __iter__(self) -> Iterator[Dialogue]:
        return iter(self.dialogues)

    def by_id(self) -> dict[str, Dialogue]:
        return {d.id: d for d in self.dialogues}


def sort_key(dialogue_id: str) -> tuple[int, int, str]:
    """Numeric ids in numeric order, then any others: splits never depend on file-system order."""
    return (0, int(dialogue_id), "") if dialogue_id.isdigit() else (1, 0, dialogue_id)


def read_dialogue_file(path: Path) -> Dialogue:
    """Read and validate one ``<id>.json`` file."""
    source = str(path)
    try:
        data = path.read_bytes()
    except OSError as e:
        raise DataError(source, "<file>", f"cannot be read ({e.strerror})") from None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise DataError(source, "<file>", f"not UTF-8 (byte {e.start}: {data[e.start : e.start + 1]!r})") from None
    try:
        raw = json.loads(text)
    except json.JSONDecodeError as e:
        raise DataError(source, "<json>", f"invalid JSON at line {e.lineno} column {e.colno}: {e.msg}") from None
    return parse_dialogue(raw, path.stem, source)


@contextmanager
def _cyclic_gc_paused():
    """Loading builds about a million small records, none of them in a reference cycle; the cyclic
    collector would rescan all of them again and again (measured: 40% of the load time)."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def _collect(
    named: Iterable[tuple[str, Callable[[], Dialogue]]], on_error: OnError, root: str, progress: bool
) -> KokoroChat:
    if on_error not in ("raise", "skip"):
        raise ValueError(f"on_error must be 'raise' or 'skip', got {on_error!r}")
    dialogues, skipped = [], []
    items = list(named)
    if progress:
        from tqdm.auto import tqdm

        items = tqdm(items, desc="Loading KokoroChat", unit="file", leave=False)
    with _cyclic_gc_paused():
        for _, build in items:
            try:
                dialogues.append(build())
            except DataError as e:
                if on_error == "raise":
                    raise
                log.warning("skipped %s", e)
                skipped.append(e)
    ids = [d.id for d in dialogues]
    if len(set(ids)) != len(ids):
        seen: set[str] = set()
        dup = next(i for i in ids if i in seen or seen.add(i))  # type: ignore[func-returns-value]
        raise DataError(root, "id", f"dialogue id {dup!r} appears more than once")
    dialogues.sort(key=lambda d: sort_key(d.id))
    return KokoroChat(dialogues, skipped, root)


def load_kokorochat(
    root: str | os.PathLike | None = None, on_error: OnError = "raise", progress: bool = False
) -> KokoroChat:
    """Load and validate every ``*.json`` dialogue under ``root`` (see :func:`find_root`).

    ``on_error="raise"`` stops at the first bad file with a :class:`DataError`; ``"skip"`` logs and
    records each bad file in ``.skipped`` and keeps every valid one.
    """
    folder = find_root(root)
    paths = sorted(folder.glob("*.json"), key=lambda p: sort_key(p.stem))
    if not paths:
        raise DataError(str(folder), "<folder>", "holds no *.json dialogue files")
    return _collect(((p.stem, lambda p=p: read_dialogue_file(p)) for p in paths), on_error, str(folder), progress)


def dialogues_from_rows(rows: Iterable[Mapping], on_error: OnError = "raise", source: str = "hub") -> KokoroChat:
    """Validate records that come as rows (the hub dataset) rather than files; ids come from the
    review's evaluation_id, which is the file name in the GitHub release."""

    def build(i: int, row: Mapping) -> Dialogue:
        try:
            review = row.get("review_by_client_en") or {}
            dialogue_id = str(review["evaluation_id"])
        except (AttributeError, KeyError, TypeError):
            raise DataError(f"{source}[{i}]", "review_by_client_en.evaluation_id", "missing") from None
        return parse_dialogue(row, dialogue_id, f"{source}[{i}] (id {dialogue_id})")

    return _collect(((str(i), lambda i=i, r=r: build(i, r)) for i, r in enumerate(rows)), on_error, source, False)


def search_paths(root: str | os.PathLike | None = None) -> list[Path]:
    """The places looked at, in order (see ``DEFAULT_SEARCH_PATHS_DOC``)."""
    paths: list[Path] = []
    if root is not None:
        paths.append(Path(root).expanduser())
    if os.environ.get("KOKOROCHAT_ROOT"):
        paths.append(Path(os.environ["KOKOROCHAT_ROOT"]).expanduser())
    cwd = Path.cwd()
    paths += [cwd / "kokorochat_dialogues", cwd / "kokorochat" / "kokorochat_dialogues"]
    paths.append(cwd.parent / "shared" / "kokorochat" / "kokorochat_dialogues")
    checkout = Path(__file__).resolve().parents[2]
    paths.append(checkout.parent / "shared" / "kokorochat" / "kokorochat_dialogues")
    unique: list[Path] = []
    for p in paths:
        if p not in unique:
            unique.append(p)
    return unique


def _as_dialogue_folder(path: Path) -> Path | None:
    if (path / "kokorochat_dialogues").is_dir():
        return path / "kokorochat_dialogues"
    if path.is_dir():
        return path
    return None


def find_root(root: str | os.PathLike | None = None) -> Path:
    """The dialogue folder: ``root`` if given, else ``KOKOROCHAT_ROOT`` if set, else the first search
    path found. A location the user named (either way) must exist and hold dialogue files: it is
    an error, never a reason to read another copy of the data."""
    named = [(str(root), root)] if root is not None else []
    if not named and os.environ.get("KOKOROCHAT_ROOT"):
        named = [(f"KOKOROCHAT_ROOT={os.environ['KOKOROCHAT_ROOT']}", os.environ["KOKOROCHAT_ROOT"])]
    for label, location in named:
        found = _as_dialogue_folder(Path(location).expanduser())
        if found is None:
            raise DataError(label, "<folder>", "no such directory")
        if not any(found.glob("*.json")):
            raise DataError(label, "<folder>", f"no KokoroChat dialogue files (*.json) in {found}")
        return found
    for path in search_paths():
        found = _as_dialogue_folder(path)
        if found is not None and any(found.glob("*.json")):
            return found
    looked = "\n".join(f"  - {p}" for p in search_paths())
    raise FileNotFoundError(f"KokoroChat was not found. Looked in:\n{looked}\n\n{DEFAULT_SEARCH_PATHS_DOC}")
