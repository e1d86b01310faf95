"""Non-neural baselines: the n-gram counter, the dialogue statistics, the text projection, the score
baseline and its cache, the response baselines, and ``kokorozoo baseline score``.

The first part runs on small hand-built dialogues, fast enough for the mutation session (marked
``mutation``; each mutant of kokorozoo/evaluation/baselines.py and of
kokorozoo.data.stats.dialogue_statistics runs it): every value the baselines produce is recomputed
by hand, with plain Python or with an independent scikit-learn / numpy path. The second part runs
them on the real data (the score baseline beats the mode baseline).
"""

from __future__ import annotations

import hashlib
import json
import math
import statistics
import warnings
from dataclasses import asdict
from datetime import datetime, timedelta
from pathlib import Path

import numpy as np
import pytest
import torch
from scipy import sparse
from sklearn.exceptions import ConvergenceWarning
from sklearn.feature_extraction.text import CountVectorizer, TfidfVectorizer
from sklearn.linear_model import LogisticRegression
from sklearn.utils.extmath import randomized_svd
from threadpoolctl import threadpool_info, threadpool_limits

from kokorozoo.data import response_split
from kokorozoo.data.datamodules import KokoroChatDataModule
from kokorozoo.data.dialogue import dialogue_turns
from kokorozoo.data.splits import Split, score_split
from kokorozoo.data.stats import STATISTICS, dialogue_statistics
from kokorozoo.evaluation import baselines
from kokorozoo.evaluation.baselines import (
    DialogueFeatures,
    ScoreBaseline,
    ScoreBaselineSettings,
    _TextProjection,
    char_ngram_counts,
    evaluate_score_baseline,
    most_frequent,
    response_baselines,
    role_text,
    run_baselines,
    score_baseline_distribution,
    score_targets,
)
from kokorozoo.metrics.rules import METRIC_RULES, distribution_metrics, score_figures
from kokorozoo.records import Dialogue, Feedback, Topic, Utterance

T0 = datetime(2024, 1, 1, 10, 0)


def utter(role: str, seconds: float, text: str) -> Utterance:
    return Utterance(role, T0 + timedelta(seconds=seconds), text)


def dialogue(did: int, utterances, items=(3,) * 20, client: int = 1) -> Dialogue:
    items = tuple(int(i) for i in items)
    feedback = Feedback(did, T0, client, 100 + client % 3, sum(items), items, False, False, False)
    return Dialogue(str(did), tuple(utterances), Topic("", "", ""), feedback)


# ---------------------------------------------------------------------------------------------
# char_ngram_counts


def reference_counts(texts: list[str], max_n: int) -> np.ndarray:
    """Plain Python: every n-gram, columns ordered by length, then by code points."""
    grams = [[t[i : i + n] for n in range(1, max_n + 1) for i in range(len(t) - n + 1)] for t in texts]
    vocab = sorted({g for row in grams for g in row}, key=lambda g: (len(g), g))
    column = {g: j for j, g in enumerate(vocab)}
    out = np.zeros((len(texts), len(vocab)), dtype=np.float32)
    for r, row in enumerate(grams):
        for g in row:
            out[r, column[g]] += 1
    return out


def check_counts(texts: list[str], max_n: int) -> None:
    ours = char_ngram_counts(texts, max_n)
    assert isinstance(ours, sparse.csr_matrix) and ours.dtype == np.float32
    expected = reference_counts(texts, max_n)
    assert ours.shape == expected.shape
    assert np.array_equal(ours.toarray(), expected)


def random_texts(rng: np.random.Generator, alphabet: str, n: int, max_len: int) -> list[str]:
    letters = list(alphabet)
    return ["".join(rng.choice(letters, size=int(rng.integers(0, max_len + 1)))) for _ in range(n)]


@pytest.mark.mutation
def test_char_ngram_counts_by_hand():
    assert char_ngram_counts(["ab", "b", ""], max_n=2).toarray().tolist() == [[1, 1, 1], [0, 1, 0], [0, 0, 0]]
    # a, aa, aaa: 4, 3, 2; b after the text boundary is not part of an n-gram with a
    assert char_ngram_counts(["aaaa", "b"], max_n=3).toarray().tolist() == [[4, 0, 3, 2], [0, 1, 0, 0]]
    for texts in ([], [""], ["", ""]):
        empty = char_ngram_counts(texts, max_n=3)
        assert empty.shape == (len(texts), 0) and empty.dtype == np.float32 and isinstance(empty, sparse.csr_matrix)
    check_counts(["a"], max_n=3)
    check_counts(["", "ab", "", "ba", ""], max_n=4)


@pytest.mark.mutation
def test_char_ngram_counts_as_countvectorizer_on_random_texts():
    rng = np.random.default_rng(0)
    alphabets = ["ab", "abc\n", "あいうえおかきくけこ。", "xy😀é\u3000z", "".join(map(chr, range(0x4E00, 0x4E40)))]
    for alphabet in alphabets:
        texts = random_texts(rng, alphabet, n=int(rng.integers(1, 25)), max_len=12)
        for max_n in (1, 2, 3, 5):
            check_counts(texts, max_n)
        clean = [t for t in texts if t and not any(a.isspace() and b.isspace() for a, b in zip(t, t[1:]))]
        if clean:  # CountVectorizer folds whitespace runs; its vocabulary is sorted as a str
            theirs = CountVectorizer(analyzer="char", ngram_range=(1, 3), lowercase=False)
            expected = theirs.fit_transform(clean).toarray()
            order = sorted(theirs.vocabulary_, key=lambda g: (len(g), g))
            expected = expected[:, [theirs.vocabulary_[g] for g in order]]
            assert np.array_equal(char_ngram_counts(clean, 3).toarray(), expected)


