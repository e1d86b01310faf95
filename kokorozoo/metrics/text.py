"""Response-generation metrics on Japanese: BLEU-n, ROUGE-1/2/L and Distinct-n.

Japanese has no spaces, so the usual defaults score it as zero (sacrebleu's ``13a`` gives one
token per sentence, rouge-score's normalizer deletes every Japanese character). Every metric here
therefore tokenizes explicitly with :func:`tokenize_ja` and records the mode in ``.tokenize`` so
that reports can say how the text was split.
"""

from __future__ import annotations

import functools
import hashlib
import os
from collections import Counter
from collections.abc import Callable, Sequence
from typing import Any

import torch
from sacrebleu.metrics.bleu import BLEU as _SacreBLEU
from torch import Tensor
from torchmetrics import Metric, MetricCollection
from torchmetrics.utilities import dim_zero_cat
from torchmetrics.utilities.distributed import gather_all_tensors

#: Tokenization modes accepted by :func:`tokenize_ja` and every text metric, with what they mean.
TOKENIZE_MODES: dict[str, str] = {
    "mecab": "word level (MeCab via fugashi, unidic-lite surfaces)",
    "char": "character level (whitespace dropped)",
    "none": "whitespace split (text is already tokenized)",
}


def _check_mode(mode: str) -> str:
    if mode not in TOKENIZE_MODES:
        raise ValueError(f"tokenize must be one of {sorted(TOKENIZE_MODES)}, got {mode!r}")
    return mode


@functools.lru_cache(maxsize=1)
def _tagger():
    """The one MeCab tagger of this process: slow to build, so built once and only when needed.

    The unidic-lite dictionary is named explicitly so that installing the full ``unidic`` package
    (which fugashi would otherwise prefer) cannot silently change the tokens and the scores."""
    import fugashi
    import unidic_lite

    rc = os.path.join(unidic_lite.DICDIR, "mecabrc")
    return fugashi.Tagger(f'-d "{unidic_lite.DICDIR}" -r "{rc}"')


# Cached because a metric collection tokenizes the same batch once per metric (BLEU-1..4,
# ROUGE-1/2/L, Distinct-1/2); tuples so that a cached result cannot be changed by a caller.
@functools.lru_cache(maxsize=4096)
def tokenize_ja(text: str, mode: str = "mecab") -> tuple[str, ...]:
    """Split ``text`` into tokens: MeCab words (``"mecab"``), characters (``"char"``) or
    whitespace-separated tokens (``"none"``). No token ever contains whitespace."""
    _check_mode(mode)
    if mode == "mecab":
        # MeCab keeps some whitespace (U+3000) as tokens: split surfaces so none survives.
        return tuple(tok for word in _tagger()(text) for tok in word.surface.split())
    if mode == "char":
        return tuple(ch for ch in text if not ch.isspace())
    return tuple(text.split())


def _ngrams(tokens: Sequence[str], n: int) -> list[tuple[str, ...]]:
    return [tuple(tokens[i : i + n]) for i in range(len(tokens) - n + 1)]


def _ngram_id(ngram: tuple[str, ...]) -> int:
    """A 64-bit id of an n-gram that is the same in every process (Python's ``hash`` is salted
    per process, so distinct n-grams could not be merged across DDP ranks with it)."""
    digest = hashlib.blake2b("\x00".join(ngram).encode("utf-8"), digest_size=8).digest()
    return int.from_bytes(digest, "little", signed=True)


def _pairs(preds: Sequence[str], targets: Sequence[str]) -> list[tuple[str, str]]:
    if isinstance(preds, str) or isinstance(targets, str):
        raise TypeError("preds and targets must be lists of strings, not single strings")
    if len(preds) != len(targets):
        raise ValueError(f"{len(preds)} predictions but {len(targets)} targets (one reference each)")
    return list(zip(preds, targets))


