"""The paper's splits: deterministic, independent of input order, disjoint, the right sizes; first on
made-up dialogues with scores at every subset boundary (milliseconds: each rule pinned exactly,
which scores go where and how many dialogues each part gets), then on the real KokoroChat files."""

import random
from datetime import datetime

import pytest

from kokorozoo.data import Dialogue, Feedback, Topic, Utterance
from kokorozoo.data.splits import in_subset, response_split, score_split, tokenizer_texts, training_dialogues


def ids(dialogues):
    return [d.id for d in dialogues]


# -- on made-up dialogues ----------------------------------------------------------------------

#: The subset each score belongs to: test >= 99; low < 70; high 70-98; full <= 98; all.
MEMBERSHIP = {
    0: {"low", "full", "all"},
    69: {"low", "full", "all"},
    70: {"high", "full", "all"},
    98: {"high", "full", "all"},
    99: {"test", "all"},
    100: {"test", "all"},
}


def make_dialogue(dialogue_id: str, score: int, text: str = "", client: int = 1, counselor: int = 2) -> Dialogue:
    when = datetime(2024, 1, 1)
    feedback = Feedback(int(dialogue_id), when, client, counselor, score, (3,) * 20, False, False, False)
    utterances = (Utterance("counselor", when, f"{dialogue_id}-a{text}"), Utterance("client", when, f"{dialogue_id}-b"))
    return Dialogue(dialogue_id, utterances, Topic("", "", ""), feedback)


