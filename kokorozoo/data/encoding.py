"""Token-level views of a dialogue, all cut from ONE chat-template rendering.

A dialogue is rendered once with the tokenizer's chat template (through
:func:`kokorozoo.chat_format.chat_messages`); training windows, per-turn samples and generation
prompts are slices of that token sequence, so the tokens a model is trained on are exactly the
tokens it is prompted with at test time.

Labels: a turn of the target role (the counselor, or the client for a client model) is a target
when it has history before it; its loss covers the tokens the template marks as that role's output
(``{% generation %}``: the text and its end-of-turn token), never the role header. A sample keeps
the latest history that fits, cut at a turn boundary; a target turn that does not fit even alone
is cut inside the turn and its latest tokens are trained. Both sample modes (dialogue windows and
per-turn samples) put the loss on exactly the same tokens.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from kokorozoo.chat_format import CHAT_ROLE, chat_messages, header_ids, render
from kokorozoo.data.dialogue import Turn, target_turn_indices
from kokorozoo.errors import UsageError
from kokorozoo.records import Role

IGNORE_INDEX = -100


@dataclass(frozen=True)
class EncodedDialogue:
    """``ids`` of the whole rendered dialogue; ``prefix`` = tokens before the first turn (BOS and
    the system prompt), repeated at the start of every window; per turn: where its message starts,
    where its assistant-marked content starts, and where it ends."""

    ids: list[int]
    assistant_mask: list[int]
    prefix: int
    starts: list[int]
    content_starts: list[int]
    ends: list[int]
    targets: list[int]

    def window(self, first_turn: int, end: int, label_turns: Sequence[int]) -> tuple[list[int], list[int]]:
        """Tokens of the prefix plus turns ``first_turn..`` up to token ``end``, with labels on the
        assistant tokens of ``label_turns``. When even one turn is too long (``first_turn`` < 0 is
        never passed), the caller cuts the start instead."""
        return self._cut(self.starts[first_turn], end, label_turns)

    def _cut(self, start: int, end: int, label_turns: Sequence[int]) -> tuple[list[int], list[int]]:
        ids = self.ids[: self.prefix] + self.ids[start:end]
        labels = [IGNORE_INDEX] * len(ids)
        offset = self.prefix - start
        for t in label_turns:
            for pos in range(max(self.content_starts[t], start), min(self.ends[t], end)):
                if self.assistant_mask[pos]:
                    labels[pos + offset] = self.ids[pos]
        return ids, labels

    def first_turn_fitting(self, end: int, max_length: int) -> int | None:
        """The earliest turn whose start lets prefix + [start, end) fit in ``max_length``, among the
        turns that start before ``end``; None when not even the turn holding token ``end - 1`` fits
        (a later turn, empty before ``end``, is never the answer)."""
        budget = max_length - self.prefix
        for i, start in enumerate(self.starts):
            if start < end and end - start <= budget:
                return i
        return None

    def clipped(self, end: int, max_length: int, label_turns: Sequence[int]) -> tuple[list[int], list[int]]:
        """A window ending at ``end`` with the latest history that fits (cut at a turn boundary when
        possible, else inside the turn)."""
        first = self.first_turn_fitting(end, max_length)
        if first is not None:
            return self.window(first, end, label_turns)
        return self._cut(end - (max_length - self.prefix), end, label_turns)


def encode_dialogue(
    tokenizer, turns: Sequence[Turn], system_prompt: str | None = None, target: Role = "counselor"
) -> EncodedDialogue:
    """Render ``turns`` once through the chat template and find where each turn lies; ``target``
    is the role whose turns are learnt and generated (the counselor, or the client)."""
    messages = chat_messages(turns, system_prompt)
    ids, mask = render(tokenizer, messages, target)
    header, end_header = header_ids(tokenizer)
    message_starts = [i for i, tok in enumerate(ids) if tok == header]
    if len(message_starts) != len(messages):
        raise ValueError(
            f"the chat template produced {len(message_starts)} message headers for {len(messages)} messages"
        )
    skip = len(messages) - len(turns)  # the system message, if any
    starts = message_starts[skip:]
    ends = starts[1:] + [len(ids)]
    content_starts = []
    for turn, start, end in zip(turns, starts, ends):
        marked = [p for p in range(start, end) if mask[p]]
        if turn.role == target and not marked:
            if target == "counselor":
                raise ValueError("the chat template marks no assistant tokens: it needs {% generation %} markers")
            raise ValueError(
                f"the chat template marks no {CHAT_ROLE[target]} tokens: it needs {{% generation %}}"
                " markers around the target_role's messages (see kokorozoo.chat_format)"
            )
        content_starts.append(marked[0] if marked else ids.index(end_header, start) + 1)
    return EncodedDialogue(
        ids=ids,
        assistant_mask=mask,
        prefix=starts[0] if starts else len(ids),
        starts=starts,
        content_starts=content_starts,
        ends=ends,
        targets=target_turn_indices(turns, target),
    )


def dialogue_windows(encoded: EncodedDialogue, max_length: int) -> list[tuple[list[int], list[int]]]:
    """Dialogue-level training samples. A dialogue that fits is one sample with the loss on every
    target turn. A longer one is cut into windows that overlap by about half: each window starts
    at the earliest turn boundary that keeps its first new target within half a window, and takes
    every further target that ends inside it. Each target is trained once, with as much of its
    latest history as whole turns allow in half a window or more, and the tokens through the model
    stay about twice the dialogue's length. A target longer than half a window gets the latest
    whole turns that fit the whole window; one longer than the window, its latest tokens alone
    (as :func:`per_turn_samples` cuts it)."""
    windows = []
    pending = list(encoded.targets)
    while pending:
        target = pending[0]
        end = encoded.ends[target]
        first = encoded.first_turn_fitting(end, encoded.prefix + (max_length - encoded.prefix) // 2)
        if first is None:
            first = encoded.first_turn_fitting(end, max_length)
        if first is None:  # one turn longer than max_length: train on its tail alone
            windows.append(encoded.clipped(end, max_length, [target]))
            pending.pop(0)
            continue
        budget_end = encoded.starts[first] + max_length - encoded.prefix
        covered = [t for t in pending if encoded.ends[t] <= budget_end]
        windows.append(encoded.window(first, encoded.ends[covered[-1]], covered))
        pending = pending[len(covered) :]
    return windows


def per_turn_samples(encoded: EncodedDialogue, max_length: int) -> list[tuple[list[int], list[int]]]:
    """The paper's samples: one per target turn, its history up to ``max_length`` (a turn that does
    not fit alone: its latest tokens)."""
    return [encoded.clipped(encoded.ends[t], max_length, [t]) for t in encoded.targets]


def generation_prompt(encoded: EncodedDialogue, turn: int, max_length: int) -> tuple[list[int], int]:
    """The prompt for generating turn ``turn`` and the index of the first history turn it keeps
    (``turn`` itself when it keeps none).

    The prompt is the prefix (BOS, system prompt), the latest history that fits and the turn's
    header: exactly the tokens that precede the turn's text in training. The history is cut at the
    earliest turn boundary that fits; when not even the turn before fits whole, the prompt keeps
    its latest tokens up to ``max_length`` (cut inside that turn) rather than no history at all.
    A ``max_length`` that cannot hold the prefix and the header is a
    :class:`~kokorozoo.errors.UsageError`: a prompt always ends with the whole header."""
    end = encoded.content_starts[turn]
    header = end - encoded.starts[turn]
    need = encoded.prefix + header
    if max_length < need:
        raise UsageError(
            f"a prompt of at most {max_length} tokens cannot hold the {encoded.prefix} tokens before the first turn"
            f" and the {header}-token header of turn {turn}: it needs at least {need}"
        )
    first = encoded.first_turn_fitting(end, max_length)  # the turn itself at least: its header fits
    if first == turn and turn > 0 and max_length > need:  # no whole history turn fits: its latest tokens
        return encoded._cut(end - (max_length - encoded.prefix), end, [])[0], turn - 1
    return encoded.window(first, end, [])[0], first


def next_turn_prompt(
    tokenizer, turns: Sequence[Turn], target: Role, max_length: int, system_prompt: str | None = None
) -> list[int]:
    """The prompt for a turn that does not exist yet (a live chat's or a simulated session's next
    turn, spoken by ``target``): ``turns`` and an empty ``target`` turn rendered as any dialogue
    is, cut by :func:`generation_prompt` before that turn's text, so the tokens equal those a
    training dialogue holding the turn puts before it."""
    encoded = encode_dialogue(tokenizer, [*turns, Turn(target, "", 0)], system_prompt, target)
    return generation_prompt(encoded, len(turns), max_length)[0]
