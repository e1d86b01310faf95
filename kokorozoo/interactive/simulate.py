"""``kokorozoo simulate``: a counselor model and a client model hold whole sessions, and a score
model rates them.

Each session opens from a real test dialogue of the response split (score >= 99; which ones is
drawn with the seed): its topic and its first ``opening_turns`` merged turns, utterances and
times as they are. Then the two models alternate until the session has ``turns`` turns (the
opening included), the counselor closes (a closing phrase, see
:data:`~kokorozoo.interactive.sessions.CLOSING_PHRASES`) or a model's turn is empty.

All open sessions advance together: a round gives every open session its next turn, one batch per
model (``batch_size`` sessions at most; 0 = all), each session's prompt reusing the key/value cache
of the history that model computed for it in its previous turn. Decoding is greedy, so a seed
fixes everything; a generated turn is timed 30 s after the one before it (the models have no
clock).

Output: ``kokorochat_dialogues/<id>.json`` (read by ``kokorozoo data stats --root OUT``),
``scores.csv`` (the predicted items of every session beside the items its opening dialogue
received) and ``summary.json`` (how sessions ended, and the predicted against the real scores).
"""

from __future__ import annotations

import csv
import json
import random
import statistics
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

from kokorozoo.data.dialogue import merge_utterances
from kokorozoo.data.splits import response_split
from kokorozoo.errors import UsageError
from kokorozoo.interactive.judged import DIMENSIONS, END_MARK, MIN_EXCHANGES, Judge, summarize_ratings
from kokorozoo.interactive.models import Rater, Speaker
from kokorozoo.interactive.sessions import Session, closes, total
from kokorozoo.records import ITEM_NAMES, Dialogue

TURN_INTERVAL = timedelta(seconds=30)
SESSIONS_FOLDER = "kokorochat_dialogues"


def check_settings(sessions: int, turns: int, opening_turns: int) -> None:
    """Settings that cannot work, said before any model loads."""
    if sessions < 1:
        raise UsageError(f"--sessions must be at least 1, got {sessions}")
    if opening_turns < 1 or turns <= opening_turns:
        raise UsageError(f"--turns ({turns}) must be more than --opening-turns ({opening_turns}), which is at least 1")


def openings(dialogues: Sequence[Dialogue], sessions: int, seed: int) -> list[Dialogue]:
    """The test dialogues the sessions open from: the response split's test part in a seeded
    order (cycled when more sessions than dialogues are asked for)."""
    test = response_split(dialogues, "high", seed).test
    if not test:
        raise UsageError("no test dialogue (score >= 99) to open sessions from")
    order = random.Random(seed).sample(test, len(test))
    return [order[i % len(order)] for i in range(sessions)]


def open_session(index: int, source: Dialogue, opening_turns: int) -> Session:
    """A session holding ``source``'s topic and first ``opening_turns`` turns."""
    turns = merge_utterances(source.utterances)
    if len(turns) < opening_turns:
        raise UsageError(f"dialogue {source.id} has {len(turns)} turns, fewer than --opening-turns {opening_turns}")
    kept = sum(turn.n_utterances for turn in turns[:opening_turns])
    return Session(f"sim{index:04d}-{source.id}", source.topic, list(source.utterances[:kept]))