def corpus(n: int = 200) -> list[Dialogue]:
    """``n`` dialogues, ids 1..n, scores cycling over every subset boundary, in shuffled order;
    clients with 1 to 7 sessions each; the test dialogues (scored 99 or more) with counselors
    50-53, who also held a few other sessions, the rest with counselors 1-28."""
    scores = sorted(MEMBERSHIP)

    def counselor(i: int) -> int:
        if i % 6 in (4, 5) or i % 29 == 0:  # the test sessions, and a few others of the same counselors
            return 50 + i % 4
        return 1 + i % 28

    dialogues = [
        make_dialogue(str(i), scores[i % len(scores)], client=i // 4 + i % 3, counselor=counselor(i))
        for i in range(1, n + 1)
    ]
    random.Random(3).shuffle(dialogues)
    return dialogues


def in_id_order(dialogues) -> bool:
    return ids(dialogues) == sorted(ids(dialogues), key=int)


@pytest.mark.mutation
@pytest.mark.parametrize("score", sorted(MEMBERSHIP))
def test_in_subset_at_every_boundary(score):
    assert {s for s in ("test", "low", "high", "full", "all") if in_subset(score, s)} == MEMBERSHIP[score]


@pytest.mark.mutation
def test_unknown_subsets_are_errors():
    with pytest.raises(ValueError, match="unknown subset 'mid': expected one of all, low, high, full, test"):
        in_subset(50, "mid")
    with pytest.raises(ValueError, match="unknown response subset 'all': expected low, high or full"):
        response_split(corpus(), "all")


@pytest.mark.mutation
@pytest.mark.parametrize("subset", ["low", "high", "full"])
def test_response_split_parts(subset):
    dialogues = corpus()
    split = response_split(dialogues, subset, seed=5)
    pool = {d.id for d in dialogues if subset in MEMBERSHIP[d.score]}
    assert set(ids(split.train)) | set(ids(split.val)) == pool and not set(ids(split.train)) & set(ids(split.val))
    assert len(split.val) == round(len(pool) * 0.1)
    assert ids(split.test) == sorted((d.id for d in dialogues if d.score >= 99), key=int)
    assert all(in_id_order(part) for part in (split.train, split.val, split.test))
    assert split.sizes() == {"train": len(split.train), "val": len(split.val), "test": len(split.test)}


@pytest.mark.mutation
def test_response_split_depends_on_the_seed_only():
    dialogues = corpus()
    a = response_split(dialogues, "full", seed=5)
    assert ids(response_split(list(reversed(dialogues)), "full", seed=5).val) == ids(a.val)
    assert ids(response_split(dialogues, "full", seed=6).val) != ids(a.val)
    # the seed draws the validation part: a shuffle of the id-sorted pool by random.Random(seed)
    pool = sorted((d.id for d in dialogues if d.score < 99), key=int)
    random.Random(5).shuffle(pool)
    assert set(ids(a.val)) == set(pool[: len(a.val)])


@pytest.mark.mutation
def test_split_defaults_are_the_papers():
    """Kokoro-High and seed 0 for response generation, seed 0 for score prediction and the tokenizer."""
    dialogues = corpus()
    a, b = response_split(dialogues), response_split(dialogues, "high", 0)
    assert (ids(a.train), ids(a.val), ids(a.test)) == (ids(b.train), ids(b.val), ids(b.test))
    c, d = score_split(dialogues), score_split(dialogues, 0)
    assert (ids(c.train), ids(c.val), ids(c.test)) == (ids(d.train), ids(d.val), ids(d.test))
    assert tokenizer_texts(dialogues, n_dialogues=5) == tokenizer_texts(dialogues, n_dialogues=5, seed=0)


@pytest.mark.mutation
@pytest.mark.parametrize("n, sizes", [(200, (160, 20, 20)), (95, (75, 10, 10)), (104, (84, 10, 10))])
def test_score_split_is_8_1_1_of_everything(n, sizes):
    dialogues = corpus(n)
    split = score_split(dialogues, seed=2)
    assert (len(split.train), len(split.val), len(split.test)) == sizes
    parts = [set(ids(split.train)), set(ids(split.val)), set(ids(split.test))]
    assert set.union(*parts) == set(ids(dialogues)) and sum(map(len, parts)) == n
    assert all(in_id_order(part) for part in (split.train, split.val, split.test))


@pytest.mark.mutation
def test_score_split_test_part_is_fixed_and_the_seed_draws_validation():
    dialogues = corpus()
    a, b = score_split(dialogues, seed=0), score_split(list(reversed(dialogues)), seed=0)
    assert (ids(a.train), ids(a.val), ids(a.test)) == (ids(b.train), ids(b.val), ids(b.test))
    others = [score_split(dialogues, seed) for seed in (1, 2)]
    assert all(ids(s.test) == ids(a.test) for s in others)
    assert len({tuple(ids(s.val)) for s in [a, *others]}) == 3
    # the test tenth: the id-sorted dialogues shuffled by the fixed seed 20250601, then the first 20
    everything = sorted(ids(dialogues), key=int)
    random.Random(20250601).shuffle(everything)
    assert set(ids(a.test)) == set(everything[:20])
    rest = sorted(everything[20:], key=int)
    random.Random(1).shuffle(rest)
    assert set(ids(others[0].val)) == set(rest[:20])


@pytest.mark.mutation
def test_training_dialogues_leave_out_both_test_sets():
    dialogues = corpus()
    pool = training_dialogues(dialogues)
    held_out = set(ids(score_split(dialogues).test)) | {d.id for d in dialogues if d.score >= 99}
    assert ids(pool) == sorted(set(ids(dialogues)) - held_out, key=int)


@pytest.mark.mutation
def test_tokenizer_texts_sample_training_dialogues():
    dialogues = corpus()
    pool = training_dialogues(dialogues)
    assert tokenizer_texts(dialogues) == [u.text for d in pool for u in d.utterances]
    texts = tokenizer_texts(dialogues, n_dialogues=5, seed=4)
    chosen = sorted(random.Random(4).sample(pool, 5), key=lambda d: int(d.id))
    assert texts == [u.text for d in chosen for u in d.utterances]
    assert texts == tokenizer_texts(list(reversed(dialogues)), n_dialogues=5, seed=4)
    assert tokenizer_texts(dialogues, n_dialogues=len(pool), seed=4) == tokenizer_texts(dialogues)


def reference_group_take(dialogues, speaker, seed, n_target):
    """Whole speakers in a seeded order (speakers sorted, then shuffled), each taken when that
    brings the count closer to ``n_target``: the rule speaker-disjoint splits promise."""
    speakers = sorted({speaker(d) for d in dialogues})
    random.Random(seed).shuffle(speakers)
    taken = []
    for key in speakers:
        group = [d.id for d in dialogues if speaker(d) == key]
        if abs(n_target - len(taken) - len(group)) < n_target - len(taken):
            taken += group
    return set(taken)


def client(d):
    return d.feedback.client_id


def counselor(d):
    return d.feedback.counselor_id


@pytest.mark.mutation
@pytest.mark.parametrize("seed", [0, 3])
def test_client_disjoint_score_split_on_made_up_dialogues(seed):
    dialogues = corpus()
    split = score_split(dialogues, seed, split="client_disjoint")
    parts = [split.train, split.val, split.test]
    assert sorted(i for part in parts for i in ids(part)) == sorted(ids(dialogues)) and all(map(in_id_order, parts))
    clients = [{client(d) for d in part} for part in parts]
    assert not (clients[0] & clients[1] or clients[0] & clients[2] or clients[1] & clients[2])
    assert set(ids(split.test)) == reference_group_take(dialogues, client, 20250601, 20)
    rest = [d for d in dialogues if d.id not in set(ids(split.test))]
    assert set(ids(split.val)) == reference_group_take(rest, client, seed, 20)
    assert abs(len(split.test) - 20) <= 3 and abs(len(split.val) - 20) <= 3  # groups of up to 7
    same = score_split(list(reversed(dialogues)), seed, split="client_disjoint")
    assert (ids(same.train), ids(same.val), ids(same.test)) == (ids(split.train), ids(split.val), ids(split.test))


@pytest.mark.mutation
def test_a_speaker_that_would_overshoot_as_far_as_it_falls_short_is_not_taken():
    """Five clients of four sessions and a part of 2: taking one leaves the part 2 off, as not
    taking it does, so none is taken (a speaker is taken only when that brings the part closer)."""
    dialogues = [make_dialogue(str(i), 50, client=i % 5) for i in range(1, 21)]
    split = score_split(dialogues, 0, split="client_disjoint")
    assert (split.test, split.val, len(split.train)) == ([], [], 20)


@pytest.mark.mutation
def test_client_disjoint_test_part_is_fixed_across_seeds():
    dialogues = corpus()
    a, b = score_split(dialogues, 0, split="client_disjoint"), score_split(dialogues, 1, split="client_disjoint")
    assert ids(a.test) == ids(b.test) and ids(a.val) != ids(b.val)


@pytest.mark.mutation
@pytest.mark.parametrize("subset", ["high", "full"])
def test_counselor_disjoint_response_split_on_made_up_dialogues(subset):
    dialogues = corpus()
    split = response_split(dialogues, subset, seed=2, split="counselor_disjoint")
    assert ids(split.test) == ids(response_split(dialogues, subset, seed=2).test)
    test_counselors = {counselor(d) for d in split.test}
    pool = [d for d in dialogues if subset in MEMBERSHIP[d.score] and counselor(d) not in test_counselors]
    assert len(pool) < sum(subset in MEMBERSHIP[d.score] for d in dialogues)  # test counselors' other sessions
    assert sorted(ids(split.train) + ids(split.val)) == sorted(ids(pool)) and split.val
    assert set(ids(split.val)) == reference_group_take(pool, counselor, 2, round(len(pool) * 0.1))
    assert not {counselor(d) for d in split.val} & {counselor(d) for d in split.train}
    assert in_id_order(split.train) and in_id_order(split.val)


@pytest.mark.mutation
def test_the_random_split_is_the_default_and_unknown_kinds_are_errors():
    dialogues = corpus()
    a, b = score_split(dialogues, 1), score_split(dialogues, 1, split="random")
    assert (ids(a.train), ids(a.val)) == (ids(b.train), ids(b.val))
    c, d = response_split(dialogues, "full", 1), response_split(dialogues, "full", 1, split="random")
    assert (ids(c.train), ids(c.val)) == (ids(d.train), ids(d.val))
    with pytest.raises(ValueError, match="^unknown score split 'client': expected random or client_disjoint$"):
        score_split(dialogues, split="client")
    with pytest.raises(
        ValueError, match="^unknown response split 'client_disjoint': expected random or counselor_disjoint$"
    ):
        response_split(dialogues, split="client_disjoint")


# -- on the real data ---------------------------------------------------------------------------


@pytest.mark.parametrize("subset, n", [("low", 3870), ("high", 2601), ("full", 6471)])
def test_response_split_sizes_and_disjointness(kokorochat, subset, n):
    split = response_split(kokorochat, subset, seed=0)
    assert len(split.train) + len(split.val) == n
    assert len(split.val) == round(n * 0.1)
    assert len(split.test) == 118 and all(d.score >= 99 for d in split.test)
    train, val, test = set(ids(split.train)), set(ids(split.val)), set(ids(split.test))
    assert not (train & val or train & test or val & test)


def test_response_split_is_deterministic_and_order_independent(kokorochat):
    shuffled = list(kokorochat)
    random.Random(7).shuffle(shuffled)
    a, b = response_split(kokorochat, "high", seed=3), response_split(shuffled, "high", seed=3)
    assert ids(a.train) == ids(b.train) and ids(a.val) == ids(b.val) and ids(a.test) == ids(b.test)
    c = response_split(kokorochat, "high", seed=4)
    assert ids(c.val) != ids(a.val) and ids(c.test) == ids(a.test)


def test_score_split_811_with_fixed_test(kokorochat):
    shuffled = list(kokorochat)
    random.Random(1).shuffle(shuffled)
    splits = [score_split(kokorochat, seed) for seed in range(5)] + [score_split(shuffled, 0)]
    assert splits[0].sizes() == {"train": 5271, "val": 659, "test": 659}
    for s in splits:
        assert ids(s.test) == ids(splits[0].test)
        parts = [set(ids(s.train)), set(ids(s.val)), set(ids(s.test))]
        assert sum(map(len, parts)) == 6589 and len(set.union(*parts)) == 6589
    assert ids(splits[5].train) == ids(splits[0].train)
    assert len({tuple(ids(s.val)) for s in splits[:5]}) == 5


def test_tokenizer_texts_come_from_training_dialogues_only(kokorochat):
    held_out = {d.id for d in score_split(kokorochat).test} | {d.id for d in response_split(kokorochat).test}
    pool = training_dialogues(kokorochat)
    assert not held_out & set(ids(pool))
    texts = tokenizer_texts(kokorochat, n_dialogues=5, seed=0)
    assert texts == tokenizer_texts(list(reversed(kokorochat.dialogues)), n_dialogues=5, seed=0)
    assert len(texts) > 5 and set(texts) <= {u.text for d in pool for u in d.utterances}


def client_ids(dialogues):
    return {d.feedback.client_id for d in dialogues}


def counselor_ids(dialogues):
    return {d.feedback.counselor_id for d in dialogues}


def test_default_splits_are_the_random_ones(kokorochat):
    for a, b in [
        (score_split(kokorochat, 2), score_split(kokorochat, 2, split="random")),
        (response_split(kokorochat, "low", 2), response_split(kokorochat, "low", 2, split="random")),
    ]:
        assert ids(a.train) == ids(b.train) and ids(a.val) == ids(b.val) and ids(a.test) == ids(b.test)


def test_client_disjoint_score_split(kokorochat):
    shuffled = list(kokorochat)
    random.Random(5).shuffle(shuffled)
    splits = [score_split(kokorochat, seed, split="client_disjoint") for seed in range(3)]
    for s in splits:
        test, val, train = client_ids(s.test), client_ids(s.val), client_ids(s.train)
        assert not (test & train or test & val or val & train)
        assert ids(s.test) == ids(splits[0].test)
        parts = [set(ids(s.train)), set(ids(s.val)), set(ids(s.test))]
        assert sum(map(len, parts)) == 6589 and len(set.union(*parts)) == 6589
        assert abs(len(s.test) - 659) <= 33 and abs(len(s.val) - 659) <= 33  # about a tenth each
    assert len({tuple(ids(s.val)) for s in splits}) == 3
    again = score_split(shuffled, 1, split="client_disjoint")
    assert ids(again.train) == ids(splits[1].train) and ids(again.val) == ids(splits[1].val)
    assert ids(again.test) == ids(splits[1].test)


def test_counselor_disjoint_response_split(kokorochat):
    shuffled = list(kokorochat)
    random.Random(6).shuffle(shuffled)
    split = response_split(kokorochat, "high", seed=0, split="counselor_disjoint")
    assert ids(split.test) == ids(response_split(kokorochat, "high", seed=0).test)
    test, val, train = counselor_ids(split.test), counselor_ids(split.val), counselor_ids(split.train)
    assert not (test & train or test & val or val & train)
    assert all(70 <= d.score < 99 for d in split.train + split.val)
    assert abs(len(split.val) - round(0.1 * (len(split.train) + len(split.val)))) <= 20
    again = response_split(shuffled, "high", seed=0, split="counselor_disjoint")
    assert ids(again.train) == ids(split.train) and ids(again.val) == ids(split.val)
    other = response_split(kokorochat, "high", seed=1, split="counselor_disjoint")
    assert ids(other.val) != ids(split.val) and ids(other.test) == ids(split.test)


@pytest.mark.parametrize(
    "make",
    [lambda d: score_split(d, 0, split="bogus"), lambda d: response_split(d, "high", 0, split="client_disjoint")],
)
def test_unknown_split_kind_is_refused(kokorochat, make):
    with pytest.raises(ValueError, match="unknown .* split"):
        make(kokorochat)
