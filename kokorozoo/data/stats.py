"""Dataset statistics: the paper's Table 3 and what a researcher checks before training."""

from __future__ import annotations

import statistics
from collections import Counter
from collections.abc import Iterable
from typing import Any

from kokorozoo.data.dialogue import dialogue_turns, merge_utterances
from kokorozoo.records import SCREENING_FLAGS, Dialogue

HISTOGRAM_BIN = 10
ROLES = ("client", "counselor")
#: Eight numbers that describe a dialogue without reading it (the paper's Figure 4 finds signal
#: in them): what the score baseline and the heads' ``features`` option read.
STATISTICS = (
    "client_characters",
    "counselor_characters",
    "client_utterances",
    "counselor_utterances",
    "merged_turns",
    "duration_minutes",
    "client_response_seconds",
    "counselor_response_seconds",
)


def dialogue_statistics(dialogue: Dialogue) -> tuple[float, ...]:
    """The :data:`STATISTICS` of one dialogue: lengths, counts, duration and how long each speaker
    took to answer the other on average (seconds from the other's last utterance to one's first)."""
    chars = {role: 0 for role in ROLES}
    utterances = {role: 0 for role in ROLES}
    waits: dict[str, list[float]] = {role: [] for role in ROLES}
    previous = None
    for u in dialogue.utterances:
        chars[u.role] += len(u.text)
        utterances[u.role] += 1
        if previous is not None and previous.role != u.role:
            waits[u.role].append(max(0.0, (u.time - previous.time).total_seconds()))
        previous = u
    duration = max(0.0, (dialogue.utterances[-1].time - dialogue.utterances[0].time).total_seconds()) / 60
    mean_wait = {role: statistics.fmean(w) if w else 0.0 for role, w in waits.items()}
    return (
        *(float(chars[r]) for r in ROLES),
        *(float(utterances[r]) for r in ROLES),
        float(len(dialogue_turns(dialogue))),
        duration,
        *(mean_wait[r] for r in ROLES),
    )


def dataset_stats(dialogues: Iterable[Dialogue]) -> dict[str, Any]:
    """Table 3 figures (speakers, utterances, averages), merged turns, scores, flags, topics."""
    dialogues = list(dialogues)
    n = len(dialogues)
    utterances: Counter[str] = Counter()
    chars: Counter[str] = Counter()
    turns: Counter[str] = Counter()
    topics: Counter[str] = Counter()
    flags: Counter[str] = Counter()
    clients, counselors = set(), set()
    for d in dialogues:
        clients.add(d.feedback.client_id)
        counselors.add(d.feedback.counselor_id)
        topics[d.topic.main_en] += 1
        for flag in SCREENING_FLAGS:
            flags[flag] += getattr(d.feedback, flag)
        for u in d.utterances:
            utterances[u.role] += 1
            chars[u.role] += len(u.text)
        for t in merge_utterances(d.utterances):
            turns[t.role] += 1

    def per(a: float, b: float) -> float:
        return round(a / b, 2) if b else 0.0

    total_utt, total_chars, total_turns = sum(utterances.values()), sum(chars.values()), sum(turns.values())
    scores = [d.score for d in dialogues]
    histogram = Counter(min(s // HISTOGRAM_BIN, 9) for s in scores)
    return {
        "dialogues": n,
        "speakers": {"total": len(clients | counselors), "counselor": len(counselors), "client": len(clients)},
        "utterances": {"total": total_utt, "counselor": utterances["counselor"], "client": utterances["client"]},
        "avg_utterances_per_dialogue": {
            "total": per(total_utt, n),
            "counselor": per(utterances["counselor"], n),
            "client": per(utterances["client"], n),
        },
        "avg_characters_per_utterance": {
            "total": per(total_chars, total_utt),
            "counselor": per(chars["counselor"], utterances["counselor"]),
            "client": per(chars["client"], utterances["client"]),
        },
        "merged_turns": {"total": total_turns, "counselor": turns["counselor"], "client": turns["client"]},
        "avg_merged_turns_per_dialogue": per(total_turns, n),
        "score": {
            "mean": round(statistics.fmean(scores), 2) if scores else 0.0,
            "median": statistics.median(scores) if scores else 0,
            "histogram": {
                f"{b * HISTOGRAM_BIN}-{b * HISTOGRAM_BIN + HISTOGRAM_BIN - 1 if b < 9 else 100}": histogram[b]
                for b in range(10)
            },
        },
        "screening_flags": {flag: flags[flag] for flag in SCREENING_FLAGS},
        "topics": dict(topics.most_common()),
    }


def format_stats(stats: dict[str, Any], title: str) -> str:
    """A human-readable report in the shape of the paper's Table 3 plus the extras."""
    s = stats
    lines = [title, "", f"{'':32}{'total':>12}{'counselor':>12}{'client':>12}"]

    def row(label: str, values: dict[str, Any], fmt: str = "{:,}") -> None:
        cells = "".join(f"{fmt.format(values[k]):>12}" for k in ("total", "counselor", "client"))
        lines.append(f"{label:32}{cells}")

    lines.append(f"{'dialogues':32}{s['dialogues']:>12,}")
    row("speakers", s["speakers"])
    row("utterances", s["utterances"])
    row("avg utterances / dialogue", s["avg_utterances_per_dialogue"], "{:.2f}")
    row("avg characters / utterance", s["avg_characters_per_utterance"], "{:.2f}")
    row("merged turns", s["merged_turns"])
    lines.append(f"{'avg merged turns / dialogue':32}{s['avg_merged_turns_per_dialogue']:>12.2f}")
    lines += ["", f"total score: mean {s['score']['mean']:.2f}, median {s['score']['median']}"]
    peak = max(s["score"]["histogram"].values(), default=0) or 1
    for label, count in s["score"]["histogram"].items():
        lines.append(f"  {label:>7} {count:>6,} {'#' * round(40 * count / peak)}")
    lines += ["", "screening flags:"]
    lines += [f"  {flag:32}{count:>6,}" for flag, count in s["screening_flags"].items()]
    lines += ["", "topics (main_en):"]
    lines += [f"  {topic:32}{count:>6,}" for topic, count in s["topics"].items()]
    return "\n".join(lines)
