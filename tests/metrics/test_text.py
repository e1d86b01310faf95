"""BLEU / ROUGE / Distinct on Japanese: agreement with sacrebleu and rouge-score on real KokoroChat
utterances (same tokens, 1e-6), hand-computed Distinct, and the tokenizer."""

from __future__ import annotations

import pytest
import sacrebleu
import torch
from _cases import PAIRS
from _kokoro_pairs import response_pairs
from _references import reference_text_metrics
from rouge_score.rouge_scorer import RougeScorer

from kokorozoo.metrics import BLEU, ROUGE, TOKENIZE_MODES, Distinct, text_metrics, tokenize_ja
from kokorozoo.metrics.text import _tagger

pytestmark = pytest.mark.mutation  # fast enough to run per mutant

NOT_UPDATED = "ignore:The ``compute`` method of metric"


def _data(mode: str = "mecab"):
    preds, refs = response_pairs()
    return list(preds), list(refs)


def _joined(texts, mode):
    return [" ".join(tokenize_ja(t, mode)) for t in texts]


class _Tok:
    """The tokenizer object rouge-score takes; rouge-score's own would delete all Japanese."""

    def __init__(self, mode):
        self.mode = mode

    def tokenize(self, text):
        return list(tokenize_ja(text, self.mode))


def test_real_pairs_are_a_fair_test():
    preds, refs = response_pairs()
    assert len(preds) == len(refs) > 200
    assert BLEU(1).tokenize == "mecab"  # the default


# --- tokenizer ----------------------------------------------------------------------------------


def test_mecab_gives_words():
    tokens = tokenize_ja("今日は少し相談があって来ました。")
    assert "今日" in tokens and "相談" in tokens and "。" in tokens
    assert "".join(tokens) == "今日は少し相談があって来ました。"


def test_no_token_holds_whitespace_in_any_mode():
    text = "お姉さんは同居されている\u3000神谷さんも\nそれは ありがたい"
    for mode in TOKENIZE_MODES:
        tokens = tokenize_ja(text, mode)
        assert tokens and all(t and not any(c.isspace() for c in t) for t in tokens), mode
    assert tokenize_ja("あい う", "char") == ("あ", "い", "う")
    assert tokenize_ja("今日 は  晴れ", "none") == ("今日", "は", "晴れ")


def test_tagger_built_once_and_pinned_to_unidic_lite():
    assert _tagger() is _tagger()
    assert "unidic_lite" in _tagger().dictionary_info[0]["filename"]


def test_bad_arguments_raise():
    with pytest.raises(ValueError, match="tokenize"):
        tokenize_ja("あ", "sentencepiece")
    with pytest.raises(ValueError, match="tokenize"):
        BLEU(tokenize="13a")
    with pytest.raises(ValueError, match="variant"):
        ROUGE("3")
    with pytest.raises(ValueError):
        BLEU(0)
    with pytest.raises(ValueError, match="targets"):
        BLEU().update(["あ"], ["あ", "い"])
    with pytest.raises(TypeError):
        ROUGE().update("あ", "あ")


# --- BLEU ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["mecab", "char"])
@pytest.mark.parametrize("n", [1, 2, 3, 4])
def test_bleu_equals_sacrebleu_corpus_bleu(n, mode):
    preds, refs = _data(mode)
    metric = BLEU(n, tokenize=mode)
    metric.update(preds, refs)
    expected = sacrebleu.BLEU(tokenize="none", smooth_method="none", max_ngram_order=n).corpus_score(
        _joined(preds, mode), [_joined(refs, mode)]
    )
    assert expected.score > 0
    assert metric.compute().item() == pytest.approx(expected.score, abs=1e-6)


def test_bleu_over_batches_is_corpus_bleu():
    preds, refs = _data("mecab")
    whole, batched = BLEU(4), BLEU(4)
    whole.update(preds, refs)
    for i in range(0, len(preds), 7):
        batched.update(preds[i : i + 7], refs[i : i + 7])
    assert batched.compute().item() == pytest.approx(whole.compute().item(), abs=1e-9)


def test_bleu_brevity_penalty_and_degenerate_cases():
    # one sentence, all unigrams right, half the reference length: BLEU-1 = exp(1 - 4/2) * 100
    metric = BLEU(1, tokenize="none")
    metric.update(["a b"], ["a b c d"])
    assert metric.compute().item() == pytest.approx(100 * torch.e ** (1 - 2), abs=1e-9)
    for preds, refs in [(["x y z w"], ["a b c d"]), ([""], ["a b"]), (["a b"], ["a b"]), ([], [])]:
        metric = BLEU(4, tokenize="none")  # no match / empty / no 4-gram / nothing: 0, no crash
        metric.update(preds, refs)
        assert metric.compute().item() == 0.0


