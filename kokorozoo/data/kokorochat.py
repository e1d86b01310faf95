"""KokoroChat records, the validating loader and where the data is found.

One JSON file per dialogue (the public GitHub layout, ``kokorochat_dialogues/<id>.json``). Every
file and field is checked; a bad one raises :class:`DataError` naming the file and the field, or
is skipped and reported with ``on_error="skip"``. Nothing valid is ever dropped.
"""

from __future__ import annotations

import gc
import json
import logging
import os
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, Literal, NamedTuple

log = logging.getLogger(__name__)


class FeedbackItem(NamedTuple):
    """One of the 20 client-feedback items (0-5), under its English and Japanese keys."""

    en: str
    jp: str


#: The 20 feedback items D1..D20 in the paper's order. The English key ``clarified_issues_cleraly``
#: keeps the upstream typo because that is how the files spell it.
FEEDBACK_ITEMS: tuple[FeedbackItem, ...] = (
    FeedbackItem("felt_heard_and_understood", "聴いてもらえた、わかってもらえたと感じた"),
    FeedbackItem("felt_respected", "尊重されたと感じた"),
    FeedbackItem("gained_new_insights", "新しい気づきや体験があった"),
    FeedbackItem("felt_hopeful_or_expectant", "希望や期待を感じられた"),
    FeedbackItem("concerns_were_addressed", "取り組みたかったことを扱えた"),
    FeedbackItem("thought_through_concerns_together", "一緒に考えながら取り組めた"),
    FeedbackItem("conversation_had_good_rhythm", "やりとりのリズムがあっていた"),
    FeedbackItem("conversation_felt_comfortable", "居心地のよいやりとりだった"),
    FeedbackItem("felt_appropriate_and_satisfying", "全体として適切でよかった"),
    FeedbackItem("conversation_was_valuable", "今回の相談は価値があった"),
    FeedbackItem("conversation_started_smoothly", "相談開始の円滑さ"),
    FeedbackItem(
        "conversation_ended_well", "相談終了のタイミング（不必要に聴きすぎていないか）、円滑さ"
    ),
    FeedbackItem("showed_acceptance_and_empathy", "受容・共感"),
    FeedbackItem("provided_acknowledgment_and_affirmation", "肯定・承認"),
    FeedbackItem("asked_effective_questions", "的確な質問による会話の促進"),
    FeedbackItem("summarized_key_points_effectively", "要約"),
    FeedbackItem("clarified_issues_cleraly", "問題の明確化"),
    FeedbackItem("helped_identify_goals", "この相談での目標の明確化"),
    FeedbackItem("offered_actionable_suggestions", "次の行動につながる提案"),
    FeedbackItem("encouraged_and_instilled_hope", "勇気づけ・希望の喚起"),
)
ITEM_NAMES: tuple[str, ...] = tuple(item.en for item in FEEDBACK_ITEMS)
NUM_ITEMS = len(FEEDBACK_ITEMS)
ITEM_MAX = 5
SCORE_MAX = NUM_ITEMS * ITEM_MAX

#: Screening flags: English key -> Japanese key. A flag is checked when its value is "チェックあり".
SCREENING_FLAGS: dict[str, str] = {
    "harmful_due_to_ignorance": "無理解と軽率さによる傷つけ発言",
    "other_potentially_unethical": "その他の倫理違反が疑われる発言",
    "unwilling_to_continue": "離脱",
}
FLAG_CHECKED = "チェックあり"

#: Review metadata: English key -> Japanese key.
REVIEW_META: dict[str, str] = {
    "evaluation_id": "評価ID",
    "evaluation_created_at": "評価作成日時",
    "client_id": "クライアント役ID",
    "counselor_id": "カウンセラー役ID",
    "score": "点数",
}

ROLES = ("counselor", "client")
Role = Literal["counselor", "client"]

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


class DataError(ValueError):
    """A KokoroChat file that does not hold what it should: names the file and the field."""

    def __init__(self, source: str, field: str, problem: str):
        self.source, self.field, self.problem = source, field, problem
        super().__init__(f"{source}: {field}: {problem}")


class Utterance(NamedTuple):
    role: Role
    time: datetime
    text: str


@dataclass(frozen=True, slots=True)
class Topic:
    main_jp: str
    main_en: str
    sub: str


@dataclass(frozen=True, slots=True)
class Feedback:
    """The client's review: total score (0-100), 20 items (0-5) and the screening flags."""

    evaluation_id: int
    created_at: datetime
    client_id: int
    counselor_id: int
    score: int
    items: tuple[int, ...]
    harmful_due_to_ignorance: bool
    other_potentially_unethical: bool
    unwilling_to_continue: bool


@dataclass(frozen=True, slots=True)
class Dialogue:
    id: str
    utterances: tuple[Utterance, ...]
    topic: Topic
    feedback: Feedback

    @property
    def score(self) -> int:
        return self.feedback.score


