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
