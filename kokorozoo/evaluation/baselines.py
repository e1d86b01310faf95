"""Non-neural baselines: what any model of this repository has to beat to mean something.

Score prediction: a per-item logistic regression on character n-grams of each speaker's text and
eight dialogue statistics. On the paper's random split it beats the paper's fine-tuned 8B on all
three metrics (mostly by recognising the client, whose sessions are in the training part too: see
``split="client_disjoint"``). Its output is a distribution over the six levels of every item, read
with the rule that suits each metric (:mod:`kokorozoo.metrics.rules`).

Response generation: copying the previous counselor turn, and retrieving the counselor turn that
followed the most similar client turn of the training dialogues.

At test time (:func:`run_baselines`, called by :mod:`kokorozoo.evaluation.writer`), the ones that
apply are fit on the datamodule's whole split and scored on the rows the model was tested on.

Everything here is CPU-only (numpy, scipy, scikit-learn) and deterministic.
"""

from __future__ import annotations

import copy
import hashlib
import json
import math
import os
import tempfile
import time
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from scipy import sparse
from sklearn.dummy import DummyClassifier
from sklearn.feature_extraction.text import TfidfTransformer
from sklearn.linear_model import LogisticRegression
from sklearn.utils.extmath import randomized_svd
from threadpoolctl import threadpool_limits
from torch import Tensor

from kokorozoo.data.dialogue import dialogue_turns
from kokorozoo.data.splits import ScoreSplitKind, Split, score_split
from kokorozoo.data.stats import ROLES, STATISTICS, dialogue_statistics
from kokorozoo.evaluation.results import summarize_rows
from kokorozoo.metrics.rules import METRIC_RULES, distribution_metrics, rule_figures, score_figures
from kokorozoo.metrics.scores import constant_predictions, item_modes
from kokorozoo.metrics.text import text_metrics
from kokorozoo.progress import progress
from kokorozoo.records import ITEM_MAX, NUM_ITEMS, Dialogue

NUM_LEVELS = ITEM_MAX + 1
#: Bump when the model changes, so cached distributions of an older model are not reused.
BASELINE_VERSION = 1


# ---------------------------------------------------------------------------------------------
# Features that need no labels: computed once for all dialogues and shared by every seed


def char_ngram_counts(texts: Sequence[str], max_n: int) -> sparse.csr_matrix:
    """Counts of every character 1..``max_n``-gram of each text, ``csr_matrix[len(texts), V]``
    (float32); the columns are the n-grams that occur, in a fixed order.

    What ``CountVectorizer(analyzer="char", lowercase=False)`` counts (without its whitespace
    folding), but vectorised: n-grams become integer codes and one sort counts them all, 3-5x
    faster than the vectoriser's Python loop on KokoroChat's 17 million characters.
    """
    lengths = np.fromiter((len(t) for t in texts), dtype=np.int64, count=len(texts))
    chars = np.frombuffer("".join(texts).encode("utf-32-le"), dtype=np.uint32)
    alphabet = np.zeros(0x110000, dtype=np.int64)
    alphabet[chars] = 1
    char_bits = int(alphabet.sum()).bit_length()
    doc_bits = max(len(texts), 1).bit_length()
    if max_n * char_bits + doc_bits > 63:
        raise ValueError(f"max_n={max_n} is too large for {int(alphabet.sum())} distinct characters")
    ids = np.cumsum(alphabet)[chars]  # 1..distinct characters; 0 never occurs
    doc = np.repeat(np.arange(len(texts), dtype=np.int64), lengths)
    keys, code = [], ids
    for n in range(1, max_n + 1):
        if n > 1:
            code = (code[:-1] << char_bits) | ids[n - 1 :]
        inside = doc[: len(code)] == doc[n - 1 :]  # the n-gram does not cross into the next text
        keys.append((code[inside] << doc_bits) | doc[: len(code)][inside])
    keys = np.sort(np.concatenate(keys))  # by n-gram, then by text
    if not len(keys):
        return sparse.csr_matrix((len(texts), 0), dtype=np.float32)
    starts = np.flatnonzero(np.diff(keys, prepend=-1))
    unique = keys[starts]
    counts = np.diff(starts, append=len(keys)).astype(np.float32)
    grams = unique >> doc_bits
    columns = np.cumsum(np.diff(grams, prepend=-1) != 0) - 1
    rows = unique & ((1 << doc_bits) - 1)
    return sparse.csr_matrix((counts, (rows, columns)), shape=(len(texts), int(columns[-1]) + 1))