@pytest.mark.mutation
def test_char_ngram_counts_up_to_63_bits_of_key():
    # 200 distinct characters: 8 bits each; 64 texts: 7 bits for the text; 7 x 8 + 7 = 63 fits
    rng = np.random.default_rng(1)
    alphabet = "".join(map(chr, range(0x3041, 0x3041 + 200)))
    texts = random_texts(rng, alphabet, n=63, max_len=10) + [alphabet]
    check_counts(texts, max_n=7)
    with pytest.raises(ValueError, match="max_n=8 is too large for 200 distinct characters"):
        char_ngram_counts(texts, max_n=8)
    with pytest.raises(ValueError, match="max_n=7 is too large for 200 distinct characters"):
        char_ngram_counts(texts + texts, max_n=7)  # 128 texts: 8 bits
    # one text (1 bit) of 2 distinct characters (2 bits): 31 x 2 + 1 = 63 fits
    check_counts(["ab" * 20], max_n=31)
    with pytest.raises(ValueError, match="too large"):
        char_ngram_counts(["ab" * 20], max_n=32)


# ---------------------------------------------------------------------------------------------
# dialogue_statistics, role_text, DialogueFeatures, score_targets


def by_hand() -> Dialogue:
    return dialogue(
        7,
        [
            utter("counselor", 0, "はじめまして。"),  # 7 characters
            utter("client", 30, "こんにちは"),  # 5; the client answered after 30 s
            utter("client", 50, "相談です"),  # 4; same speaker: no answer
            utter("counselor", 110, "どうぞ"),  # 3; answered after 60 s
            utter("client", 100, "はい"),  # 2; stamped before the counselor's: 0 s, not -10
            utter("counselor", 190, "ええ"),  # 2; 90 s
            utter("counselor", 200, "うん"),  # 2
        ],
    )


@pytest.mark.mutation
def test_dialogue_statistics_by_hand():
    stats = dialogue_statistics(by_hand())
    assert len(STATISTICS) == 8
    assert stats == pytest.approx((11.0, 14.0, 3.0, 4.0, 5.0, 200 / 60, 15.0, 75.0), rel=1e-12)
    assert all(type(x) is float for x in stats)
    assert dict(zip(STATISTICS, stats))["merged_turns"] == len(dialogue_turns(by_hand())) == 5


@pytest.mark.mutation
def test_dialogue_statistics_one_speaker_and_clock_going_back():
    one = dialogue(8, [utter("client", 100, "a"), utter("client", 40, "bc")])
    stats = dialogue_statistics(one)
    assert stats == (3.0, 0.0, 2.0, 0.0, 1.0, 0.0, 0.0, 0.0)
    assert all(type(x) is float for x in stats)
    other = dialogue(9, [utter("counselor", 0, "xyz"), utter("client", 90, "")])
    assert dialogue_statistics(other) == (0.0, 3.0, 1.0, 1.0, 2.0, 1.5, 90.0, 0.0)


@pytest.mark.mutation
def test_role_text_and_features():
    d = by_hand()
    assert role_text(d, "client") == "こんにちは\n相談です\nはい"
    assert role_text(d, "counselor") == "はじめまして。\nどうぞ\nええ\nうん"
    other = dialogue(3, [utter("client", 0, "ab"), utter("counselor", 5, "b")])
    features = DialogueFeatures.of(iter([d, other]), max_n=2)
    assert features.rows == {"7": 0, "3": 1}
    assert features.statistics.dtype == np.float64
    assert np.array_equal(features.statistics, np.array([dialogue_statistics(d), dialogue_statistics(other)]))
    assert set(features.counts) == {"client", "counselor"}
    for role in ("client", "counselor"):
        expected = char_ngram_counts([role_text(d, role), role_text(other, role)], 2)
        assert np.array_equal(features.counts[role].toarray(), expected.toarray())
    assert features.index([other, d, other]).tolist() == [1, 0, 1]
    assert features.index([]).dtype == np.int64 and features.index([d]).dtype == np.int64
    none = DialogueFeatures.of([], max_n=2)
    assert none.statistics.shape == (0, len(STATISTICS)) and none.rows == {}
    strangers = [dialogue(i, [utter("client", 0, "a")]) for i in (11, 12, 13, 14)]
    with pytest.raises(ValueError, match=r"dialogues \['11', '12', '13'\] have no features: build"):
        features.index([d, *strangers])


@pytest.mark.mutation
def test_score_targets():
    d = dialogue(1, [utter("client", 0, "a")], items=range(20))
    targets = score_targets([d, dialogue(2, [utter("client", 0, "a")])])
    assert targets.dtype == np.int64 and targets.tolist() == [list(range(20)), [3] * 20]
    assert score_targets([]).shape == (0, 20) and score_targets([]).dtype == np.int64


# ---------------------------------------------------------------------------------------------
# _TextProjection


def reference_tfidf(counts: np.ndarray, train_rows: np.ndarray) -> np.ndarray:
    """Sublinear TF-IDF with smoothed IDF from the training rows, rows scaled to unit length."""
    n = len(train_rows)
    df = (counts[train_rows] > 0).sum(0)
    idf = np.log((1 + n) / (1 + df)) + 1
    tf = np.where(counts > 0, 1 + np.log(np.where(counts > 0, counts, 1)), 0.0)
    x = tf * idf
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return np.divide(x, norms, out=np.zeros_like(x), where=norms > 0)


def expected_columns(counts: np.ndarray, train_rows: np.ndarray, min_df: int, max_features: int) -> list[int]:
    df = (counts[train_rows] > 0).sum(0)
    frequent = [c for c in range(counts.shape[1]) if df[c] >= min_df]
    return sorted(frequent, key=lambda c: (-df[c], c))[:max_features]


