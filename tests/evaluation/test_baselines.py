"""Non-neural baselines: the n-gram counter, the score baseline on real data (it beats the mode
baseline), its cache, the response baselines and ``kokorozoo baseline score``."""

import json

import numpy as np
import pytest
import torch
from sklearn.feature_extraction.text import CountVectorizer

from kokorozoo.cli import main
from kokorozoo.data import dialogue_turns, response_split, score_split
from kokorozoo.evaluation import baselines
from kokorozoo.evaluation.baselines import (
    DialogueFeatures,
    ScoreBaseline,
    char_ngram_counts,
    evaluate_score_baseline,
    response_baselines,
    score_baseline_distribution,
    score_targets,
)

#: Small settings for tests that only need the machinery to run.
SMALL = baselines.ScoreBaselineSettings(max_features=512, components=8, c_grid=(0.01, 0.1))


def test_char_ngram_counts_by_hand_and_as_countvectorizer(kokorochat):
    counts = char_ngram_counts(["ab", "b", ""], max_n=2)  # columns: a, b, ab (codes in order)
    assert counts.toarray().tolist() == [[1, 1, 1], [0, 1, 0], [0, 0, 0]]
    texts = [u.text for d in kokorochat.dialogues[:3] for u in d.utterances if "  " not in u.text][:200]
    ours = char_ngram_counts(texts, max_n=3)
    theirs = CountVectorizer(analyzer="char", ngram_range=(1, 3), lowercase=False).fit_transform(texts)
    assert ours.shape == theirs.shape and ours.nnz == theirs.nnz
    assert np.array_equal(ours.sum(axis=1).A1, theirs.sum(axis=1).A1)  # every n-gram of every text
    assert sorted(ours.sum(axis=0).A1) == sorted(theirs.sum(axis=0).A1)  # the same n-gram totals


@pytest.fixture(scope="module")
def seed0(kokorochat):
    return evaluate_score_baseline(kokorochat.dialogues, seeds=[0])


def test_score_baseline_beats_the_mode_baseline(seed0):
    run = seed0["runs"][0]
    mode = run["mode_baseline"]
    assert run["acc"] > mode["acc"] + 3 and run["acc_soft"] > mode["acc_soft"] + 5 and run["mae"] < mode["mae"] - 0.1
    assert run["sizes"] == {"train": 5271, "val": 659, "test": 659}
    assert seed0["mean"] == {k: run[k] for k in ("acc", "acc_soft", "mae")}
    assert seed0["std"] == {"acc": 0.0, "acc_soft": 0.0, "mae": 0.0}
    assert seed0["rules"] == {"acc": "argmax", "acc_soft": "best_window", "mae": "median"}
    assert run["acc_soft"] >= run["argmax"]["acc_soft"] and run["mae"] <= run["argmax"]["mae"]


@pytest.fixture(scope="module")
def small_split(kokorochat):
    """A 300-dialogue split: enough to fit, small enough to take a few seconds."""
    return score_split(kokorochat.dialogues[:300], seed=0)


def test_distribution_has_every_level(small_split):
    features = DialogueFeatures.of(small_split.train + small_split.val + small_split.test, SMALL.max_n)
    model = ScoreBaseline(SMALL).fit(features, small_split.train, small_split.val)
    probs = model.predict_distribution(features, small_split.test)
    assert probs.shape == (len(small_split.test), 20, 6) and probs.dtype == torch.float32
    assert torch.allclose(probs.sum(-1), torch.ones(len(small_split.test), 20))
    seen = score_targets(small_split.train)
    unseen = [(item, level) for item in range(20) for level in range(6) if level not in seen[:, item]]
    assert unseen, "the small training part should miss some level of some item"
    assert all(torch.all(probs[:, item, level] == 0) for item, level in unseen)
    assert set(model.chosen_c) <= set(SMALL.c_grid) | {None}