def expected_total(items: Iterable[int], harmful: bool, unethical: bool, unwilling: bool) -> int:
    """The total the release computes: the item sum, halved (rounded down) when the client was
    unwilling to continue, zero when a harmful or unethical remark was flagged."""
    if harmful or unethical:
        return 0
    total = sum(items)
    return total // 2 if unwilling else total


# ---------------------------------------------------------------------------------------------
# Validation: one dict (a file's JSON, or a hub row) -> Dialogue, or DataError naming the field.


class _Checker:
    """Field-by-field checks for one source; each failure names ``source`` and the dotted field."""

    def __init__(self, source: str):
        self.source = source

    def fail(self, field: str, problem: str) -> DataError:
        return DataError(self.source, field, problem)

    def get(self, obj: Mapping, key: str, field: str) -> Any:
        if key not in obj:
            raise self.fail(field, "missing")
        return obj[key]

    def mapping(self, value: Any, field: str) -> Mapping:
        if not isinstance(value, Mapping):
            raise self.fail(field, f"expected an object, got {_kind(value)}")
        return value

    def string(self, value: Any, field: str, allow_empty: bool = False) -> str:
        if not isinstance(value, str):
            raise self.fail(field, f"expected a string, got {_kind(value)}")
        if not allow_empty and not value.strip():
            raise self.fail(field, "empty string")
        return value

    def integer(self, value: Any, field: str, low: int | None = None, high: int | None = None) -> int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise self.fail(field, f"expected an integer, got {_kind(value)}")
        if (low is not None and value < low) or (high is not None and value > high):
            raise self.fail(field, f"{value} is outside {low}-{high}")
        return value

    def time(self, value: Any, field: str) -> datetime:
        text = self.string(value, field)
        try:
            return datetime.fromisoformat(text)
        except ValueError:
            raise self.fail(field, f"not an ISO-8601 time: {text!r}") from None

    def flag(self, value: Any, field: str) -> bool:
        if value is None:
            return False
        if value == FLAG_CHECKED:
            return True
        raise self.fail(field, f"expected null or {FLAG_CHECKED!r}, got {value!r}")


def _kind(value: Any) -> str:
    return "null" if value is None else type(value).__name__


def parse_dialogue(raw: Any, dialogue_id: str, source: str | None = None) -> Dialogue:
    """Validate one KokoroChat record (parsed JSON) and build the typed :class:`Dialogue`."""
    c = _Checker(source or dialogue_id)
    raw = c.mapping(raw, "<file>")

    turns = c.get(raw, "dialogue", "dialogue")
    if not isinstance(turns, list):
        raise c.fail("dialogue", f"expected a list, got {_kind(turns)}")
    if not turns:
        raise c.fail("dialogue", "empty dialogue")
    utterances = _fast_utterances(turns)
    if utterances is None:
        utterances = [_checked_utterance(c, turn, i) for i, turn in enumerate(turns)]

    topic_raw = c.mapping(c.get(raw, "topic", "topic"), "topic")
    topic = Topic(
        *(c.string(c.get(topic_raw, k, f"topic.{k}"), f"topic.{k}") for k in ("main_jp", "main_en", "sub"))
    )

    feedback = _parse_review(c, raw)
    jp = raw.get("review_by_client_jp")
    if jp is not None:
        _check_japanese_review(c, jp, feedback)
    return Dialogue(dialogue_id, tuple(utterances), topic, feedback)


def _fast_utterances(turns: list) -> list[Utterance] | None:
    """The common, all-valid case without per-field bookkeeping (600k utterances in about a
    second); on anything unusual it returns None and :func:`_checked_utterance` names the field."""
    make, parse_time, roles = tuple.__new__, datetime.fromisoformat, ROLES
    out = []
    try:
        for turn in turns:
            role, text = turn["role"], turn["utterance"]
            if role not in roles or type(text) is not str or not text or text.isspace():
                return None
            out.append(make(Utterance, (role, parse_time(turn["time"]), text)))
    except (KeyError, TypeError, ValueError):
        return None
    return out


def _checked_utterance(c: _Checker, turn: Any, i: int) -> Utterance:
    field = f"dialogue[{i}]"
    turn = c.mapping(turn, field)
    role = c.get(turn, "role", f"{field}.role")
    if role not in ROLES:
        raise c.fail(f"{field}.role", f"unknown role {role!r} (expected 'counselor' or 'client')")
    return Utterance(
        role,
        c.time(c.get(turn, "time", f"{field}.time"), f"{field}.time"),
        c.string(c.get(turn, "utterance", f"{field}.utterance"), f"{field}.utterance"),
    )