def check_projection(counts, train_rows, settings, k: int, svd_params: dict | None = None):
    proj = _TextProjection(counts, train_rows, settings)
    dense = counts.toarray()
    columns = expected_columns(dense, train_rows, settings.min_df, settings.max_features)
    assert proj.columns.tolist() == columns
    x = proj._tfidf(counts)  # float32, as the counts
    assert x.dtype == np.float32
    np.testing.assert_allclose(x, reference_tfidf(dense[:, columns], train_rows), rtol=1e-5, atol=1e-6)
    mean = x[train_rows].mean(0)
    params = {"n_oversamples": 20, "n_iter": 4, "random_state": settings.random_state, **(svd_params or {})}
    _, s, vt = randomized_svd(x[train_rows] - mean, k, **params)
    expected = (x - mean) @ vt.T / np.maximum(s / math.sqrt(len(train_rows)), 1e-12)
    out = proj(counts)
    assert out.shape == (counts.shape[0], k)
    np.testing.assert_allclose(out, expected, rtol=1e-6, atol=1e-6)
    return out


@pytest.mark.mutation
def test_text_projection_is_tfidf_of_the_training_columns_whitened():
    rng = np.random.default_rng(2)
    texts = random_texts(rng, "abcdefgh", n=14, max_len=15)
    counts = char_ngram_counts(texts, 2)
    train = np.array([0, 2, 3, 5, 6, 8, 9, 11, 13])
    settings = ScoreBaselineSettings(max_n=2, max_features=12, min_df=3, components=4, random_state=0)
    out = check_projection(counts, train, settings, k=4)
    np.testing.assert_allclose(out[train].mean(0), 0, atol=1e-6)
    np.testing.assert_allclose(out[train].T @ out[train] / len(train), np.eye(4), atol=1e-6)
    # fewer directions than asked: n_train - 1, or the selected columns
    check_projection(counts, train[:3], ScoreBaselineSettings(max_features=12, min_df=1, components=4), k=2)
    check_projection(counts, train, ScoreBaselineSettings(max_features=2, min_df=2, components=4), k=2)
    check_projection(counts, train[:2], ScoreBaselineSettings(max_features=12, min_df=1, components=4), k=1)
    check_projection(counts, train, ScoreBaselineSettings(max_features=12, min_df=2, components=1), k=1)


@pytest.mark.mutation
def test_text_projection_of_one_training_text():
    texts = ["abc", "abd", "xyz"]
    counts = char_ngram_counts(texts, 1)
    proj = _TextProjection(counts, np.array([1]), ScoreBaselineSettings(min_df=1, components=8))
    out = proj(counts)
    assert out.shape == (3, 1) and out[1, 0] == 0  # the centred text is 0: no direction has any length
    check_projection(counts, np.array([1]), ScoreBaselineSettings(min_df=1, components=8), k=1)


@pytest.mark.mutation
def test_text_projection_follows_the_randomized_svd_settings():
    """Enough texts and n-grams that the randomized SVD is an approximation: its settings
    (oversamples, power iterations, seed) show in the directions."""
    rng = np.random.default_rng(3)
    texts = random_texts(rng, "abcdefghijklmnopqrstuvwxyz", n=70, max_len=40)
    counts = char_ngram_counts(texts, 2)
    train = np.arange(60)
    for seed in (0, 5):
        settings = ScoreBaselineSettings(max_features=300, min_df=2, components=3, random_state=seed)
        out = check_projection(counts, train, settings, k=3)
        for other in ({"n_iter": 3}, {"n_iter": 5}, {"n_oversamples": 19}, {"n_oversamples": 21},
                      {"random_state": seed + 1}):  # fmt: skip
            with pytest.raises(AssertionError):
                check_projection(counts, train, settings, k=3, svd_params=other)
        assert out.shape == (70, 3)


# ---------------------------------------------------------------------------------------------
# ScoreBaseline


def score_corpus(n: int = 48, seed: int = 0) -> list[Dialogue]:
    """Dialogues whose hidden level ``z`` shows in the texts and the timing: items 0-4 are ``z``,
    5-9 random levels, 10-14 random 1 or 2, item 15 always 3, 16-19 0 or 5 by ``z``."""
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        z = int(rng.integers(0, 6))
        t, utterances = 0.0, []
        for j in range(int(rng.integers(2, 6))):
            role = "client" if j % 2 == 0 else "counselor"
            t += float(rng.integers(5, 60)) * (1 + z)
            letters = list("abcdef" if role == "client" else "ghijkl")
            text = "".join(rng.choice(letters, size=int(rng.integers(3, 10)))) + ("x" if role == "client" else "y") * z
            utterances.append(utter(role, t, text))
        items = [z] * 5 + list(rng.integers(0, 6, size=5)) + list(rng.integers(1, 3, size=5)) + [3] + [5 * (z > 2)] * 4
        out.append(dialogue(i + 1, utterances, items, client=i % 9))
    return out


SMALL = ScoreBaselineSettings(max_n=2, max_features=30, min_df=2, components=3, c_grid=(0.001, 0.1, 10.0))


def expected_inputs(model: ScoreBaseline, features: DialogueFeatures, train, rows) -> np.ndarray:
    log_train = np.log1p(features.statistics[features.index(train)])
    scale = np.maximum(log_train.std(axis=0), 1e-12)
    stats = (np.log1p(features.statistics[rows]) - log_train.mean(axis=0)) / scale
    texts = [model.text[role](features.counts[role][rows]) for role in ("client", "counselor")]
    return np.hstack([*texts, stats])


