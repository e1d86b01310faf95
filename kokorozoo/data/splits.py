"""The paper's splits, deterministic for a seed and independent of file-system order.

Response generation: test = every dialogue scored 99 or more; the rest is divided by score into
``low`` (< 70), ``high`` (70-98) and ``full`` (<= 98), and the chosen subset is split 90/10 into
train/validation by the seed.

Score prediction: 8:1:1 over all dialogues. The test tenth is drawn once with a fixed seed and
never changes; the seed only redraws train/validation from the rest (the paper's five runs).

Both also come speaker-disjoint (``split="client_disjoint"`` for score prediction,
``"counselor_disjoint"`` for response generation). On the random split almost every test client
also rated training sessions, so a model can score well by recognising the client; drawing whole
speakers keeps every test speaker out of train and validation, which measures what transfers to
people the model has never seen.
"""

from __future__ import annotations

import random
from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Literal

from kokorozoo.data.loader import sort_key
from kokorozoo.records import Dialogue

ResponseSubset = Literal["low", "high", "full"]
ScoreSplitKind = Literal["random", "client_disjoint"]
ResponseSplitKind = Literal["random", "counselor_disjoint"]
SCORE_SPLITS: tuple[str, ...] = ("random", "client_disjoint")
RESPONSE_SPLITS: tuple[str, ...] = ("random", "counselor_disjoint")
RESPONSE_TEST_MIN_SCORE = 99
LOW_BELOW = 70
#: The seed that fixes the score-prediction test set for every run.
SCORE_TEST_SEED = 20250601
SCORE_FRACTIONS = (0.8, 0.1, 0.1)
RESPONSE_VAL_FRACTION = 0.1


@dataclass(frozen=True)
class Split:
    train: list[Dialogue]
    val: list[Dialogue]
    test: list[Dialogue]

    def sizes(self) -> dict[str, int]:
        return {"train": len(self.train), "val": len(self.val), "test": len(self.test)}


def in_subset(score: int, subset: str) -> bool:
    """Whether a dialogue with ``score`` belongs to a response-generation subset (or ``test``)."""
    if subset == "test":
        return score >= RESPONSE_TEST_MIN_SCORE
    if subset == "low":
        return score < LOW_BELOW
    if subset == "high":
        return LOW_BELOW <= score < RESPONSE_TEST_MIN_SCORE
    if subset == "full":
        return score < RESPONSE_TEST_MIN_SCORE
    if subset == "all":
        return True
    raise ValueError(f"unknown subset {subset!r}: expected one of all, low, high, full, test")


def _ordered(dialogues: Iterable[Dialogue]) -> list[Dialogue]:
    return sorted(dialogues, key=lambda d: sort_key(d.id))


def _shuffled(dialogues: Sequence[Dialogue], seed: int) -> list[Dialogue]:
    items = _ordered(dialogues)
    random.Random(seed).shuffle(items)
    return items


def _take(dialogues: list[Dialogue], fraction: float) -> int:
    return int(round(len(dialogues) * fraction))


def _check_kind(kind: str, kinds: tuple[str, ...], task: str) -> None:
    if kind not in kinds:
        raise ValueError(f"unknown {task} split {kind!r}: expected {' or '.join(kinds)}")


def _client(dialogue: Dialogue) -> int:
    return dialogue.feedback.client_id


def _counselor(dialogue: Dialogue) -> int:
    return dialogue.feedback.counselor_id


def _group_take(
    dialogues: Sequence[Dialogue], speaker: Callable[[Dialogue], int], seed: int, n_target: int
) -> tuple[list[Dialogue], list[Dialogue]]:
    """Whole speakers, drawn in a seeded order, until about ``n_target`` dialogues are taken; then
    (taken, rest), each sorted by id.

    A speaker is taken when that brings the count closer to ``n_target``, so one speaker with
    hundreds of sessions cannot swell the part far past its size. Speakers are ordered by id
    before the shuffle, so the draw does not depend on the input order.
    """
    by_speaker: dict[int, list[Dialogue]] = defaultdict(list)
    for dialogue in dialogues:
        by_speaker[speaker(dialogue)].append(dialogue)
    order = sorted(by_speaker)
    random.Random(seed).shuffle(order)
    taken: list[Dialogue] = []
    rest: list[Dialogue] = []
    for key in order:
        group = by_speaker[key]
        gap = n_target - len(taken)
        closer = gap > 0 and abs(gap - len(group)) < gap
        (taken if closer else rest).extend(group)
    return _ordered(taken), _ordered(rest)