class _TextMetric(Metric):
    is_differentiable = False
    higher_is_better = True
    full_state_update = False
    plot_lower_bound = 0.0
    plot_upper_bound = 100.0

    def __init__(self, tokenize: str = "mecab", **kwargs):
        super().__init__(**kwargs)
        #: The tokenization mode, one of :data:`TOKENIZE_MODES`; print it beside every score.
        self.tokenize = _check_mode(tokenize)

    def _tokens(self, text: str) -> tuple[str, ...]:
        return tokenize_ja(text, self.tokenize)

    def _result(self, value: float) -> Tensor:
        # float64 so that the value equals the reference libraries' to 1e-6 (float32 cannot at ~30).
        return torch.tensor(value, dtype=torch.float64, device=self.device)


class BLEU(_TextMetric):
    """Corpus BLEU-n ×100: uniform weights over orders 1..n, brevity penalty, no smoothing.

    The states are sacrebleu's sufficient statistics (clipped matches and hypothesis n-grams per
    order, hypothesis and reference lengths), all sums, so the value under DDP is exactly the
    single-process one; :meth:`compute` hands them to sacrebleu's own formula."""

    def __init__(self, n_gram: int = 4, tokenize: str = "mecab", **kwargs):
        super().__init__(tokenize, **kwargs)
        if not isinstance(n_gram, int) or n_gram < 1:
            raise ValueError(f"n_gram must be a positive integer, got {n_gram!r}")
        self.n_gram = n_gram
        self.add_state("matches", torch.zeros(n_gram, dtype=torch.long), dist_reduce_fx="sum")
        self.add_state("ngrams", torch.zeros(n_gram, dtype=torch.long), dist_reduce_fx="sum")
        self.add_state("pred_len", torch.tensor(0, dtype=torch.long), dist_reduce_fx="sum")
        self.add_state("target_len", torch.tensor(0, dtype=torch.long), dist_reduce_fx="sum")

    def update(self, preds: Sequence[str], targets: Sequence[str]) -> None:
        matches, ngrams, pred_len, target_len = [0] * self.n_gram, [0] * self.n_gram, 0, 0
        for pred, target in _pairs(preds, targets):
            hyp, ref = self._tokens(pred), self._tokens(target)
            pred_len, target_len = pred_len + len(hyp), target_len + len(ref)
            for n in range(1, self.n_gram + 1):
                hyp_counts, ref_counts = Counter(_ngrams(hyp, n)), Counter(_ngrams(ref, n))
                matches[n - 1] += sum(min(c, ref_counts[g]) for g, c in hyp_counts.items())
                ngrams[n - 1] += max(len(hyp) - n + 1, 0)
        self.matches += torch.tensor(matches, device=self.device)
        self.ngrams += torch.tensor(ngrams, device=self.device)
        self.pred_len += pred_len
        self.target_len += target_len

    def compute(self) -> Tensor:
        score = _SacreBLEU.compute_bleu(
            correct=self.matches.tolist(),
            total=self.ngrams.tolist(),
            sys_len=int(self.pred_len),
            ref_len=int(self.target_len),
            smooth_method="none",
            max_ngram_order=self.n_gram,
        ).score
        return self._result(score)

    def extra_repr(self) -> str:
        return f"n_gram={self.n_gram}, tokenize={self.tokenize!r}"


class _RougeTokenizer:
    """The object rouge-score wants (anything with ``.tokenize``), splitting as the metric does."""

    def __init__(self, mode: str):
        self.mode = mode

    def tokenize(self, text: str) -> list[str]:
        return list(tokenize_ja(text, self.mode))