@pytest.mark.mutation
def test_score_baseline_inputs():
    data = score_corpus(24)
    # every dialogue of the training part has the same timing: constant statistics stay finite
    same = [dialogue(100 + i, [utter("client", 0, "ab" * (i + 1)), utter("counselor", 10, "cd")]) for i in range(4)]
    train, val = data[:16] + same, data[16:20]
    features = DialogueFeatures.of(data + same, SMALL.max_n)
    model = ScoreBaseline(SMALL).fit(features, train, val)
    assert set(model.text) == {"client", "counselor"}
    for role in ("client", "counselor"):
        assert (
            model.text[role].columns.tolist()
            == _TextProjection(features.counts[role], features.index(train), SMALL).columns.tolist()
        )
    rows = features.index(data[16:24] + same)
    x = model._inputs(features, rows)
    assert x.shape == (12, 3 + 3 + len(STATISTICS))
    np.testing.assert_allclose(x, expected_inputs(model, features, train, rows), rtol=1e-9, atol=1e-9)
    train_x = model._inputs(features, features.index(train))[:, -len(STATISTICS) :]
    np.testing.assert_allclose(train_x.mean(0), 0, atol=1e-9)
    np.testing.assert_allclose(train_x.std(0), 1, atol=1e-9)


def reference_fit(x_train, y_train, x_val, y_val, c_grid):
    """Each C fitted from scratch; the first C of the lowest validation log loss."""
    best = (math.inf, None, None)
    for c in c_grid:
        model = LogisticRegression(C=c, max_iter=5000, tol=1e-10).fit(x_train, y_train)
        probs = np.zeros((len(x_val), 6))
        probs[:, model.classes_] = model.predict_proba(x_val)
        loss = -np.log(np.clip(probs[np.arange(len(y_val)), y_val], 1e-12, None)).mean()
        if loss < best[0]:
            best = (loss, c, model)
    return best[1], best[2]


@pytest.fixture
def fitted():
    data = score_corpus(48)
    train, val, test = data[:32], data[32:40], data[40:]
    features = DialogueFeatures.of(data, SMALL.max_n)
    return features, train, val, test, ScoreBaseline(SMALL).fit(features, train, val)


@pytest.mark.mutation
def test_score_baseline_chooses_c_by_validation_log_loss(fitted):
    features, train, val, test, model = fitted
    x_train, x_val, x_test = (model._inputs(features, features.index(part)) for part in (train, val, test))
    y_train, y_val = score_targets(train), score_targets(val)
    probs = model.predict_distribution(features, test).double().numpy()
    for item in range(20):
        if item == 15:
            continue
        c, reference = reference_fit(x_train, y_train[:, item], x_val, y_val[:, item], SMALL.c_grid)
        assert model.chosen_c[item] == c, item
        expected = np.zeros((len(test), 6))
        expected[:, reference.classes_] = reference.predict_proba(x_test)
        np.testing.assert_allclose(probs[:, item], expected, atol=1e-2, err_msg=f"item {item}")
    assert len(set(model.chosen_c) - {None}) == 3  # the fixture needs every C of the grid chosen somewhere


@pytest.mark.mutation
def test_score_baseline_distribution_properties(fitted):
    features, train, val, test, model = fitted
    probs = model.predict_distribution(features, test)
    assert probs.shape == (len(test), 20, 6) and probs.dtype == torch.float32
    assert torch.allclose(probs.sum(-1), torch.ones(len(test), 20))
    seen = score_targets(train)
    for item in range(20):
        for level in range(6):
            if level not in seen[:, item]:
                assert torch.all(probs[:, item, level] == 0), (item, level)
    assert model.chosen_c[15] is None  # one level in training: certain, nothing to tune
    assert torch.all(probs[:, 15, 3] == 1)
    assert all(c in SMALL.c_grid for i, c in enumerate(model.chosen_c) if i != 15)
    assert len(model.chosen_c) == len(model.models) == 20
    # predicting dialogues in another order gives the same rows in that order
    again = model.predict_distribution(features, test[::-1])
    assert torch.equal(again, probs.flip(0))
    assert model.predict_distribution(features, []).shape == (0, 20, 6)


@pytest.mark.mutation
def test_score_baseline_with_an_empty_validation_part():
    data = score_corpus(20)
    features = DialogueFeatures.of(data, SMALL.max_n)
    model = ScoreBaseline(SMALL).fit(features, data[:16], [])
    assert model.chosen_c == [SMALL.c_grid[0]] * 15 + [None] + [SMALL.c_grid[0]] * 4  # all tie: the first
    probs = model.predict_distribution(features, data[16:])
    assert torch.allclose(probs.sum(-1), torch.ones(4, 20))


def blas_threads() -> int:
    return max(pool["num_threads"] for pool in threadpool_info() if pool["user_api"] == "blas")


@pytest.mark.mutation
def test_score_baseline_runs_on_one_blas_thread(monkeypatch):
    """Small dense problems: a second thread only adds waiting, so fitting and predicting hold
    BLAS to one thread whatever the caller allows."""
    seen = []

    class Watched(LogisticRegression):
        def fit(self, x, y):
            seen.append(("fit", blas_threads()))
            return super().fit(x, y)

    monkeypatch.setattr(baselines, "LogisticRegression", Watched)
    data = score_corpus(24)
    features = DialogueFeatures.of(data, SMALL.max_n)
    with threadpool_limits(2):
        assert blas_threads() == 2
        model = ScoreBaseline(SMALL).fit(features, data[:16], data[16:20])
        for m in model.models:
            predict = m.predict_proba
            m.predict_proba = lambda x, predict=predict: seen.append(("predict", blas_threads())) or predict(x)
        model.predict_distribution(features, data[20:])
        assert blas_threads() == 2
    assert len(seen) == 19 * 3 + 20 and {threads for _, threads in seen} == {1}


@pytest.mark.mutation
def test_score_baseline_regressions_converge():
    """A large C needs more than scikit-learn's default 100 iterations here: given, they converge."""
    data = score_corpus(48)
    features = DialogueFeatures.of(data, SMALL.max_n)
    settings = ScoreBaselineSettings(max_n=2, max_features=30, min_df=2, components=3, c_grid=(1000.0,))
    with warnings.catch_warnings():
        warnings.simplefilter("error", ConvergenceWarning)
        model = ScoreBaseline(settings).fit(features, data[:32], data[32:40])
    assert max(int(m.n_iter_[0]) for m in model.models if hasattr(m, "n_iter_")) > 100


