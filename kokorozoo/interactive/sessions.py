"""A conversation held with models, as a KokoroChat record: its utterances (a turn is saved as one
utterance per line, so the loader's merging gives the turn back), when a counselor closes, and
the file it is saved as.

**The review of a session nobody rated.** The KokoroChat format requires the client's review and
the loader validates it (items 0-5, a total that matches them). A session saved here carries a
placeholder the validator accepts: ids 0, every item 0, total 0, no screening flag; the file says
so in its ``kokorozoo`` entry (``review``), beside what wrote it and any predicted scores. The
loader is unchanged (a loader that accepted a missing review would also accept a real file that
lost its review), so ``kokorozoo data stats --root`` reads saved sessions like the release.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from kokorozoo.data.dialogue import Turn, merge_utterances
from kokorozoo.data.validation import dialogue_record
from kokorozoo.records import ITEM_NAMES, NUM_ITEMS, Dialogue, Feedback, Role, Topic, Utterance

if TYPE_CHECKING:
    from kokorozoo.generation import PromptCache

#: A counselor's turn containing one of these closes the session. On KokoroChat, 96% of dialogues
#: have a counselor turn with one of them; the first one comes at a median 94% of the way through
#: the counselor's turns, before half way in 0.6% of dialogues.
CLOSING_PHRASES = ("ありがとうございました", "お疲れ様でした", "終了しま", "失礼します", "失礼いたします")

UNRATED = (
    "placeholder: nobody rated this session, so review_by_client_en/jp hold zeros (ids 0, every item 0,"
    " score 0, no flags) only for the KokoroChat loader to accept the file; predicted scores, if any,"
    " are under kokorozoo.predicted"
)

#: The counselor's first turn in a chat unless ``--opening`` says otherwise: KokoroChat's sessions
#: open with the counselor's greeting, and a model never learns a turn with no history before it.
OPENING = "こんにちは。本日はよろしくお願いいたします。"

#: A chat's topic (the format requires one; a chat has no annotated topic).
CHAT_TOPIC = Topic(main_jp="未設定", main_en="Unspecified", sub="kokorozoo chat")


def closes(text: str) -> bool:
    """Whether a counselor's turn closes the session (see :data:`CLOSING_PHRASES`)."""
    return any(phrase in text for phrase in CLOSING_PHRASES)


def turn_lines(text: str) -> list[str]:
    """A turn as the utterances it is saved as: its non-blank lines (an utterance is never empty)."""
    return [line for line in text.strip().splitlines() if line.strip()]


def other(role: Role) -> Role:
    return "client" if role == "counselor" else "counselor"


@dataclass
class Session:
    """A conversation under way: its utterances, the caches of each speaker's computed history,
    and why it ended (``None`` while open)."""

    id: str
    topic: Topic
    utterances: list[Utterance] = field(default_factory=list)
    caches: dict[Role, PromptCache | None] = field(default_factory=dict)
    ended: str | None = None

    def turns(self) -> list[Turn]:
        return merge_utterances(self.utterances)

    @property
    def next_role(self) -> Role:
        """Who speaks next: the other one (the counselor opens)."""
        return other(self.utterances[-1].role) if self.utterances else "counselor"

    def add(self, role: Role, text: str, time: datetime) -> bool:
        """Add a turn, one utterance per line of :func:`turn_lines`; False (nothing added) for an
        empty turn."""
        lines = turn_lines(text)
        self.utterances += [Utterance(role, time, line) for line in lines]
        return bool(lines)

    def dialogue(self) -> Dialogue:
        """The session as a record, with the placeholder review (see the module docstring)."""
        at = self.utterances[-1].time if self.utterances else datetime.now().replace(microsecond=0)
        unrated = Feedback(
            evaluation_id=0,
            created_at=at,
            client_id=0,
            counselor_id=0,
            score=0,
            items=(0,) * NUM_ITEMS,
            harmful_due_to_ignorance=False,
            other_potentially_unethical=False,
            unwilling_to_continue=False,
        )
        return Dialogue(self.id, tuple(self.utterances), self.topic, unrated)

    def save(self, path: str | Path, about: dict[str, Any], predicted: list[int | None] | None = None) -> Path:
        """Write the session as a KokoroChat file; ``about`` (what made it) and the predicted items
        go in its ``kokorozoo`` entry, which the loader ignores."""
        record = dialogue_record(self.dialogue())
        extra: dict[str, Any] = {"review": UNRATED, **about, "ended": self.ended}
        if predicted is not None:
            extra["predicted"] = {"items": dict(zip(ITEM_NAMES, predicted)), "total": total(predicted)}
        record["kokorozoo"] = extra
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(json.dumps(record, ensure_ascii=False, indent=2) + "\n", encoding="utf-8")
        os.replace(tmp, path)
        return path


def total(items: list[int | None]) -> int | None:
    """The 0-100 total of predicted items (no screening flag is predicted); None if one is missing."""
    return None if any(v is None for v in items) else sum(items)