@dataclass
class Simulation:
    """Sessions between ``counselor`` and ``client`` (see the module docstring)."""

    counselor: Speaker
    client: Speaker
    turns: int
    batch_size: int = 0
    #: A mark by which the client ends a session (Appendix E's ``<end>``), honoured once the session
    #: has ``end_after_turns`` turns and removed from the text either way; None: no such mark.
    end_mark: str | None = None
    end_after_turns: int = 0

    def run(self, sessions: list[Session]) -> dict[str, Any]:
        """Advance ``sessions`` until every one has ended; returns how long it took."""
        speakers = {"counselor": self.counselor, "client": self.client}
        started, rounds, generated = time.perf_counter(), 0, 0
        for session in sessions:
            self._check_end(session)
        while open_sessions := [s for s in sessions if s.ended is None]:
            due = {role: [s for s in open_sessions if s.next_role == role] for role in speakers}
            for role, speaker in speakers.items():
                size = self.batch_size or len(due[role]) or 1
                for start in range(0, len(due[role]), size):
                    self._advance(speaker, due[role][start : start + size])
            rounds += 1
            generated += len(open_sessions)
        seconds = time.perf_counter() - started
        return {
            "rounds": rounds,
            "turns_generated": generated,
            "seconds": seconds,
            "seconds_per_round": seconds / max(rounds, 1),
            "turns_per_second": generated / seconds if seconds else 0.0,
        }

    def _advance(self, speaker: Speaker, batch: list[Session]) -> None:
        """The next turn of every session in ``batch``, in one generation."""
        role = speaker.role
        texts, caches = speaker.next_turns([s.turns() for s in batch], [s.caches.get(role) for s in batch])
        for session, text, cache in zip(batch, texts, caches):
            session.caches[role] = cache
            ending = False
            if text is not None and role == "client" and self.end_mark and self.end_mark in text:
                text = text.replace(self.end_mark, "").strip()
                ending = len(session.turns()) >= self.end_after_turns
            if text is None:  # an endpoint's request that failed after its retries: counted, not dropped
                session.ended = "request_failed"
            elif not session.add(role, text, session.utterances[-1].time + TURN_INTERVAL):
                session.ended = "client_ended" if ending else "empty_turn"
            elif role == "counselor" and closes(text):
                session.ended = "closed"
            elif ending:
                session.ended = "client_ended"
            self._check_end(session)

    def _check_end(self, session: Session) -> None:
        if session.ended is None and len(session.turns()) >= self.turns:
            session.ended = "turns"
        if session.ended is not None:
            session.caches.clear()  # a finished session's history is not needed again


def simulate(
    data: Sequence[Dialogue],
    counselor: Speaker,
    client: Speaker,
    rater: Rater | None,
    sessions: int,
    turns: int,
    opening_turns: int,
    seed: int,
    out: Path,
    batch_size: int = 0,
    prompted_client: bool = False,
    judge: Judge | None = None,
) -> dict[str, Any]:
    """Run the sessions and write them, ``scores.csv`` and ``summary.json`` into ``out`` (with a
    judge, ``judge.csv`` too); returns the summary and the timing (kept out of the files, which a
    seed fixes). ``prompted_client``: the client follows Appendix E's prompt and may end a session
    with its mark (:mod:`kokorozoo.interactive.judged`)."""
    check_settings(sessions, turns, opening_turns)
    sources = openings(data, sessions, seed)
    held = [open_session(i, source, opening_turns) for i, source in enumerate(sources)]
    ends = {"end_mark": END_MARK, "end_after_turns": 2 * MIN_EXCHANGES} if prompted_client else {}
    timing = Simulation(counselor, client, turns, batch_size, **ends).run(held)
    dialogues = [s.dialogue() for s in held]
    items = rater.rate(dialogues) if rater else [None] * len(held)
    ratings = judge.rate(dialogues) if judge else []
    about = {
        "session": "simulated",
        "counselor": counselor.source,
        "client": client.source,
        "seed": seed,
        "opening_turns": opening_turns,
        **({"scorer": rater.source} if rater else {}),
    }
    for session, source, predicted in zip(held, sources, items):
        session.save(out / SESSIONS_FOLDER / f"{session.id}.json", {**about, "opened_from": source.id}, predicted)
    summary = {
        **{k: v for k, v in about.items() if k != "session"},
        "sessions": len(held),
        "turns": turns,
        "ended": dict(sorted(Counter(s.ended for s in held).items())),
        "mean_turns": statistics.fmean(len(s.turns()) for s in held),
    }
    if rater:
        write_scores(out / "scores.csv", held, sources, items)
        summary["scores"] = compare_scores(items, sources)
    if judge:
        write_ratings(out / "judge.csv", held, ratings, items if rater else None)
        summary["judge"] = {"model": judge.source, **summarize_ratings(ratings)}
        if rater:
            summary["judge"]["agreement_with_scorer"] = agreement(ratings, items)
    (out / "summary.json").write_text(json.dumps(summary, ensure_ascii=False, indent=2) + "\n", encoding="utf-8")
    return {"summary": summary, "timing": timing}