# ---------------------------------------------------------------------------------------------
# evaluate_score_baseline


class Clock:
    """A stand-in for time.perf_counter that moves on 0.123456 s at every reading."""

    def __init__(self, start: float = 100.0):
        self.readings = [start - 0.123456]

    def perf_counter(self) -> float:
        self.readings.append(self.readings[-1] + 0.123456)
        return self.readings[-1]


def item_modes_by_hand(targets: np.ndarray) -> np.ndarray:
    return np.array([min(range(6), key=lambda level: (-(column == level).sum(), level)) for column in targets.T])


@pytest.mark.mutation
def test_evaluate_score_baseline_by_hand(monkeypatch):
    data = score_corpus(40, seed=1)
    clock = Clock()
    monkeypatch.setattr(baselines, "time", clock)
    result = evaluate_score_baseline(iter(data), seeds=(1, 0), settings=SMALL)
    assert result["split"] == "random" and result["seeds"] == [1, 0]
    assert result["rules"] == METRIC_RULES == {"acc": "argmax", "acc_soft": "best_window", "mae": "median"}
    # seconds: from the first reading to the last, rounded to 1/100 (one run: one reading apart)
    assert result["settings"] == asdict(SMALL) and result["seconds"] == round(clock.readings[-1] - 100.0, 2)
    assert [run["seconds"] for run in result["runs"]] == [0.12, 0.12]
    features = DialogueFeatures.of(data, SMALL.max_n)
    for seed, run in zip((1, 0), result["runs"]):
        part = score_split(data, seed)
        model = ScoreBaseline(SMALL).fit(features, part.train, part.val)
        gold = torch.from_numpy(score_targets(part.test))
        figures = distribution_metrics(model.predict_distribution(features, part.test), gold)
        modes = torch.from_numpy(item_modes_by_hand(score_targets(part.train))).float().expand(len(part.test), 20)
        assert run == {
            "seed": seed,
            "sizes": {"train": len(part.train), "val": len(part.val), "test": len(part.test)},
            **figures["by_rule"],
            "argmax": figures["argmax"],
            "mode_baseline": score_figures(modes, gold),
            "chosen_c": model.chosen_c,
            "seconds": run["seconds"],
        }
    runs = result["runs"]
    assert runs[0]["acc"] != runs[1]["acc"] and runs[0]["mae"] != runs[1]["mae"]
    picks = {"mean": lambda r: r, "argmax": lambda r: r["argmax"], "mode_baseline": lambda r: r["mode_baseline"]}
    for key, pick in picks.items():
        stats = result[key] if key != "mean" else {"mean": result["mean"], "std": result["std"]}
        for metric in ("acc", "acc_soft", "mae"):
            values = [pick(run)[metric] for run in runs]
            assert stats["mean"][metric] == pytest.approx((values[0] + values[1]) / 2, rel=1e-12)
            assert stats["std"][metric] == pytest.approx(abs(values[0] - values[1]) / math.sqrt(2), rel=1e-12)
        assert set(stats) == {"mean", "std"} and set(stats["mean"]) == set(stats["std"]) == set(METRIC_RULES)
    assert set(result) == {"split", "seeds", "rules", "settings", "runs", "mean", "std", "argmax",
                           "mode_baseline", "seconds"}  # fmt: skip


@pytest.mark.mutation
def test_mean_std_of_one_and_of_three_runs():
    rows = [{"acc": 50.0, "acc_soft": 70.0, "mae": 1.0}]
    assert baselines._mean_std(rows) == {"mean": rows[0], "std": {"acc": 0.0, "acc_soft": 0.0, "mae": 0.0}}
    rows = [{"acc": a, "acc_soft": b, "mae": c, "other": 9} for a, b, c in ((1, 2, 3), (2, 4, 7), (6, 6, 2))]
    out = baselines._mean_std(rows)
    for metric, values in (("acc", [1, 2, 6]), ("acc_soft", [2, 4, 6]), ("mae", [3, 7, 2])):
        assert out["mean"][metric] == pytest.approx(sum(values) / 3)
        assert out["std"][metric] == pytest.approx(float(np.std(values, ddof=1)))
        assert out["std"][metric] == pytest.approx(statistics.stdev(values))
    assert set(out["mean"]) == {"acc", "acc_soft", "mae"}


class StubBaseline:
    """ScoreBaseline's stand-in where only the wiring is under test: records what it was given and
    predicts a distribution made of the test dialogues' ids."""

    made: list = []

    def __init__(self, settings):
        self.settings, self.chosen_c = settings, ["stub"]
        StubBaseline.made.append(self)

    def fit(self, features, train, val):
        features.index([*train, *val])
        self.fitted = ([d.id for d in train], [d.id for d in val], features)
        return self

    def predict_distribution(self, features, dialogues):
        features.index(dialogues)
        self.predicted = [d.id for d in dialogues]
        probs = torch.zeros(len(dialogues), 20, 6)
        probs[:, :, 2] = 1
        probs[:, 0, 2] = torch.tensor([float(d.id) for d in dialogues]) / 1000
        probs[:, 0, 3] = 1 - probs[:, 0, 2]
        return probs


@pytest.fixture
def stub(monkeypatch):
    StubBaseline.made = []
    monkeypatch.setattr(baselines, "ScoreBaseline", StubBaseline)
    return StubBaseline.made