def role_text(dialogue: Dialogue, role: str) -> str:
    """Everything one speaker wrote in a dialogue, utterance by utterance."""
    return "\n".join(u.text for u in dialogue.utterances if u.role == role)


@dataclass(frozen=True)
class DialogueFeatures:
    """The label-free inputs of the score baseline for a set of dialogues, computed once.

    ``counts`` holds every character n-gram that occurs in any of the dialogues, but a model uses
    only the columns its training part selects and weighs them with the training part's IDF, so
    the result is what a vectoriser fitted on the training texts alone would give: counting test
    texts here only saves counting them again for every seed.
    """

    rows: dict[str, int]
    statistics: np.ndarray  # [n, len(STATISTICS)]
    counts: dict[str, sparse.csr_matrix]  # role -> [n, n-grams]

    @classmethod
    def of(cls, dialogues: Iterable[Dialogue], max_n: int) -> DialogueFeatures:
        dialogues = list(dialogues)
        stats = np.array([dialogue_statistics(d) for d in dialogues], dtype=np.float64).reshape(-1, len(STATISTICS))
        counts = {role: char_ngram_counts([role_text(d, role) for d in dialogues], max_n) for role in ROLES}
        return cls({d.id: i for i, d in enumerate(dialogues)}, stats, counts)

    def index(self, dialogues: Sequence[Dialogue]) -> np.ndarray:
        missing = [d.id for d in dialogues if d.id not in self.rows]
        if missing:
            raise ValueError(f"dialogues {missing[:3]} have no features: build DialogueFeatures.of() over them")
        return np.array([self.rows[d.id] for d in dialogues], dtype=np.int64)


def score_targets(dialogues: Sequence[Dialogue]) -> np.ndarray:
    """The gold 20 items of each dialogue, ``int64[N, 20]``."""
    return np.array([d.feedback.items for d in dialogues], dtype=np.int64).reshape(-1, NUM_ITEMS)


# ---------------------------------------------------------------------------------------------
# The score baseline


@dataclass(frozen=True)
class ScoreBaselineSettings:
    """What the score baseline is; every field is part of the cache key.

    Chosen by the mean validation log loss over the random split's seeds 0-4, never the test
    part: n-grams of up to 4 characters (up to 3: 0.002 worse); the 8,192 commonest n-grams of
    each speaker's training texts (4,096: a little worse, 16,384: 0.001 better at twice the
    time); 64 directions per speaker (32 underfit, 96 overfit) from 4 power iterations (2: 0.004
    worse); a grid reaching C = 0.1 changed nothing. Only ``C`` is tuned per seed, on that
    seed's validation part.
    """

    max_n: int = 4
    max_features: int = 8192
    min_df: int = 2
    components: int = 64
    c_grid: tuple[float, ...] = (0.003, 0.01, 0.03)
    random_state: int = 0


