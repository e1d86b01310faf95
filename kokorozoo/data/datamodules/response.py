"""Response generation (the paper's Kokoro-Low/High/Full): every counselor turn learnt, or every
client turn for a client model; the test part as generation requests."""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

from kokorozoo.data.batching import batch_samples
from kokorozoo.data.datamodules.base import KokoroChatDataModule, Part, check_split_kind
from kokorozoo.data.dialogue import dialogue_turns
from kokorozoo.data.encoding import dialogue_windows, encode_dialogue, generation_prompt, per_turn_samples
from kokorozoo.data.splits import RESPONSE_SPLITS, Split, response_split
from kokorozoo.progress import progress
from kokorozoo.records import Dialogue, Role


@dataclass  # not frozen: Lightning walks batches and rebuilds dataclasses when moving them to a device
class GenerationRequest:
    """One target turn to generate: where it is, its prompt tokens, the reference text and the
    turn just before it (the other speaker's, what the generated turn answers)."""

    dialogue_id: str
    turn_index: int
    history_turns: int
    prompt_ids: list[int]
    reference: str
    previous: str = ""
    #: The history turns the prompt holds, as (role, text): what a model behind an endpoint is sent.
    history: tuple[tuple[str, str], ...] = ()


class ResponseDataModule(KokoroChatDataModule):
    """Response generation (the paper's Kokoro-Low/High/Full): learn every counselor turn, or
    every client turn for a client model.

    Args:
        subset: ``low`` (< 70), ``high`` (70-98) or ``full`` (<= 98); test is always score >= 99.
        role: whose turns are learnt and generated: ``counselor`` (the paper's model) or
            ``client`` (a simulated client). The same data, splits and chat rendering (the client
            stays the ``user``); only the targets change.
        mode: ``dialogue`` trains all target turns of a dialogue in one sequence (windowed when
            longer than ``max_length``); ``per_turn`` makes one sample per target turn, as the
            paper did. Both put the loss on the same tokens.
        system_prompt: an optional system message before every dialogue.
        test_turns: generate this many test target turns, drawn with ``seed`` (all when None).
        packing: training and validation batches without padding: a batch's samples in one row,
            attention kept inside each (:func:`~kokorozoo.data.batching.pack_samples`); the same
            loss as padded batches on fewer tokens.
        split_kind: ``random`` (the paper's) or ``counselor_disjoint`` (the same test dialogues;
            every dialogue of a test counselor is left out of train and validation, so the model
            is tested on counselors it has never read); every report names it.

    Generation prompts are cut to ``max_length`` minus the task's ``max_new_tokens`` (given by
    ``connect``), so a generated turn always has room.
    """

    def __init__(
        self,
        subset: Literal["low", "high", "full"] = "high",
        role: Role = "counselor",
        mode: Literal["dialogue", "per_turn"] = "dialogue",
        system_prompt: str | None = None,
        test_turns: int | None = None,
        packing: bool = False,
        split_kind: Literal["random", "counselor_disjoint"] = "random",
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.packing = packing
        check_split_kind(split_kind, RESPONSE_SPLITS)
        self.split_kind = split_kind
        if subset not in ("low", "high", "full"):
            raise ValueError(f"subset must be low, high or full, got {subset!r}")
        if mode not in ("dialogue", "per_turn"):
            raise ValueError(f"mode must be 'dialogue' or 'per_turn', got {mode!r}")
        if role not in ("counselor", "client"):
            raise ValueError(f"role must be 'counselor' or 'client', got {role!r}")
        self.subset, self.mode, self.system_prompt, self.test_turns = subset, mode, system_prompt, test_turns
        self.role = role

    def make_split(self, dialogues: Sequence[Dialogue]) -> Split:
        return response_split(dialogues, self.subset, self.seed, self.split_kind)

    def prompt_settings(self) -> dict[str, Any]:
        return {**super().prompt_settings(), "role": self.role, "system_prompt": self.system_prompt}

    def encode(self, dialogue: Dialogue):
        return encode_dialogue(self.require_tokenizer(), dialogue_turns(dialogue), self.system_prompt, self.role)

    def encode_part(self, part: Part, dialogues: Sequence[Dialogue]) -> list:
        if part == "test":
            return self.generation_requests(dialogues)
        return self.training_samples(dialogues, f"Encoding {part}")

    def training_samples(self, dialogues: Sequence[Dialogue], desc: str) -> list[tuple[list[int], list[int]]]:
        make = dialogue_windows if self.mode == "dialogue" else per_turn_samples
        return [s for d in progress(dialogues, desc, unit="dialogue") for s in make(self.encode(d), self.max_length)]

    def generation_requests(self, dialogues: Sequence[Dialogue]) -> list[GenerationRequest]:
        """The test target turns (a seeded sample of ``test_turns`` when set), in dialogue order."""
        turns = {d.id: dialogue_turns(d) for d in dialogues}
        encoded = {d.id: self.encode(d) for d in progress(dialogues, "Encoding test", unit="dialogue")}
        chosen = [(d.id, t) for d in dialogues for t in encoded[d.id].targets]
        if self.test_turns is not None and self.test_turns < len(chosen):
            keep = set(random.Random(self.seed).sample(range(len(chosen)), self.test_turns))
            chosen = [x for i, x in enumerate(chosen) if i in keep]
        budget = self.max_length - self.max_new_tokens
        requests = []
        for dialogue_id, t in chosen:
            prompt, first_turn = generation_prompt(encoded[dialogue_id], t, budget)
            text = turns[dialogue_id]
            history = tuple((turn.role, turn.text) for turn in text[first_turn:t])
            requests.append(
                GenerationRequest(dialogue_id, t, t - first_turn, prompt, text[t].text, text[t - 1].text, history)
            )
        return requests

    def collate(self, samples: Sequence, part: Part) -> dict:
        """Training and validation: right-padded (or packed) token batches. Test: the requests as
        they are (the task generates from their token lists; padding, when its way of generating
        needs any, is done there)."""
        if part == "test":
            return {"requests": list(samples)}
        return batch_samples(samples, self.require_tokenizer().pad_token_id, self.packing)