def write_scores(path: Path, sessions: list[Session], sources: list[Dialogue], items: list[list[int | None]]) -> None:
    """One row per session: its id, opening dialogue, length, how it ended, the predicted total and
    items, then the opening dialogue's real total and items."""
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(
            [
                "session",
                "opened_from",
                "turns",
                "ended",
                "total",
                *ITEM_NAMES,
                "real_total",
                *(f"real_{name}" for name in ITEM_NAMES),
            ]
        )
        for session, source, predicted in zip(sessions, sources, items):
            writer.writerow(
                [
                    session.id,
                    source.id,
                    len(session.turns()),
                    session.ended,
                    total(predicted),
                    *("" if v is None else v for v in predicted),
                    source.score,
                    *source.feedback.items,
                ]
            )


def write_ratings(
    path: Path, sessions: list[Session], ratings: list[dict[str, int] | None], items: list[list[int | None]] | None
) -> None:
    """One row per session: the judge's four ratings (empty where it gave none) beside the score
    model's predicted total when there is one, so the two can be compared."""
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(
            ["session", "turns", "ended", *DIMENSIONS, "judge_valid", *(["predicted_total"] if items else [])]
        )
        for i, (session, rating) in enumerate(zip(sessions, ratings)):
            row = [session.id, len(session.turns()), session.ended, *(rating[d] if rating else "" for d in DIMENSIONS)]
            row.append(rating is not None)
            if items:
                row.append(total(items[i]))
            writer.writerow(row)


def agreement(ratings: list[dict[str, int] | None], items: list[list[int | None]]) -> dict[str, Any]:
    """How the judge and the score model agree across sessions: Pearson's r between the judge's
    mean rating and the predicted total, over the sessions both rated (None below three, or when
    either side is constant)."""
    pairs = [(statistics.fmean(r.values()), sum(p)) for r, p in zip(ratings, items) if r is not None and None not in p]
    try:
        r = statistics.correlation([a for a, _ in pairs], [b for _, b in pairs]) if len(pairs) >= 3 else None
    except statistics.StatisticsError:  # a constant side
        r = None
    return {"sessions": len(pairs), "pearson_r": None if r is None else round(r, 4)}


def compare_scores(items: list[list[int | None]], sources: list[Dialogue]) -> dict[str, Any]:
    """The simulated sessions' predicted items against the items their opening dialogues received
    (totals are item sums on both sides: no screening flag is predicted)."""
    pairs = [(p, s.feedback.items) for p, s in zip(items, sources) if None not in p]
    if not pairs:
        return {"rated": 0, "invalid": len(items)}

    def mean(values) -> float:
        return round(statistics.fmean(values), 4)

    return {
        "rated": len(pairs),
        "invalid": len(items) - len(pairs),
        "predicted": {
            "total_mean": mean(sum(p) for p, _ in pairs),
            "items_mean": {name: mean(p[i] for p, _ in pairs) for i, name in enumerate(ITEM_NAMES)},
        },
        "real": {
            "total_mean": mean(sum(r) for _, r in pairs),
            "items_mean": {name: mean(r[i] for _, r in pairs) for i, name in enumerate(ITEM_NAMES)},
        },
        "difference": {
            "total_mean": mean(sum(p) - sum(r) for p, r in pairs),
            "items_mae": mean(abs(a - b) for p, r in pairs for a, b in zip(p, r)),
            "items_within_1": mean(abs(a - b) <= 1 for p, r in pairs for a, b in zip(p, r)),
        },
    }