class _TextProjection:
    """One speaker's text as ``components`` numbers: TF-IDF of the training part's most common
    n-grams, centred, projected on its top singular directions and whitened. Few dense inputs keep
    twenty six-way regressions fast, and the training texts alone decide every step."""

    def __init__(self, counts: sparse.csr_matrix, train_rows: np.ndarray, settings: ScoreBaselineSettings):
        train = counts[train_rows]
        df = np.bincount(train.indices, minlength=counts.shape[1])
        frequent = np.flatnonzero(df >= settings.min_df)
        self.columns = frequent[np.argsort(-df[frequent], kind="stable")[: settings.max_features]]
        self.tfidf = TfidfTransformer(sublinear_tf=True).fit(train[:, self.columns])
        dense = self._tfidf(train)
        self.mean = dense.mean(axis=0)
        k = max(1, min(settings.components, len(train_rows) - 1, len(self.columns)))
        _, singular, self.directions = randomized_svd(
            dense - self.mean, k, n_oversamples=20, n_iter=4, random_state=settings.random_state
        )
        self.scale = np.maximum(singular / math.sqrt(len(train_rows)), 1e-12)

    def _tfidf(self, counts: sparse.csr_matrix) -> np.ndarray:
        if not counts.shape[0]:  # scikit-learn refuses to transform no rows (an empty validation part)
            return np.zeros((0, len(self.columns)))
        return self.tfidf.transform(counts[:, self.columns]).toarray()

    def __call__(self, counts: sparse.csr_matrix) -> np.ndarray:
        return (self._tfidf(counts) - self.mean) @ self.directions.T / self.scale


class ScoreBaseline:
    """A multinomial logistic regression per item over the six levels, on both speakers' text
    projections and the standardised log statistics. ``C`` is chosen per item by the validation
    log loss: the distribution is what is scored (under three rules), so it is what is tuned."""

    def __init__(self, settings: ScoreBaselineSettings | None = None):
        self.settings = settings or ScoreBaselineSettings()

    def _inputs(self, features: DialogueFeatures, rows: np.ndarray) -> np.ndarray:
        stats = (np.log1p(features.statistics[rows]) - self.stats_mean) / self.stats_scale
        return np.hstack([*(self.text[role](features.counts[role][rows]) for role in ROLES), stats])

    def fit(self, features: DialogueFeatures, train: Sequence[Dialogue], val: Sequence[Dialogue]) -> ScoreBaseline:
        """Fit on ``train``; choose each item's ``C`` on ``val``. Returns ``self``."""
        train_rows, val_rows = features.index(train), features.index(val)
        self.text = {role: _TextProjection(features.counts[role], train_rows, self.settings) for role in ROLES}
        log_stats = np.log1p(features.statistics[train_rows])
        self.stats_mean, self.stats_scale = log_stats.mean(axis=0), np.maximum(log_stats.std(axis=0), 1e-12)
        x_train, x_val = self._inputs(features, train_rows), self._inputs(features, val_rows)
        y_train, y_val = score_targets(train), score_targets(val)
        self.models, self.chosen_c = [], []
        # Small dense problems: a second BLAS thread only adds waiting (measured 50x slower on a
        # busy 2-core machine), so the regressions run on one.
        with threadpool_limits(1):
            for item in range(NUM_ITEMS):
                model, c = self._fit_item(x_train, y_train[:, item], x_val, y_val[:, item])
                self.models.append(model)
                self.chosen_c.append(c)
        return self

    def _fit_item(self, x_train, y_train, x_val, y_val):
        if len(np.unique(y_train)) < 2:  # nothing to learn: the training level is certain
            return DummyClassifier(strategy="prior").fit(x_train, y_train), None
        best, best_loss, best_c = None, math.inf, None
        model = LogisticRegression(max_iter=1000, warm_start=True)
        for c in self.settings.c_grid:
            model.set_params(C=c).fit(x_train, y_train)
            probs = self._levels(model, x_val)
            loss = -np.log(np.clip(probs[np.arange(len(y_val)), y_val], 1e-12, None)).mean() if len(y_val) else 0.0
            if loss < best_loss:
                best, best_loss, best_c = copy.deepcopy(model), loss, c
        return best, best_c

    @staticmethod
    def _levels(model, x: np.ndarray) -> np.ndarray:
        """[n, 6]: a level never seen in training gets probability 0, not a missing column (and
        no rows for no inputs, which scikit-learn refuses)."""
        probs = np.zeros((len(x), NUM_LEVELS))
        if len(x):
            probs[:, model.classes_] = model.predict_proba(x)
        return probs

    def predict_distribution(self, features: DialogueFeatures, dialogues: Sequence[Dialogue]) -> Tensor:
        """``Tensor[N, 20, 6]`` (float32): each item's probability of each level 0..5."""
        x = self._inputs(features, features.index(dialogues))
        with threadpool_limits(1):
            probs = np.stack([self._levels(model, x) for model in self.models], axis=1)
        return torch.from_numpy(probs.astype(np.float32))


