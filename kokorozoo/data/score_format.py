"""Score prediction's answer format, in one place: the instruction that asks for the 20 ratings,
the answer a model is trained to write (:func:`format_scores`) and its parser
(:func:`parse_scores`). The datamodule writes training answers with it, the text task reads
generations with it.

**The answer**: one line per item, in order, nothing else::

    D1: 3
    D2: 4
    ...
    D20: 5

Short (about six tokens a line), unambiguous, and labelled, so that a partial answer still gives
the items it names.

**The parser** never raises and returns float ``Tensor[20]`` with NaN for an invalid item:

- the text is NFKC-normalized first, so full-width ``Ｄ１：３`` reads as ``D1:3``;
- every ``D<n>: <value>`` anywhere counts (``=`` works too, spaces optional, ``d`` as ``D``); text
  around it is ignored, and so are item numbers outside 1-20;
- a value must be one digit 0-5: ``6``, ``10``, ``-1``, ``+3``, ``3.5`` make the item invalid
  (the whole number is read, so ``35`` is never taken for 3); a missing item is invalid;
- an item given twice counts when both values agree, and is invalid when they differ.

**The constrained reading** (:func:`answer_form`): the answer's shape is fixed, so a model's
scores can also be read without generating: feed the answer with known values after the prompt
and read, at each item's value position, the probabilities of the six digit tokens. It needs every
value to be one token, the same whatever the value (true of Llama 3's tokenizer, which splits
numbers from their neighbours, and of the tiny one); :func:`answer_form` checks that.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from kokorozoo.errors import UsageError
from kokorozoo.records import FEEDBACK_ITEMS, ITEM_MAX, NUM_ITEMS

#: The request that follows the dialogue (a user message): predict the client's 20 ratings, in the
#: answer format, with each item named as the Japanese review form names it.
SCORE_INSTRUCTION = (
    "以上のカウンセリング対話について、相談者（クライアント）が対話後に付けた評価を予測してください。"
    "次の20項目をそれぞれ0から5の整数で、「D1: 3」のように1行に1項目ずつ、D1からD20の順に答えてください。\n"
    + "\n".join(f"D{i}: {item.jp}" for i, item in enumerate(FEEDBACK_ITEMS, start=1))
)

# "D<item>: <value>" after NFKC (full-width letters, digits and colons become ASCII); the value is
# the whole number that follows, sign and decimals included, so "35", "-1" and "3.5" are seen whole
# and rejected rather than read as 3.
_SCORE_LINE = re.compile(r"(?<![0-9A-Za-z_])D[ \t]*(\d{1,2})[ \t]*[:=][ \t]*([+-]?\d+(?:\.\d+)?)", re.IGNORECASE)
_LEVELS = {str(level): float(level) for level in range(ITEM_MAX + 1)}


def format_scores(scores: Sequence[int]) -> str:
    """The answer a score model is trained to write: one line per item, ``D1: 3`` .. ``D20: 5``."""
    if len(scores) != NUM_ITEMS:
        raise ValueError(f"expected {NUM_ITEMS} scores, got {len(scores)}")
    return "\n".join(f"D{i}: {int(value)}" for i, value in enumerate(scores, start=1))


def parse_scores(text: object) -> torch.Tensor:
    """The 20 scores in a model's answer, float Tensor[20] with NaN for every item it lacks; never
    raises. Rules: NFKC first; each ``D<n>: <value>`` anywhere (text around it is ignored) sets
    item n (1-20; other numbers are ignored); a value must be one digit 0-5 (``6``, ``-1``, ``3.5``
    make the item invalid); an item given twice counts only if both values agree."""
    scores = torch.full((NUM_ITEMS,), float("nan"))
    if not isinstance(text, str):
        return scores
    seen: dict[int, float] = {}
    for number, value in _SCORE_LINE.findall(unicodedata.normalize("NFKC", text)):
        item = int(number) - 1
        if not 0 <= item < NUM_ITEMS:
            continue
        score = _LEVELS.get(value, float("nan"))
        seen[item] = score if item not in seen or seen[item] == score else float("nan")
    for item, score in seen.items():
        scores[item] = score
    return scores


@dataclass(frozen=True)
class AnswerForm:
    """The answer's tokens for given values (``ids``, without special tokens), the index in
    ``ids`` of each item's value token (``value_positions``, 20) and the token of each level 0..5
    (``level_ids``, 6)."""

    ids: list[int]
    value_positions: list[int]
    level_ids: list[int]


def answer_form(tokenizer, fill: Sequence[int]) -> AnswerForm:
    """The answer :func:`format_scores` writes for ``fill``, tokenized, with where its values sit.

    Found by tokenizing the answer with every item at each level: the six token lists must have
    one length and differ at exactly 20 positions, one per item, each holding the same token for a
    level whatever the item; then ``fill``'s own tokens must be those with its levels put in.
    Raises :class:`~kokorozoo.errors.UsageError` for a tokenizer that merges a value with its
    neighbours (constrained scoring cannot read such a model)."""

    def encode(values: Sequence[int]) -> list[int]:
        return tokenizer(format_scores(values), add_special_tokens=False)["input_ids"]

    uniform = [encode([level] * NUM_ITEMS) for level in range(ITEM_MAX + 1)]
    lengths = {len(ids) for ids in uniform}
    positions = [i for i in range(len(uniform[0])) if len({ids[i] for ids in uniform}) > 1] if len(lengths) == 1 else []
    level_ids = [uniform[level][positions[0]] for level in range(ITEM_MAX + 1)] if positions else []
    if len(positions) != NUM_ITEMS or any(ids[i] != ids[positions[0]] for ids in uniform for i in positions):
        raise UsageError(
            "constrained scoring needs each score digit to be a token of its own in the answer;"
            " this tokenizer merges them with their neighbours: use model.init_args.scoring: greedy"
        )
    ids = list(uniform[0])
    for position, value in zip(positions, fill):
        ids[position] = level_ids[int(value)]
    if ids != encode(fill):
        raise UsageError("constrained scoring: the answer's tokens change with its values; use scoring: greedy")
    return AnswerForm(ids, positions, level_ids)