# --- ROUGE --------------------------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["mecab", "char"])
@pytest.mark.parametrize("variant", ["1", "2", "L"])
def test_rouge_equals_rouge_score(variant, mode):
    preds, refs = _data(mode)
    metric = ROUGE(variant, tokenize=mode)
    metric.update(preds, refs)
    key = f"rouge{variant}"
    scorer = RougeScorer([key], tokenizer=_Tok(mode))
    scores = [scorer.score(r, p)[key].fmeasure for p, r in zip(preds, refs)]
    expected = 100 * sum(scores) / len(scores)
    assert expected > 0
    assert metric.compute().item() == pytest.approx(expected, abs=1e-6)


@pytest.mark.filterwarnings(NOT_UPDATED)
def test_rouge_by_hand():
    metric = ROUGE("L", tokenize="none")
    # LCS a c d = 3: P = R = 3/4, F = 0.75; second pair: nothing in common, F = 0
    metric.update(["a b c d", "x"], ["a c d e", "y"])
    assert metric.compute().item() == pytest.approx(37.5, abs=1e-12)
    metric = ROUGE("2", tokenize="none")
    # bigrams: pred {ab, bc}, ref {ab, bd, de}: P = 1/2, R = 1/3, F = 0.4
    metric.update(["a b c"], ["a b d e"])
    assert metric.compute().item() == pytest.approx(40.0, abs=1e-12)
    assert ROUGE().compute().item() == 0.0


# --- Distinct -----------------------------------------------------------------------------------


def test_distinct_by_hand():
    preds = ["a b a", "b c"]  # unigrams a b a b c: 3 of 5; bigrams ab ba bc: 3 of 3
    d1, d2 = Distinct(1, tokenize="none"), Distinct(2, tokenize="none")
    d1.update(preds)
    d2.update(preds, ["targets are ignored", "x"])
    assert d1.compute().item() == pytest.approx(60.0)
    assert d2.compute().item() == pytest.approx(100.0)


@pytest.mark.filterwarnings(NOT_UPDATED)
def test_distinct_is_corpus_level_across_batches():
    metric = Distinct(1, tokenize="char")
    metric.update(["ああい"])  # あ あ い
    metric.update(["いう", ""])  # い う: distinct over both batches {あ, い, う} = 3 of 5
    assert metric.compute().item() == pytest.approx(60.0)
    assert Distinct(2).compute().item() == 0.0  # nothing generated: 0, no crash


def test_distinct_on_real_text_matches_a_set():
    preds, _ = _data("mecab")
    for n in (1, 2):
        metric = Distinct(n)
        metric.update(preds[:50])
        metric.update(preds[50:])
        grams = [tuple(t[i : i + n]) for p in preds for t in [tokenize_ja(p)] for i in range(len(t) - n + 1)]
        assert metric.compute().item() == pytest.approx(100 * len(set(grams)) / len(grams), abs=1e-9)


# --- the set ------------------------------------------------------------------------------------


def test_text_metrics_builds_the_paper_set():
    preds, refs = _data("char")
    metrics = text_metrics(tokenize="char")
    expected_keys = {"bleu1", "bleu2", "bleu3", "bleu4", "rouge1", "rouge2", "rougeL", "dist1", "dist2"}
    assert set(metrics.keys()) == expected_keys
    assert all(m.tokenize == "char" for m in metrics.values())
    metrics.update(preds[:20], refs[:20])
    values = metrics.compute()
    single = BLEU(2, tokenize="char")
    single.update(preds[:20], refs[:20])
    assert values["bleu2"].item() == pytest.approx(single.compute().item(), abs=1e-12)
    assert "tokenize='char'" in repr(metrics)