def _mean_std(rows: Sequence[dict[str, float]]) -> dict[str, dict[str, float]]:
    """Mean and sample std (n - 1, 0 for one run) of each metric (:func:`~kokorozoo.evaluation.results.summarize_rows`)."""
    summaries = summarize_rows(rows, list(METRIC_RULES))
    return {stat: {m: getattr(s, stat) for m, s in summaries.items()} for stat in ("mean", "std")}


def evaluate_score_baseline(
    dialogues: Iterable[Dialogue],
    seeds: Sequence[int] = (0, 1, 2, 3, 4),
    split: ScoreSplitKind = "random",
    settings: ScoreBaselineSettings | None = None,
) -> dict:
    """The score baseline and the per-item-mode baseline on ``score_split(dialogues, seed, split)``
    for each seed: a JSON-ready dict.

    ``runs``: per seed, ``acc``/``acc_soft``/``mae`` each under its own rule (``rules``), the same
    three under ``argmax`` alone, the mode baseline, the split sizes and the seconds it took;
    ``mean``/``std`` of the three, and the same for ``argmax`` and ``mode_baseline``. The n-grams
    are counted once for all seeds.
    """
    started = time.perf_counter()
    settings = settings or ScoreBaselineSettings()
    dialogues = list(dialogues)
    features = DialogueFeatures.of(dialogues, settings.max_n)
    runs = []
    for seed in progress(list(seeds), f"Score baseline ({split} split)", unit="seed"):
        seed_started = time.perf_counter()
        part = score_split(dialogues, seed, split)
        model = ScoreBaseline(settings).fit(features, part.train, part.val)
        gold = torch.from_numpy(score_targets(part.test))
        figures = distribution_metrics(model.predict_distribution(features, part.test), gold)
        modes = constant_predictions(item_modes(torch.from_numpy(score_targets(part.train))), len(part.test))
        runs.append(
            {
                "seed": seed,
                "sizes": part.sizes(),
                **figures["by_rule"],
                "argmax": figures["argmax"],
                "mode_baseline": score_figures(modes, gold),
                "chosen_c": model.chosen_c,
                "seconds": round(time.perf_counter() - seed_started, 2),
            }
        )
    return {
        "split": split,
        "seeds": list(seeds),
        "rules": dict(METRIC_RULES),
        "settings": asdict(settings),
        "runs": runs,
        **_mean_std(runs),
        "argmax": _mean_std([run["argmax"] for run in runs]),
        "mode_baseline": _mean_std([run["mode_baseline"] for run in runs]),
        "seconds": round(time.perf_counter() - started, 2),
    }


