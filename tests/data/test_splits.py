"""The paper's splits: deterministic, independent of input order, disjoint, the right sizes."""

import random

import pytest

from kokorozoo.data import response_split, score_split, tokenizer_texts, training_dialogues


def ids(dialogues):
    return [d.id for d in dialogues]


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
