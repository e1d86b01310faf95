"""Loading, validating and merging all 6,589 KokoroChat dialogues (target: at most 5 s here)."""

from kokorozoo.data import load_kokorochat, merge_utterances


def load_and_merge():
    data = load_kokorochat()
    return data, sum(len(merge_utterances(d.utterances)) for d in data)


def test_load_validate_merge(benchmark):
    data, turns = benchmark.pedantic(load_and_merge, rounds=3, iterations=1, warmup_rounds=1)
    assert len(data) == 6589 and turns == 471940