def score_baseline_distribution(
    split: Split,
    test_dialogues: Sequence[Dialogue] | None = None,
    settings: ScoreBaselineSettings | None = None,
    cache_dir: str | os.PathLike | None = None,
) -> Tensor:
    """The score baseline fitted on ``split.train`` (``C`` chosen on ``split.val``), predicting
    ``test_dialogues`` (default ``split.test``): ``Tensor[N, 20, 6]`` (float32).

    For a score task to show the baseline beside its model at test time without refitting: the
    result is cached under ``<cache_dir>/score-baseline/`` (default
    :func:`kokorozoo.backbone.default_cache_dir`, i.e. ``$KOKOROZOO_CACHE``), keyed by the ids of
    the three parts and ``settings``.
    """
    settings = settings or ScoreBaselineSettings()
    test_dialogues = list(split.test if test_dialogues is None else test_dialogues)
    parts = {"train": split.train, "val": split.val, "test": test_dialogues}
    key = json.dumps(
        {"version": BASELINE_VERSION, "settings": asdict(settings), **{k: [d.id for d in v] for k, v in parts.items()}},
        sort_keys=True,
    )
    if cache_dir is None:
        from kokorozoo.backbone import default_cache_dir

        cache_dir = default_cache_dir()
    path = Path(cache_dir) / "score-baseline" / f"{hashlib.sha256(key.encode()).hexdigest()[:24]}.pt"
    if path.is_file():
        return torch.load(path, weights_only=True)  # our own cache, still read as tensors only
    everything = {d.id: d for d in (*split.train, *split.val, *test_dialogues)}
    features = DialogueFeatures.of(everything.values(), settings.max_n)
    probs = ScoreBaseline(settings).fit(features, split.train, split.val).predict_distribution(features, test_dialogues)
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile(dir=path.parent, suffix=".tmp", delete=False) as tmp:
        torch.save(probs, tmp)  # written aside and renamed: a killed run leaves no half file
    os.replace(tmp.name, path)
    return probs


# ---------------------------------------------------------------------------------------------
# Response-generation baselines

RESPONSE_BASELINES = ("copy_previous", "retrieval")
#: Queries compared with the training client turns at a time (bounds the dense similarity block).
_QUERY_CHUNK = 256


def _check_target(dialogue: Dialogue, turn: int) -> list:
    turns = dialogue_turns(dialogue)
    if not 0 <= turn < len(turns) or turns[turn].role != "counselor":
        raise ValueError(f"turn {turn} of dialogue {dialogue.id} is not a counselor turn")
    return turns


def _last_text(turns: Sequence, before: int, role: str) -> str:
    """The text of the last ``role`` turn before index ``before``; empty when there is none."""
    return next((t.text for t in reversed(turns[:before]) if t.role == role), "")


def _tfidf_rows(counts: sparse.csr_matrix, n_train: int) -> sparse.csr_matrix:
    """L2-normalised TF-IDF of every row, with the n-grams and IDF of the first ``n_train`` rows."""
    columns = np.flatnonzero(np.bincount(counts[:n_train].indices, minlength=counts.shape[1]))
    counts = counts[:, columns]
    return TfidfTransformer(sublinear_tf=True).fit(counts[:n_train]).transform(counts).tocsr()


def response_baselines(
    train_dialogues: Sequence[Dialogue], targets: Sequence[tuple[Dialogue, int]], max_n: int = 3
) -> dict[str, list[str]]:
    """Two reference points for generated counselor turns, one response per target.

    ``targets`` are ``(dialogue, turn index)`` pairs, the index into ``dialogue_turns(dialogue)``
    of a counselor turn (what :class:`ResponseTask` generates).

    - ``copy_previous``: the counselor turn before the target (empty when there is none): how far
      repeating oneself gets on BLEU/ROUGE.
    - ``retrieval``: the counselor turn that followed the training client turn most similar
      (cosine of character 1..``max_n``-gram TF-IDF, fitted on the training client turns) to the
      client turn before the target. Ties, and a target with no client turn before it, take the
      earliest training pair; ``train_dialogues`` are read in the order given.
    """
    targets = [(dialogue, turn, _check_target(dialogue, turn)) for dialogue, turn in targets]
    copies = [_last_text(turns, turn, "counselor") for _, turn, turns in targets]
    prompts, replies = [], []
    for dialogue in train_dialogues:
        turns = dialogue_turns(dialogue)
        for a, b in zip(turns, turns[1:]):
            if a.role == "client" and b.role == "counselor":
                prompts.append(a.text)
                replies.append(b.text)
    if not prompts:
        raise ValueError("the training dialogues hold no client turn followed by a counselor turn")
    queries = [_last_text(turns, turn, "client") for _, turn, turns in targets]
    vectors = _tfidf_rows(char_ngram_counts(prompts + queries, max_n), len(prompts))
    library, asked = vectors[: len(prompts)].T.tocsc(), vectors[len(prompts) :]
    nearest = [
        int(i)
        for start in range(0, len(queries), _QUERY_CHUNK)
        for i in (asked[start : start + _QUERY_CHUNK] @ library).toarray().argmax(axis=1)
    ]
    return {"copy_previous": copies, "retrieval": [replies[i] for i in nearest]}