@pytest.mark.mutation
def test_evaluate_score_baseline_defaults(stub):
    data = score_corpus(30)
    result = evaluate_score_baseline(data)
    assert result["seeds"] == [0, 1, 2, 3, 4] and result["split"] == "random"
    assert result["settings"] == asdict(ScoreBaselineSettings())
    assert [m.settings for m in stub] == [ScoreBaselineSettings()] * 5
    for seed, model, run in zip(range(5), stub, result["runs"]):
        part = score_split(data, seed)
        assert model.fitted[:2] == ([d.id for d in part.train], [d.id for d in part.val])
        assert model.predicted == [d.id for d in part.test] and run["chosen_c"] == ["stub"]
        client_counts = char_ngram_counts([role_text(d, "client") for d in data], 4)  # the default max_n
        assert model.fitted[2].counts["client"].shape == client_counts.shape


@pytest.mark.mutation
def test_evaluate_score_baseline_client_disjoint(stub):
    data = score_corpus(30)
    result = evaluate_score_baseline(data, seeds=[2], split="client_disjoint", settings=SMALL)
    part = score_split(data, 2, "client_disjoint")
    assert part.sizes() != score_split(data, 2).sizes() or part.test != score_split(data, 2).test
    assert result["split"] == "client_disjoint" and result["runs"][0]["sizes"] == part.sizes()
    assert stub[0].fitted[:2] == ([d.id for d in part.train], [d.id for d in part.val])
    assert stub[0].predicted == [d.id for d in part.test] and stub[0].settings is SMALL


# ---------------------------------------------------------------------------------------------
# score_baseline_distribution


def cache_key(split: Split, test, settings: ScoreBaselineSettings, version: int = 1) -> str:
    parts = {"train": split.train, "val": split.val, "test": test}
    key = {"version": version, "settings": asdict(settings), **{k: [d.id for d in v] for k, v in parts.items()}}
    return hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:24] + ".pt"


def small_split(n: int = 24) -> Split:
    data = score_corpus(n, seed=2)
    return Split(train=data[: n - 8], val=data[n - 8 : n - 4], test=data[n - 4 :])


@pytest.mark.mutation
def test_score_baseline_distribution_is_the_fitted_model(tmp_path):
    split = small_split()
    test = [split.test[1], split.train[0], split.test[0]]  # any dialogues, a training one too
    probs = score_baseline_distribution(split, test, settings=SMALL, cache_dir=tmp_path)
    features = DialogueFeatures.of(split.train + split.val + split.test, SMALL.max_n)
    expected = ScoreBaseline(SMALL).fit(features, split.train, split.val).predict_distribution(features, test)
    assert probs.dtype == torch.float32 and probs.shape == (3, 20, 6)
    torch.testing.assert_close(probs, expected, rtol=0, atol=1e-6)
    assert [p.name for p in (tmp_path / "score-baseline").iterdir()] == [cache_key(split, test, SMALL)]
    assert torch.equal(torch.load(tmp_path / "score-baseline" / cache_key(split, test, SMALL)), probs)


@pytest.mark.mutation
def test_score_baseline_distribution_reads_its_cache(tmp_path, stub):
    split = small_split()
    path = tmp_path / "score-baseline" / cache_key(split, split.test, SMALL)
    path.parent.mkdir()
    sentinel = torch.full((4, 20, 6), 0.25)
    torch.save(sentinel, path)
    assert torch.equal(score_baseline_distribution(split, settings=SMALL, cache_dir=tmp_path), sentinel)
    assert stub == []  # nothing fitted


class _RunsCode:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


@pytest.mark.mutation
def test_a_cache_file_that_would_run_code_is_never_unpickled(tmp_path, stub):
    import pickle

    split = small_split()
    path = tmp_path / "score-baseline" / cache_key(split, split.test, SMALL)
    path.parent.mkdir()
    marker = tmp_path / "the-code-ran"
    torch.save({"probs": _RunsCode(marker)}, path)
    with pytest.raises(pickle.UnpicklingError):
        score_baseline_distribution(split, settings=SMALL, cache_dir=tmp_path)
    assert not marker.exists()


@pytest.mark.mutation
def test_score_baseline_distribution_keys(tmp_path, stub, monkeypatch):
    split = small_split()
    first = score_baseline_distribution(split, settings=SMALL, cache_dir=tmp_path)
    model = stub[0]
    assert model.settings is SMALL and model.predicted == [d.id for d in split.test]
    assert model.fitted[:2] == ([d.id for d in split.train], [d.id for d in split.val])
    assert (
        model.fitted[2].counts["client"].shape[1]
        == char_ngram_counts([role_text(d, "client") for d in split.train + split.val + split.test], SMALL.max_n).shape[
            1
        ]
    )
    assert torch.equal(score_baseline_distribution(split, settings=SMALL, cache_dir=tmp_path), first)
    assert len(stub) == 1  # read back, not refitted
    moved = split.train[0]
    others = [
        (Split(split.train[1:], split.val, split.test), None, SMALL),
        (Split(split.train[1:], [*split.val, moved], split.test), None, SMALL),
        (Split(split.train, split.val, split.test[:3]), None, SMALL),
        (split, split.test[::-1], SMALL),
        (split, None, ScoreBaselineSettings(max_n=3, max_features=30, components=3, c_grid=(0.001, 0.1, 10.0))),
    ]
    for n, (other, test, settings) in enumerate(others, start=2):
        score_baseline_distribution(other, test, settings=settings, cache_dir=tmp_path)
        assert len(stub) == n
        expected = cache_key(other, other.test if test is None else test, settings)
        assert (tmp_path / "score-baseline" / expected).is_file()
    monkeypatch.setattr(baselines, "BASELINE_VERSION", 2)
    score_baseline_distribution(split, settings=SMALL, cache_dir=tmp_path)
    assert len(stub) == 7 and (tmp_path / "score-baseline" / cache_key(split, split.test, SMALL, 2)).is_file()
    assert len(list((tmp_path / "score-baseline").iterdir())) == 7


