"""Real KokoroChat text for the metric tests: a few dialogues read directly (fast), never copied."""

from __future__ import annotations

import functools

from kokorozoo.data.loader import find_root, read_dialogue_file, sort_key

DIALOGUE_IDS = ("4", "7", "8", "10", "11", "12")


@functools.cache
def dialogues(ids: tuple[str, ...] = DIALOGUE_IDS):
    root = find_root()
    return tuple(read_dialogue_file(root / f"{i}.json") for i in sorted(ids, key=sort_key))


@functools.cache
def response_pairs(ids: tuple[str, ...] = DIALOGUE_IDS) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """(predictions, references): every counselor utterance is a reference and the utterance just
    before it stands in for a model's prediction: related text with partial overlap, like a model's."""
    preds, refs = [], []
    for d in dialogues(ids):
        for before, after in zip(d.utterances, d.utterances[1:]):
            if after.role == "counselor":
                preds.append(before.text)
                refs.append(after.text)
    return tuple(preds), tuple(refs)
