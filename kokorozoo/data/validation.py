"""The KokoroChat file format, both ways: one record (a file's JSON, or a hub row) checked field
by field into a :class:`~kokorozoo.records.Dialogue`, or :class:`DataError` naming the file
and the field; and a dialogue written back as the release spells it."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

from kokorozoo.records import (
    FEEDBACK_ITEMS,
    ITEM_MAX,
    ITEM_NAMES,
    ROLES,
    SCORE_MAX,
    SCREENING_FLAGS,
    Dialogue,
    Feedback,
    Topic,
    Utterance,
    expected_total,
)

FLAG_CHECKED = "チェックあり"

#: Review metadata: English key -> Japanese key.
REVIEW_META: dict[str, str] = {
    "evaluation_id": "評価ID",
    "evaluation_created_at": "評価作成日時",
    "client_id": "クライアント役ID",
    "counselor_id": "カウンセラー役ID",
    "score": "点数",
}


class DataError(ValueError):
    """A KokoroChat file that does not hold what it should: names the file and the field."""

    def __init__(self, source: str, field: str, problem: str):
        self.source, self.field, self.problem = source, field, problem
        super().__init__(f"{source}: {field}: {problem}")


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
    topic = Topic(*(c.string(c.get(topic_raw, k, f"topic.{k}"), f"topic.{k}") for k in ("main_jp", "main_en", "sub")))

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
    meta = {
        "evaluation_id": f.evaluation_id,
        "evaluation_created_at": f.created_at.isoformat(),
        "client_id": f.client_id,
        "counselor_id": f.counselor_id,
        "score": f.score,
    }
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