def _parse_review(c: _Checker, raw: Mapping) -> Feedback:
    base = "review_by_client_en"
    review = c.mapping(c.get(raw, base, base), base)

    def field(key: str) -> Any:
        return c.get(review, key, f"{base}.{key}")

    items = tuple(c.integer(field(name), f"{base}.{name}", 0, ITEM_MAX) for name in ITEM_NAMES)
    flags = {name: c.flag(field(name), f"{base}.{name}") for name in SCREENING_FLAGS}
    score = c.integer(field("score"), f"{base}.score", 0, SCORE_MAX)
    expected = expected_total(
        items, flags["harmful_due_to_ignorance"], flags["other_potentially_unethical"], flags["unwilling_to_continue"]
    )
    if score != expected:
        raise c.fail(
            f"{base}.score",
            f"{score} contradicts the items (sum {sum(items)}) and screening flags, which give {expected}",
        )
    return Feedback(
        evaluation_id=c.integer(field("evaluation_id"), f"{base}.evaluation_id", 0),
        created_at=c.time(field("evaluation_created_at"), f"{base}.evaluation_created_at"),
        client_id=c.integer(field("client_id"), f"{base}.client_id", 0),
        counselor_id=c.integer(field("counselor_id"), f"{base}.counselor_id", 0),
        score=score,
        items=items,
        **flags,
    )


def _check_japanese_review(c: _Checker, jp: Any, feedback: Feedback) -> None:
    """The Japanese review repeats the English one; a value that differs is an error."""
    base = "review_by_client_jp"
    jp = c.mapping(jp, base)
    expected: dict[str, Any] = {
        REVIEW_META["evaluation_id"]: feedback.evaluation_id,
        REVIEW_META["client_id"]: feedback.client_id,
        REVIEW_META["counselor_id"]: feedback.counselor_id,
        REVIEW_META["score"]: feedback.score,
    }
    expected.update({item.jp: value for item, value in zip(FEEDBACK_ITEMS, feedback.items)})
    for key, value in expected.items():
        got = c.get(jp, key, f"{base}.{key}")
        if got != value or isinstance(got, bool):
            raise c.fail(f"{base}.{key}", f"{got!r} differs from review_by_client_en ({value!r})")
    for en, key in SCREENING_FLAGS.items():
        if c.flag(c.get(jp, key, f"{base}.{key}"), f"{base}.{key}") != getattr(feedback, en):
            raise c.fail(f"{base}.{key}", "differs from review_by_client_en")


def dialogue_record(dialogue: Dialogue) -> dict[str, Any]:
    """``dialogue`` as a KokoroChat file holds it (the release's keys, the review in English and
    Japanese): :func:`parse_dialogue` reads it back into an equal record. For sessions kokorozoo
    writes (``kokorozoo chat`` and ``simulate``)."""
    f = dialogue.feedback
    flags = {name: FLAG_CHECKED if getattr(f, name) else None for name in SCREENING_FLAGS}
    meta = {"evaluation_id": f.evaluation_id, "evaluation_created_at": f.created_at.isoformat(),
            "client_id": f.client_id, "counselor_id": f.counselor_id, "score": f.score}
    items = dict(zip(FEEDBACK_ITEMS, f.items))
    return {
        "dialogue": [{"role": u.role, "time": u.time.isoformat(), "utterance": u.text} for u in dialogue.utterances],
        "topic": {"main_jp": dialogue.topic.main_jp, "main_en": dialogue.topic.main_en, "sub": dialogue.topic.sub},
        "review_by_client_jp": {
            **{REVIEW_META[k]: v for k, v in meta.items()},
            **{item.jp: v for item, v in items.items()},
            **{SCREENING_FLAGS[k]: v for k, v in flags.items()},
        },
        "review_by_client_en": {**meta, **{item.en: v for item, v in items.items()}, **flags},
    }


# ---------------------------------------------------------------------------------------------
# Loading


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
        raise DataError(source, "<file>", f"not UTF-8 (byte {e.start}: {data[e.start:e.start + 1]!r})") from None
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


def load_kokorochat(root: str | os.PathLike | None = None, on_error: OnError = "raise", progress: bool = False) -> KokoroChat:
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


HUB_DATASET = "UEC-InabaLab/KokoroChat"


def load_kokorochat_hub(
    name: str = HUB_DATASET, split: str = "train", on_error: OnError = "raise", revision: str | None = None
) -> KokoroChat:
    """Load KokoroChat from the Hugging Face hub through ``datasets`` and validate every row.

    Offline (``HF_HUB_OFFLINE=1``) or without a reachable hub this ends at once in a
    :class:`DataError` that says so, never a hang.
    """
    from huggingface_hub import constants

    if constants.HF_HUB_OFFLINE:
        raise DataError(name, "<hub>", "the hub is switched off (HF_HUB_OFFLINE=1); load a local copy with --root")
    os.environ.setdefault("HF_HUB_ETAG_TIMEOUT", "10")
    os.environ.setdefault("HF_HUB_DOWNLOAD_TIMEOUT", "30")
    import datasets

    try:
        rows = datasets.load_dataset(name, split=split, revision=revision)
    except Exception as e:  # noqa: BLE001 - every failure here means "not reachable or not there"
        raise DataError(name, "<hub>", f"could not be loaded from the hub ({type(e).__name__}: {e})") from None
    return dialogues_from_rows(rows, on_error, source=name)


# ---------------------------------------------------------------------------------------------
# Where the data is


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