class ROUGE(_TextMetric):
    """Mean sentence-level ROUGE-1, -2 or -L F-measure ×100, computed by rouge-score on our tokens.

    States are the sum of F-measures and the number of pairs (both sums), so DDP is exact."""

    VARIANTS = ("1", "2", "L")

    def __init__(self, variant: str = "L", tokenize: str = "mecab", **kwargs):
        super().__init__(tokenize, **kwargs)
        variant = str(variant)
        if variant not in self.VARIANTS:
            raise ValueError(f"variant must be one of {self.VARIANTS}, got {variant!r}")
        self.variant = variant
        from rouge_score.rouge_scorer import RougeScorer

        self._key = f"rouge{variant}"
        self._scorer = RougeScorer([self._key], tokenizer=_RougeTokenizer(self.tokenize))
        self.add_state("fmeasure_sum", torch.tensor(0.0, dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("count", torch.tensor(0, dtype=torch.long), dist_reduce_fx="sum")

    def update(self, preds: Sequence[str], targets: Sequence[str]) -> None:
        pairs = _pairs(preds, targets)
        total = sum(self._scorer.score(target, pred)[self._key].fmeasure for pred, target in pairs)
        self.fmeasure_sum += total
        self.count += len(pairs)

    def compute(self) -> Tensor:
        count = int(self.count)
        return self._result(100.0 * float(self.fmeasure_sum) / count if count else 0.0)

    def extra_repr(self) -> str:
        return f"variant={self.variant!r}, tokenize={self.tokenize!r}"


class Distinct(_TextMetric):
    """Distinct-n ×100 (Li et al., 2016): distinct n-grams over all n-grams of all predictions.

    Corpus level, so under DDP the distinct n-grams of every rank must be united, which a count
    cannot do: the state is the list of 64-bit n-gram ids (concatenated across ranks) and the
    total number of n-grams (summed). Targets are accepted and ignored so that the metric sits in a
    collection called with ``(preds, targets)``."""

    def __init__(self, n: int = 1, tokenize: str = "mecab", **kwargs):
        super().__init__(tokenize, **kwargs)
        if not isinstance(n, int) or n < 1:
            raise ValueError(f"n must be a positive integer, got {n!r}")
        self.n = n
        self.add_state("ids", [], dist_reduce_fx="cat")
        self.add_state("total", torch.tensor(0, dtype=torch.long), dist_reduce_fx="sum")

    def update(self, preds: Sequence[str], targets: Sequence[str] | None = None) -> None:
        if isinstance(preds, str):
            raise TypeError("preds must be a list of strings, not a single string")
        ids = [_ngram_id(g) for pred in preds for g in _ngrams(self._tokens(pred), self.n)]
        # Only this batch's distinct ids are kept: compute() takes the union anyway.
        self.ids.append(torch.tensor(ids, dtype=torch.long, device=self.device).unique())
        self.total += len(ids)

    def _sync_dist(self, dist_sync_fn: Callable = gather_all_tensors, process_group: Any = None) -> None:
        # torchmetrics gives a rank that saw no data an empty *float* tensor for a list state, which
        # gloo cannot gather beside the other ranks' int64 ids (the process aborts): give it an
        # empty int64 one. The local state is restored from torchmetrics' cache after compute().
        if isinstance(self.ids, list) and not self.ids:
            self.ids = [torch.empty(0, dtype=torch.long, device=self.device)]
        super()._sync_dist(dist_sync_fn, process_group)

    def compute(self) -> Tensor:
        total = int(self.total)
        if not total:
            return self._result(0.0)
        distinct = dim_zero_cat(self.ids).long().unique().numel()
        return self._result(100.0 * distinct / total)

    def extra_repr(self) -> str:
        return f"n={self.n}, tokenize={self.tokenize!r}"


#: The response-generation metrics' names, in the order every table shows them.
TEXT_METRICS = (*(f"bleu{n}" for n in range(1, 5)), *(f"rouge{v}" for v in ROUGE.VARIANTS), "dist1", "dist2")


def text_metrics(tokenize: str = "mecab", **kwargs) -> MetricCollection:
    """The paper's response-generation set: BLEU-1..4, ROUGE-1/2/L, Distinct-1/2, all on the same
    tokenization. Compute groups are off: metrics whose states merely look equal after the first
    batch (e.g. ROUGE-1 and -2 on tiny inputs) must not be merged."""
    metrics: dict[str, Metric] = {f"bleu{n}": BLEU(n, tokenize, **kwargs) for n in range(1, 5)}
    metrics |= {f"rouge{v}": ROUGE(v, tokenize, **kwargs) for v in ROUGE.VARIANTS}
    metrics |= {f"dist{n}": Distinct(n, tokenize, **kwargs) for n in (1, 2)}
    return MetricCollection(metrics, compute_groups=False)