# -- text ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["mecab", "char", "none"])
def test_text_metrics_are_the_papers_set_on_one_tokenization(mode):
    preds, refs = [p for p, _ in PAIRS], [r for _, r in PAIRS]
    if mode == "none":
        preds, refs = [" ".join(p) for p in preds], [" ".join(r) for r in refs]  # characters, spaced
    metrics = text_metrics(mode)
    assert set(metrics.keys()) == {"bleu1", "bleu2", "bleu3", "bleu4", "rouge1", "rouge2", "rougeL", "dist1", "dist2"}
    assert all(m.tokenize == mode for m in metrics.values())
    metrics.update(preds[:2], refs[:2])
    metrics.update(preds[2:], refs[2:])
    values = {k: v.item() for k, v in metrics.compute().items()}
    expected = reference_text_metrics(preds, refs, mode)
    assert len({round(expected[f"bleu{n}"], 6) for n in range(1, 5)}) == 4 and expected["bleu4"] > 0
    for key, value in expected.items():
        assert values[key] == pytest.approx(value, abs=1e-6), key


def test_text_metrics_stay_apart_when_their_states_first_agree():
    """A first batch with nothing in common gives every ROUGE and BLEU the same (zero) state."""
    metrics = text_metrics("char")
    metrics.update(["あ"], ["い"])
    metrics.update([PAIRS[0][0]], [PAIRS[0][1]])
    values = metrics.compute()
    assert values["rouge1"] > values["rouge2"] > 0 and values["bleu1"] > values["bleu2"] > 0
    assert values["dist1"] != values["dist2"]


def test_text_metric_arguments_are_checked_and_shown():
    for bad in (0, -1, 2.0, "2"):
        with pytest.raises(ValueError, match=f"n_gram must be a positive integer, got {bad!r}"):
            BLEU(bad)
        with pytest.raises(ValueError, match=f"n must be a positive integer, got {bad!r}"):
            Distinct(bad)
    with pytest.raises(ValueError, match=r"tokenize must be one of \['char', 'mecab', 'none'\], got 'words'"):
        ROUGE("1", tokenize="words")
    with pytest.raises(ValueError, match=r"variant must be one of \('1', '2', 'L'\), got '3'"):
        ROUGE(3)
    assert ROUGE(1).variant == "1"  # given as a number, as a config may
    assert BLEU(3, "char").extra_repr() == "n_gram=3, tokenize='char'"
    assert ROUGE("2", "none").extra_repr() == "variant='2', tokenize='none'"
    assert Distinct(2, "char").extra_repr() == "n=2, tokenize='char'"
    with pytest.raises(TypeError, match="preds must be a list of strings"):
        Distinct(1).update("あいう")
    with pytest.raises(TypeError, match="not single strings"):
        BLEU(1).update(["あ"], "あ")
    with pytest.raises(ValueError, match="2 predictions but 1 targets"):
        ROUGE().update(["あ", "い"], ["あ"])


def test_text_states_are_exact_counts():
    bleu, rouge, distinct = BLEU(4, "char"), ROUGE("L", "char"), Distinct(2, "char")
    for metric in (bleu, rouge, distinct):
        metric.update([p for p, _ in PAIRS], [r for _, r in PAIRS])
    assert {bleu.matches.dtype, bleu.ngrams.dtype, bleu.pred_len.dtype, bleu.target_len.dtype} == {torch.long}
    assert rouge.fmeasure_sum.dtype == torch.float64 and rouge.count.dtype == torch.long and int(rouge.count) == 5
    hyp = [[c for c in p if not c.isspace()] for p, _ in PAIRS]
    assert bleu.pred_len.item() == sum(map(len, hyp)) and bleu.ngrams.tolist() == [
        sum(max(len(h) - n + 1, 0) for h in hyp) for n in range(1, 5)
    ]
    assert int(distinct.total) == sum(len(h) - 1 for h in hyp) and distinct.ids[0].dtype == torch.long
    assert bleu.compute().dtype == rouge.compute().dtype == distinct.compute().dtype == torch.float64


@pytest.mark.filterwarnings("ignore:The ``compute`` method of metric")
def test_empty_text_metrics_are_zero():
    assert ROUGE("1").compute().item() == 0.0 and Distinct(1).compute().item() == 0.0
    empty = Distinct(1)
    empty.update([""])
    assert empty.compute().item() == 0.0 and int(empty.total) == 0


def test_distinct_over_an_empty_batch_keeps_its_ids_exact():
    """64-bit n-gram ids: an empty first batch must not turn the concatenated ids into floats."""
    texts = [p for p, _ in PAIRS]
    for n in (1, 2):
        metric = Distinct(n, "char")
        metric.update([""])
        metric.update([])
        metric.update(texts)
        assert metric.compute().item() == pytest.approx(
            reference_text_metrics(texts, texts, "char")[f"dist{n}"], abs=1e-9
        )