@pytest.mark.mutation
def test_score_baseline_distribution_defaults(tmp_path, stub, monkeypatch):
    monkeypatch.setenv("KOKOROZOO_CACHE", str(tmp_path / "cache"))
    split = small_split()
    probs = score_baseline_distribution(split)
    assert stub[0].settings == ScoreBaselineSettings()
    assert stub[0].predicted == [d.id for d in split.test]
    expected = tmp_path / "cache" / "score-baseline" / cache_key(split, split.test, ScoreBaselineSettings())
    assert torch.equal(torch.load(expected), probs)


@pytest.mark.mutation
def test_score_baseline_distribution_writes_aside_then_renames(tmp_path, stub, monkeypatch):
    split = small_split()
    cache = tmp_path / "a" / "b"  # made with its parents
    path = cache / "score-baseline" / cache_key(split, split.test, SMALL)
    written = []
    save = torch.save

    def watched(obj, file):
        written.append(file.name)
        assert not path.exists()
        save(obj, file)

    monkeypatch.setattr(torch, "save", watched)
    probs = score_baseline_distribution(split, settings=SMALL, cache_dir=cache)
    (name,) = written
    assert name != str(path) and name.endswith(".tmp") and Path(name).parent == path.parent
    assert [p.name for p in path.parent.iterdir()] == [path.name] and torch.equal(torch.load(path), probs)

    def killed(obj, file):
        file.write(b"half")
        raise KeyboardInterrupt

    monkeypatch.setattr(torch, "save", killed)
    other = Split(split.train, split.val, split.test[:2])
    with pytest.raises(KeyboardInterrupt):
        score_baseline_distribution(other, settings=SMALL, cache_dir=cache)  # the folder exists: fine
    assert [p.name for p in path.parent.glob("*.pt")] == [path.name]  # no half file under a cache name


# ---------------------------------------------------------------------------------------------
# response_baselines


def talk(did: int, *turns: tuple[str, str]) -> Dialogue:
    return dialogue(did, [utter(role, 10 * i, text) for i, (role, text) in enumerate(turns)])


@pytest.mark.mutation
def test_copy_previous_and_the_targets_checked():
    d = talk(1, ("counselor", "c0"), ("client", "k0"), ("counselor", "c1"), ("client", "k1"), ("client", "k2"),
             ("counselor", "c2"))  # fmt: skip
    train = [talk(2, ("client", "x"), ("counselor", "y"))]
    turns = dialogue_turns(d)
    assert [t.role for t in turns] == ["counselor", "client", "counselor", "client", "counselor"]
    out = response_baselines(train, [(d, 4), (d, 0), (d, 2)])
    assert out["copy_previous"] == ["c1", "", "c0"]
    assert set(out) == {"copy_previous", "retrieval"}
    for bad in (1, 3, 5, -1, -5):
        with pytest.raises(ValueError, match=f"^turn {bad} of dialogue 1 is not a counselor turn$"):
            response_baselines(train, [(d, 2), (d, bad)])
    with pytest.raises(ValueError, match="^the training dialogues hold no client turn followed by a counselor turn$"):
        response_baselines([talk(3, ("counselor", "a"), ("client", "b"))], [(d, 2)])
    with pytest.raises(ValueError, match="no client turn followed"):
        response_baselines([], [(d, 2)])


@pytest.mark.mutation
def test_retrieval_by_hand():
    train = [
        talk(1, ("counselor", "hello"), ("client", "abc"), ("counselor", "r1"), ("client", "xyz")),
        talk(2, ("client", "p"), ("client", "q"), ("counselor", "r2"), ("counselor", "r2b"), ("client", "abc"),
             ("counselor", "r3"), ("client", "zzz"), ("counselor", "r4")),
    ]  # fmt: skip
    # pairs: (abc, r1), (p\nq, r2\nr2b), (abc, r3), (zzz, r4)
    queries = talk(9, ("counselor", "first"), ("client", "abc"), ("counselor", "t"), ("client", "zz"),
                   ("counselor", "t"), ("client", "p\nq"), ("counselor", "t"), ("client", "qqq"),
                   ("counselor", "t"), ("client", "mno"), ("counselor", "t"))  # fmt: skip
    out = response_baselines(train, [(queries, i) for i in (0, 2, 4, 6, 8, 10)])
    # no client turn before: the first pair; abc twice: the earlier; unseen characters: the first
    assert out["retrieval"] == ["r1", "r1", "r4", "r2\nr2b", "r2\nr2b", "r1"]
    assert response_baselines(train[::-1], [(queries, 2)])["retrieval"] == ["r3"]  # read in the order given


def random_dialogue(rng: np.random.Generator, did: int) -> Dialogue:
    turns, role = [], "client" if rng.random() < 0.7 else "counselor"
    for _ in range(int(rng.integers(2, 9))):
        text = "".join(rng.choice(list("abcdef"), size=int(rng.integers(1, 12))))
        turns.append((role, text))
        if rng.random() < 0.8:
            role = "counselor" if role == "client" else "client"
    return talk(did, *turns)


def reference_retrieval(train, targets, max_n):
    prompts, replies = [], []
    for d in train:
        turns = dialogue_turns(d)
        for i in range(len(turns) - 1):
            if (turns[i].role, turns[i + 1].role) == ("client", "counselor"):
                prompts.append(turns[i].text)
                replies.append(turns[i + 1].text)
    queries = []
    for d, turn in targets:
        before = [t.text for t in dialogue_turns(d)[:turn] if t.role == "client"]
        queries.append(before[-1] if before else "")
    vectorizer = TfidfVectorizer(analyzer="char", ngram_range=(1, max_n), lowercase=False, sublinear_tf=True)
    library = vectorizer.fit_transform(prompts)
    similarity = (vectorizer.transform(queries) @ library.T).toarray()
    best = similarity.max(axis=1, keepdims=True)
    assert np.all((similarity > best - 1e-9).sum(1)[best[:, 0] > 0] == 1), "a near tie: pick another seed"
    return [replies[i] for i in similarity.argmax(axis=1)]