# ---------------------------------------------------------------------------------------------
# At test time: the baselines beside a model, on the rows it was tested on


@dataclass
class RunBaselines:
    """The baselines of one test run: their figures by name (a ``per_item`` entry holds per-item
    columns), the rule behind each, and per-row fields (what each baseline answered) that go into
    the model's rows, so that every figure can be recomputed from the file."""

    figures: dict[str, dict] = field(default_factory=dict)
    rules: dict[str, Any] = field(default_factory=dict)
    row_fields: dict[str, list] = field(default_factory=dict)


def most_frequent(labels: Tensor) -> Tensor:
    """Each column's most frequent label, the smaller on a tie (so the baseline is deterministic):
    LongTensor[items] of [N, items] labels, a 0-d tensor of [N] labels."""
    labels = torch.as_tensor(labels).long()
    counts = torch.nn.functional.one_hot(labels.reshape(len(labels), -1), int(labels.max()) + 1).sum(0)
    modes = counts.argmax(-1)  # the first maximum: the smaller label
    return modes if labels.ndim > 1 else modes[0]


def run_baselines(task, datamodule, rows: list[dict], tokenize: str | None = None) -> RunBaselines:
    """What ``task``'s test ``rows`` (every process's, in order) are shown beside, fit on the
    datamodule's whole split:

    - ``baseline``: the constant answer, each label's most frequent value on the training part
      (:meth:`~kokorozoo.data.datamodules.KokoroChatDataModule.train_labels`), scored by the task
      (:meth:`~kokorozoo.tasks.base.Task.score_constant`);
    - score prediction: ``classical``, the non-neural score baseline's distribution, each metric
      under its own rule (each row gets its ``classical_distribution``);
    - response generation of counselor turns: ``copy_previous`` and ``retrieval``
      (:func:`response_baselines`), on the run's ``tokenize`` (a response result always names it;
      each row gets their ``baselines``).
    """
    from kokorozoo.data.datamodules import KokoroChatDataModule, ResponseDataModule, ScoreDataModule

    out = RunBaselines()
    if not rows or not isinstance(datamodule, KokoroChatDataModule):
        return out
    labels = datamodule.train_labels()
    if labels is not None and len(labels):
        section = task.score_constant(most_frequent(labels), rows)
        if section is not None:
            out.figures["baseline"] = section
            out.rules["baseline"] = "the per-item mode" if labels.ndim > 1 else "the most frequent label"
    if isinstance(datamodule, ScoreDataModule):
        by_id = datamodule.data.by_id()
        probs = score_baseline_distribution(datamodule.whole_split(), [by_id[r["dialogue_id"]] for r in rows])
        out.row_fields["classical_distribution"] = probs.tolist()
        gold = torch.tensor([r["gold"] for r in rows])  # JSON ints: int64
        out.figures["classical"] = rule_figures(probs, gold)
        out.rules["classical"] = dict(METRIC_RULES)
    if isinstance(datamodule, ResponseDataModule) and datamodule.role == "counselor":
        by_id = datamodule.data.by_id()
        targets = [(by_id[r["dialogue_id"]], r["turn_index"]) for r in rows]
        predicted = response_baselines(datamodule.whole_split().train, targets)
        out.row_fields["baselines"] = [{name: texts[i] for name, texts in predicted.items()} for i in range(len(rows))]
        for name, texts in predicted.items():
            metrics = text_metrics(tokenize, sync_on_compute=False)  # every process holds all rows
            metrics.update(texts, [r["reference"] for r in rows])
            out.figures[name] = {k: float(v) for k, v in metrics.compute().items()}
    return out