def test_score_baseline_distribution_is_cached(small_split, tmp_path, monkeypatch):
    first = score_baseline_distribution(small_split, settings=SMALL, cache_dir=tmp_path)
    assert len(list((tmp_path / "score-baseline").glob("*.pt"))) == 1
    monkeypatch.setattr(ScoreBaseline, "fit", lambda *a, **k: pytest.fail("refitted despite the cache"))
    assert torch.equal(score_baseline_distribution(small_split, settings=SMALL, cache_dir=tmp_path), first)
    fewer = small_split.test[:5]
    with pytest.raises(pytest.fail.Exception):  # other test dialogues: another key
        score_baseline_distribution(small_split, fewer, settings=SMALL, cache_dir=tmp_path)


@pytest.fixture(scope="module")
def response_data(kokorochat):
    split = response_split(kokorochat, "high", seed=0)
    return split.train[:40], split.test[:2]


def test_copy_previous_is_the_previous_counselor_turn(response_data):
    train, (dialogue, _) = response_data
    turns = dialogue_turns(dialogue)
    counselor = [i for i, t in enumerate(turns) if t.role == "counselor"]
    first, later = counselor[0], counselor[3]
    out = response_baselines(train, [(dialogue, first), (dialogue, later)])
    assert out["copy_previous"] == ["", turns[counselor[2]].text]
    with pytest.raises(ValueError, match="not a counselor turn"):
        response_baselines(train, [(dialogue, next(i for i, t in enumerate(turns) if t.role == "client"))])


def test_retrieval_returns_training_counselor_turns(response_data):
    train, tests = response_data
    targets = [(d, i) for d in tests for i, t in enumerate(dialogue_turns(d)) if t.role == "counselor"][:30]
    out = response_baselines(train, targets)
    assert set(out) == {"copy_previous", "retrieval"} and all(len(v) == len(targets) for v in out.values())
    training_replies = {t.text for d in train for t in dialogue_turns(d) if t.role == "counselor"}
    assert set(out["retrieval"]) <= training_replies
    # A target whose client turn is in the training pairs retrieves its own reply.
    own = train[0]
    turns = dialogue_turns(own)
    turn = next(i for i, t in enumerate(turns) if t.role == "counselor" and i and len(turns[i - 1].text) > 40)
    assert response_baselines(train, [(own, turn)])["retrieval"] == [turns[turn].text]


@pytest.fixture
def small_root(kokorochat_root, tmp_path):
    """A KokoroChat folder of 400 real dialogues (links, not copies)."""
    root = tmp_path / "kokorochat_dialogues"
    root.mkdir()
    for path in sorted(kokorochat_root.glob("*.json"))[:400]:
        (root / path.name).symlink_to(path)
    return root


def test_cli_json(capsys, small_root):
    assert main(["baseline", "score", "--seeds", "0", "--json", "--root", str(small_root)]) == 0
    result = json.loads(capsys.readouterr().out)
    assert {"split", "seeds", "rules", "runs", "mean", "std", "argmax", "mode_baseline", "seconds"} <= set(result)
    assert result["split"] == "random" and result["seeds"] == [0] and len(result["runs"]) == 1
    for stat in ("mean", "std"):
        assert set(result[stat]) == {"acc", "acc_soft", "mae"}
        assert set(result["mode_baseline"][stat]) == {"acc", "acc_soft", "mae"}
    assert {"seed", "acc", "acc_soft", "mae", "argmax", "mode_baseline", "sizes"} <= set(result["runs"][0])
    assert all(key == key.lower() and " " not in key for key in result)


def test_cli_table_client_disjoint(capsys, small_root):
    assert main(["baseline", "score", "--seeds", "3", "--split", "client_disjoint", "--root", str(small_root)]) == 0
    out = capsys.readouterr().out
    assert "client_disjoint" in out and "mean ± std" in out and "ACC_soft" in out and "best_window" in out


def test_cli_unknown_split_is_one_line(capsys):
    assert main(["baseline", "score", "--split", "bogus"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["kokorozoo: error: unknown split 'bogus': expected random or client_disjoint"]