@pytest.mark.parametrize("seed", [0, 1])
@pytest.mark.mutation
def test_retrieval_as_tfidf_cosine(seed, monkeypatch):
    rng = np.random.default_rng(seed)
    train = [random_dialogue(rng, i) for i in range(12)]
    tests = [random_dialogue(rng, 100 + i) for i in range(6)]
    targets = [(d, i) for d in tests for i, t in enumerate(dialogue_turns(d)) if t.role == "counselor"]
    assert len(targets) > 5
    out = response_baselines(train, targets)
    assert out["retrieval"] == reference_retrieval(train, targets, max_n=3)
    assert out["retrieval"] != reference_retrieval(train, targets, max_n=1)
    assert response_baselines(train, targets, max_n=1)["retrieval"] == reference_retrieval(train, targets, max_n=1)
    monkeypatch.setattr(baselines, "_QUERY_CHUNK", 2)  # the similarities a few queries at a time
    assert response_baselines(train, targets) == out
    monkeypatch.setattr(baselines, "_QUERY_CHUNK", 1)
    assert response_baselines(train, targets) == out


@pytest.mark.mutation
def test_retrieval_idf_is_the_training_prompts_alone():
    """A query's own n-grams weigh nothing: "ab" matches the prompt sharing its rarer "b"."""
    train = [
        talk(1, ("client", "aa"), ("counselor", "r-aa"), ("client", "abbbb"), ("counselor", "r-ab")),
        talk(2, ("client", "ac"), ("counselor", "r-ac"), ("client", "ad"), ("counselor", "r-ad")),
    ]
    query = talk(3, ("client", "ab"), ("counselor", "?"))
    assert response_baselines(train, [(query, 1)], max_n=1)["retrieval"] == reference_retrieval(train, [(query, 1)], 1)
    assert response_baselines(train, [(query, 1)], max_n=1)["retrieval"] == ["r-ab"]


# ---------------------------------------------------------------------------------------------
# On the real data

#: Small settings for tests that only need the machinery to run.
REAL_SETTINGS = baselines.ScoreBaselineSettings(max_features=512, components=8, c_grid=(0.01, 0.1))


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
def real_split(kokorochat):
    """A 300-dialogue split: enough to fit, small enough to take a few seconds."""
    return score_split(kokorochat.dialogues[:300], seed=0)


def test_distribution_has_every_level(real_split):
    features = DialogueFeatures.of(real_split.train + real_split.val + real_split.test, REAL_SETTINGS.max_n)
    model = ScoreBaseline(REAL_SETTINGS).fit(features, real_split.train, real_split.val)
    probs = model.predict_distribution(features, real_split.test)
    assert probs.shape == (len(real_split.test), 20, 6) and probs.dtype == torch.float32
    assert torch.allclose(probs.sum(-1), torch.ones(len(real_split.test), 20))
    seen = score_targets(real_split.train)
    unseen = [(item, level) for item in range(20) for level in range(6) if level not in seen[:, item]]
    assert unseen, "the small training part should miss some level of some item"
    assert all(torch.all(probs[:, item, level] == 0) for item, level in unseen)
    assert set(model.chosen_c) <= set(REAL_SETTINGS.c_grid) | {None}


def test_score_baseline_distribution_is_cached(real_split, tmp_path, monkeypatch):
    first = score_baseline_distribution(real_split, settings=REAL_SETTINGS, cache_dir=tmp_path)
    assert len(list((tmp_path / "score-baseline").glob("*.pt"))) == 1
    monkeypatch.setattr(ScoreBaseline, "fit", lambda *a, **k: pytest.fail("refitted despite the cache"))
    assert torch.equal(score_baseline_distribution(real_split, settings=REAL_SETTINGS, cache_dir=tmp_path), first)
    fewer = real_split.test[:5]
    with pytest.raises(pytest.fail.Exception):  # other test dialogues: another key
        score_baseline_distribution(real_split, fewer, settings=REAL_SETTINGS, cache_dir=tmp_path)


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


# -- what run_baselines puts beside a run ----------------------------------------------------------


@pytest.mark.mutation
def test_most_frequent_is_each_columns_mode_the_smaller_on_a_tie():
    one = most_frequent(torch.tensor([2, 0, 2, 1, 0]))
    assert one.ndim == 0 and int(one) == 0  # 0 and 2 tie: the smaller
    assert int(most_frequent(torch.tensor([1, 3, 3]))) == 3
    assert most_frequent(torch.tensor([[0, 5], [1, 5], [1, 4]])).tolist() == [1, 5]


class _Labels(KokoroChatDataModule):
    """A datamodule whose training part has the given labels."""

    def __init__(self, labels):
        super().__init__()
        self.labels = labels

    def train_labels(self):
        return self.labels


class _Constant:
    def score_constant(self, majority, rows):
        return {"predicts": majority.tolist(), "rows": len(rows)}


@pytest.mark.mutation
def test_the_constant_baseline_of_labels_and_of_items():
    rows = [{"id": 1}, {"id": 2}]
    one = run_baselines(_Constant(), _Labels(torch.tensor([0, 3, 3])), rows)
    assert one.figures == {"baseline": {"predicts": 3, "rows": 2}} and one.rules == {
        "baseline": "the most frequent label"
    }
    items = run_baselines(_Constant(), _Labels(torch.tensor([[0, 1], [0, 1]])), rows)
    assert items.rules == {"baseline": "the per-item mode"}
    assert run_baselines(_Constant(), _Labels(torch.tensor([1])), []).figures == {}  # nothing tested: nothing beside
    assert run_baselines(_Constant(), None, rows).figures == {}  # not a KokoroChat datamodule