def response_split(
    dialogues: Iterable[Dialogue], subset: ResponseSubset = "high", seed: int = 0, split: ResponseSplitKind = "random"
) -> Split:
    """Train/validation 90/10 of ``subset``; test = all dialogues scored >= 99 (sorted by id).

    ``split="counselor_disjoint"`` keeps the same test set and leaves every dialogue of a test
    counselor out of train and validation; validation is then drawn by whole counselors too, so
    the checkpoint is chosen on counselors it was not trained on, as the test asks.
    """
    if subset not in ("low", "high", "full"):
        raise ValueError(f"unknown response subset {subset!r}: expected low, high or full")
    _check_kind(split, RESPONSE_SPLITS, "response")
    dialogues = list(dialogues)
    test = _ordered(d for d in dialogues if in_subset(d.score, "test"))
    if split == "counselor_disjoint":
        test_counselors = {_counselor(d) for d in test}
        pool = [d for d in dialogues if in_subset(d.score, subset) and _counselor(d) not in test_counselors]
        val, train = _group_take(pool, _counselor, seed, _take(pool, RESPONSE_VAL_FRACTION))
        return Split(train=train, val=val, test=test)
    pool = _shuffled([d for d in dialogues if in_subset(d.score, subset)], seed)
    n_val = _take(pool, RESPONSE_VAL_FRACTION)
    return Split(train=_ordered(pool[n_val:]), val=_ordered(pool[:n_val]), test=test)


def score_split(dialogues: Iterable[Dialogue], seed: int = 0, split: ScoreSplitKind = "random") -> Split:
    """8:1:1 train/validation/test; the test part is the same for every seed.

    ``split="client_disjoint"`` draws whole clients: about a tenth of the dialogues for test (the
    same clients for every seed), about a tenth for validation (redrawn by the seed), so no test
    client appears in train or validation and no validation client in train.
    """
    _check_kind(split, SCORE_SPLITS, "score")
    if split == "client_disjoint":
        dialogues = list(dialogues)
        n_part = _take(dialogues, SCORE_FRACTIONS[2])
        test, rest = _group_take(dialogues, _client, SCORE_TEST_SEED, n_part)
        val, train = _group_take(rest, _client, seed, _take(dialogues, SCORE_FRACTIONS[1]))
        return Split(train=train, val=val, test=test)
    everything = _shuffled(list(dialogues), SCORE_TEST_SEED)
    n_test = _take(everything, SCORE_FRACTIONS[2])
    rest = _shuffled(everything[n_test:], seed)
    n_val = _take(everything, SCORE_FRACTIONS[1])
    return Split(train=_ordered(rest[n_val:]), val=_ordered(rest[:n_val]), test=_ordered(everything[:n_test]))


def training_dialogues(dialogues: Iterable[Dialogue]) -> list[Dialogue]:
    """Dialogues in no task's test set: safe to fit anything on (e.g. the tiny tokenizer)."""
    dialogues = list(dialogues)
    score_test = {d.id for d in score_split(dialogues).test}
    return [d for d in _ordered(dialogues) if d.id not in score_test and not in_subset(d.score, "test")]


def tokenizer_texts(dialogues: Iterable[Dialogue], n_dialogues: int | None = None, seed: int = 0) -> list[str]:
    """Utterance texts of ``n_dialogues`` training dialogues (all when None), drawn by ``seed``."""
    pool = training_dialogues(dialogues)
    if n_dialogues is not None and n_dialogues < len(pool):
        pool = _ordered(random.Random(seed).sample(pool, n_dialogues))
    return [u.text for d in pool for u in d.utterances]
