"""Greedy generation of many counselor turns, sharing the work of their common history.

Every counselor-turn prompt of a dialogue is a prefix of the same token sequence (the dialogue is
rendered once, see :mod:`kokorozoo.data.encoding`). A ``generate`` call per turn recomputes that
history once per turn. :func:`generate_shared_prefix` instead runs each *chain* of prompts that
are prefixes of one another through the model once: that single forward gives the key/value cache
of every prompt (its first positions) and the first new token of every prompt (the logits at its
last position). The continuations of all prompts are then decoded together, one batched step per
new token, each row attending to its own prefix of the cache (left-padded, as ``generate`` pads a
batch). The result is the same greedy decoding as ``generate``: tested identical token for token
in float32, and in bfloat16 identical to ``generate`` on the same batch (different batch shapes use
differently rounding kernels, in ``generate`` too, which can flip a near-tied token).

Conversations that go on (``kokorozoo chat``, simulated sessions) share their history across
time instead: :func:`generate_continuing` returns each prompt's cache with its new tokens, and the
next turn's prompt, which extends them, runs only the tokens after their longest common prefix
before the same batched decoding.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch

from kokorozoo.data.batching import pad_ids

#: Generation-config settings that ``generate`` applies even when decoding greedily, with their
#: neutral values; the shared-prefix decoder implements none of them, so a model that sets one is
#: generated with ``generate``.
_GENERATE_ONLY = {
    "num_beams": 1,
    "repetition_penalty": 1.0,
    "encoder_repetition_penalty": 1.0,
    "no_repeat_ngram_size": 0,
    "encoder_no_repeat_ngram_size": 0,
    "sequence_bias": None,
    "bad_words_ids": None,
    "suppress_tokens": None,
    "begin_suppress_tokens": None,
    "forced_bos_token_id": None,
    "forced_eos_token_id": None,
    "min_length": 0,
    "exponential_decay_length_penalty": None,
    "guidance_scale": 1.0,
    "watermarking_config": None,
    "remove_invalid_values": False,
}
#: RoPE variants whose frequencies depend on the longest position in the forward: a prefill over a
#: whole chain would not equal a prefill over one prompt.
_LENGTH_DEPENDENT_ROPE = {"dynamic", "longrope"}


def shared_prefix_supported(model) -> bool:
    """Whether the shared-prefix decoder gives ``generate``'s greedy tokens for ``model``: a model
    with full attention in every layer (a sliding window keeps only the latest keys, so a prompt's
    prefix could not be cut from a longer chain's cache), position-independent RoPE scaling, and no
    generation setting from ``_GENERATE_ONLY``."""
    generation = getattr(model, "generation_config", None)
    if any(getattr(generation, name, neutral) not in (None, neutral) for name, neutral in _GENERATE_ONLY.items()):
        return False
    config = model.config
    if getattr(config, "sliding_window", None) or any(
        t != "full_attention" for t in getattr(config, "layer_types", None) or ()
    ):
        return False
    rope = getattr(config, "rope_parameters", None) or getattr(config, "rope_scaling", None) or {}
    return rope.get("rope_type", rope.get("type")) not in _LENGTH_DEPENDENT_ROPE


@dataclass
class Sampling:
    """How the next token is chosen: greedily (``temperature`` 0, the paper's decoding and the
    default everywhere) or drawn from the softmax of the logits divided by ``temperature``, from a
    generator seeded with ``seed`` (the same seed, the same replies)."""

    temperature: float = 0.0
    seed: int = 0
    _generator: torch.Generator | None = field(default=None, repr=False)
    _calls: int = field(default=0, repr=False)

    def __post_init__(self):
        if self.temperature < 0:
            raise ValueError(f"temperature must be 0 (greedy) or more, got {self.temperature}")

    @property
    def greedy(self) -> bool:
        return self.temperature == 0

    def seed_global(self) -> None:
        """Seed torch's global generator (``model.generate`` draws from it) with the next seed of
        this sampling's sequence: each call draws afresh (``/retry`` gives another reply) and the
        sequence is the same for the same seed."""
        torch.manual_seed(self.seed + self._calls)
        self._calls += 1

    def pick(self, logits: torch.Tensor) -> torch.Tensor:
        """The next token of each row of ``logits`` [rows, vocabulary]."""
        if self.greedy:
            return logits.argmax(-1)
        if self._generator is None:  # made on the first draw, on the model's device; it goes on from there
            self._generator = torch.Generator(device=logits.device).manual_seed(self.seed)
        probs = torch.softmax(logits.float() / self.temperature, dim=-1)
        return torch.multinomial(probs, 1, generator=self._generator).squeeze(-1)


GREEDY = Sampling()


@torch.no_grad()
def generate_padded(
    model,
    prompts: Sequence[Sequence[int]],
    max_new_tokens: int,
    min_new_tokens: int,
    stop_ids: Sequence[int],
    pad_id: int,
    sampling: Sampling = GREEDY,
) -> list[list[int]]:
    """Continuations (greedy unless ``sampling`` says otherwise) through one ``model.generate``
    call on ``prompts`` left-padded into a batch (a list of one prompt gives the plain
    one-``generate``-per-turn way)."""
    device = _device(model)
    input_ids, attention_mask = pad_ids(prompts, pad_id, left=True)
    if not sampling.greedy:
        sampling.seed_global()
    out = model.generate(
        input_ids=input_ids.to(device),
        attention_mask=attention_mask.to(device),
        max_new_tokens=max_new_tokens,
        min_new_tokens=min_new_tokens,
        do_sample=not sampling.greedy,
        **({} if sampling.greedy else {"temperature": sampling.temperature, "top_k": None, "top_p": None}),
        eos_token_id=list(stop_ids),
        pad_token_id=pad_id,
    )
    return [_until_stop(row.tolist(), stop_ids) for row in out[:, input_ids.shape[1] :]]


@dataclass
class _Row:
    """One prompt waiting to be decoded: its index in the request, its length in tokens, its cache
    (views into its chain's cache, one (keys, values) pair per layer; dropped once copied into the
    decoding batch) and the logits of its first new token."""

    index: int
    length: int
    cache: list[tuple[torch.Tensor, torch.Tensor]] | None
    logits: torch.Tensor


@torch.no_grad()
def generate_shared_prefix(
    model,
    prompts: Sequence[Sequence[int]],
    max_new_tokens: int,
    min_new_tokens: int,
    stop_ids: Sequence[int],
    pad_id: int,
    batch_size: int = 16,
) -> list[list[int]]:
    """Greedy continuations of ``prompts`` (each up to and including its first stop token), with one
    forward per prefix chain and ``batch_size`` prompts decoded together."""
    if max_new_tokens <= 0:  # as generate
        raise ValueError(f"max_new_tokens must be greater than 0, but is {max_new_tokens}")
    if any(len(p) == 0 for p in prompts):
        raise ValueError("every prompt needs at least one token")
    results: list[list[int]] = [[] for _ in prompts]
    pending: list[_Row] = []
    for chain, members in prefix_chains(prompts):
        pending += _prefill(model, chain, [(i, len(prompts[i])) for i in members])
        while len(pending) >= batch_size:
            rows, pending = pending[:batch_size], pending[batch_size:]
            _decode(model, rows, results, max_new_tokens, min_new_tokens, stop_ids, pad_id)
    if pending:
        _decode(model, pending, results, max_new_tokens, min_new_tokens, stop_ids, pad_id)
    return results


@dataclass
class PromptCache:
    """Tokens and their key/value cache (one (keys, values) pair per layer, each [1, heads,
    len(ids), dim]), kept after a turn so the next prompt that extends them computes only what is
    new."""

    ids: list[int]
    layers: list[tuple[torch.Tensor, torch.Tensor]]


@torch.no_grad()
def generate_continuing(
    model,
    prompts: Sequence[Sequence[int]],
    caches: Sequence[PromptCache | None],
    max_new_tokens: int,
    min_new_tokens: int,
    stop_ids: Sequence[int],
    pad_id: int,
    on_token: Callable[[int, int], None] | None = None,
    sampling: Sampling = GREEDY,
) -> tuple[list[list[int]], list[PromptCache]]:
    """Continuations (greedy unless ``sampling`` says otherwise) of prompts that extend earlier
    ones (the next turn of a chat or of a simulated session), all decoded together: each prompt
    runs only its tokens after the longest prefix it shares with its cache (the history computed
    in earlier turns), and each comes back with the cache of its prompt and new tokens for its
    next turn. ``on_token(i, token)`` sees
    every new token of prompt ``i`` as it is chosen (streaming)."""
    if max_new_tokens <= 0:  # as generate
        raise ValueError(f"max_new_tokens must be greater than 0, but is {max_new_tokens}")
    rows = [_prefill_extending(model, i, list(prompt), cache) for i, (prompt, cache) in enumerate(zip(prompts, caches))]
    results: list[list[int]] = [[] for _ in prompts]
    kept: list[PromptCache] = [None] * len(prompts)  # type: ignore[list-item]
    _decode(
        model,
        rows,
        results,
        max_new_tokens,
        min_new_tokens,
        stop_ids,
        pad_id,
        on_token=on_token,
        keep=(prompts, kept),
        sampling=sampling,
    )
    return results, kept


def _prefill_extending(model, index: int, prompt: list[int], cache: PromptCache | None) -> _Row:
    """One forward over what ``prompt`` adds to ``cache`` (at least its last token, for the logits)."""
    from transformers import DynamicCache

    if not prompt:
        raise ValueError("every prompt needs at least one token")
    reused = 0
    if cache is not None:
        limit = min(len(cache.ids), len(prompt) - 1)
        while reused < limit and cache.ids[reused] == prompt[reused]:
            reused += 1
    past = None
    if reused:
        past = DynamicCache(ddp_cache_data=[(k[:, :, :reused], v[:, :, :reused]) for k, v in cache.layers])
    device = _device(model)
    out = model(
        input_ids=torch.tensor([prompt[reused:]], device=device),
        position_ids=torch.arange(reused, len(prompt), device=device)[None],
        past_key_values=past,
        use_cache=True,
        logits_to_keep=1,
    )
    layers = [(layer.keys, layer.values) for layer in out.past_key_values.layers]
    return _Row(index, len(prompt), layers, out.logits[0, -1].float())


def prefix_chains(prompts: Sequence[Sequence[int]]) -> list[tuple[list[int], list[int]]]:
    """Group prompts into chains, each the longest prompt of its group and the indices of the
    prompts that are prefixes of it (every prompt in exactly one chain, chains in prompt order)."""
    chains: list[tuple[list[int], list[int]]] = []
    for i in sorted(range(len(prompts)), key=lambda i: -len(prompts[i])):
        prompt = list(prompts[i])
        for sequence, members in chains:
            if sequence[: len(prompt)] == prompt:
                members.append(i)
                break
        else:
            chains.append((prompt, [i]))
    for _, members in chains:
        members.sort()
    return sorted(chains, key=lambda chain: chain[1][0])


def _prefill(model, sequence: list[int], members: list[tuple[int, int]]) -> list[_Row]:
    """One forward over ``sequence``: its cache, and the logits at each member prompt's last token."""
    device = _device(model)
    ends = torch.tensor([length - 1 for _, length in members], device=device)
    out = model(input_ids=torch.tensor([sequence], device=device), use_cache=True, logits_to_keep=ends)
    if out.logits.shape[1] != len(members):
        raise RuntimeError(f"{type(model).__name__} ignored logits_to_keep: use generation='generate' with it")
    layers = [(layer.keys, layer.values) for layer in out.past_key_values.layers]
    logits = out.logits[0].float()
    return [
        _Row(index, length, [(k[:, :, :length], v[:, :, :length]) for k, v in layers], logits[j])
        for j, (index, length) in enumerate(members)
    ]


def _decode(
    model,
    rows: list[_Row],
    results: list[list[int]],
    max_new_tokens: int,
    min_new_tokens: int,
    stop_ids: Sequence[int],
    pad_id: int,
    on_token: Callable[[int, int], None] | None = None,
    keep: tuple[Sequence[Sequence[int]], list[PromptCache]] | None = None,
    sampling: Sampling = GREEDY,
) -> None:
    """Batched decoding (greedy unless ``sampling`` says otherwise) of ``rows`` from their caches,
    left-padded to a common length; ``on_token`` sees each row's new tokens as they come, and ``keep`` = (prompts, out) gets each
    row's cache of its prompt and new tokens (all but the last, which no forward has read)."""
    from transformers import DynamicCache

    device = _device(model)
    width = max(row.length for row in rows)
    layers = range(len(rows[0].cache))  # one layer's padded copy at a time (the cache copies it again)
    cache = DynamicCache(ddp_cache_data=(_left_padded([row.cache[layer] for row in rows], width) for layer in layers))
    for row in rows:
        row.cache = None
    attention_mask = torch.zeros(len(rows), width, dtype=torch.long, device=device)
    for r, row in enumerate(rows):
        attention_mask[r, width - row.length :] = 1
    positions = torch.tensor([[row.length] for row in rows], device=device)
    logits = torch.stack([row.logits for row in rows])
    stop = torch.tensor(list(stop_ids), device=device)
    finished = torch.zeros(len(rows), dtype=torch.bool, device=device)
    tokens = []
    for step in range(max_new_tokens):
        if step < min_new_tokens:
            logits[:, stop] = float("-inf")
        next_tokens = torch.where(finished, pad_id, sampling.pick(logits))
        tokens.append(next_tokens)
        if on_token is not None:
            for row, token, done in zip(rows, next_tokens.tolist(), finished.tolist()):
                if not done:
                    on_token(row.index, token)
        finished |= torch.isin(next_tokens, stop)
        if step == max_new_tokens - 1 or bool(finished.all()):
            break
        attention_mask = torch.cat([attention_mask, attention_mask.new_ones(len(rows), 1)], dim=1)
        out = model(
            input_ids=next_tokens[:, None],
            attention_mask=attention_mask,
            position_ids=positions + step,
            past_key_values=cache,
            use_cache=True,
        )
        logits = out.logits[:, -1].float()
    generated = torch.stack(tokens, dim=1).tolist()
    for row, new in zip(rows, generated):
        results[row.index] = _until_stop(new, stop_ids)
    if keep is not None:
        prompts, out = keep
        for r, row in enumerate(rows):
            read = len(results[row.index]) - 1  # new tokens that went through the model
            span = slice(width - row.length, width + read)
            layers = [
                (layer.keys[r : r + 1, :, span].clone(), layer.values[r : r + 1, :, span].clone())
                for layer in cache.layers
            ]
            out[row.index] = PromptCache(list(prompts[row.index]) + results[row.index][:read], layers)


def _left_padded(pairs: list[tuple[torch.Tensor, torch.Tensor]], width: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Stack per-row (keys, values) of shape (1, heads, length, dim) into (rows, heads, width, dim),
    each row right-aligned (what is left of it is masked out)."""
    k0 = pairs[0][0]
    keys = k0.new_zeros(len(pairs), k0.shape[1], width, k0.shape[3])
    values = torch.zeros_like(keys)
    for r, (k, v) in enumerate(pairs):
        keys[r, :, width - k.shape[2] :] = k[0]
        values[r, :, width - v.shape[2] :] = v[0]
    return keys, values


def _until_stop(tokens: list[int], stop_ids: Sequence[int]) -> list[int]:
    """The new tokens up to and including the first stop token (padding after it dropped)."""
    for i, token in enumerate(tokens):
        if token in stop_ids:
            return tokens[: i + 1]
    return tokens


def _device(model) -> torch.device:
    return next(model.parameters()).device
