"""The next-token loss without a [batch, length, vocabulary] tensor.

At Swallow-8B's shape a full logits tensor is L x 128,256 values a row: 2.1 GB in float32 for one
4,096-token row, and cross-entropy's softmax and its gradient need as much again each. Only the
labelled positions need logits (counselor turns, the score answer), so :func:`labelled_token_loss`
gathers the final hidden states there and applies the LM head to ``chunk_size`` of them at a time,
with the log-softmax in float32. Each chunk runs under activation checkpointing: the forward keeps
only the chunk's hidden states and its loss, and the backward recomputes one chunk's logits at a
time, so the loss never holds more than one chunk of logits whatever the batch
(Liger's fused linear cross-entropy and Apple's Cut Cross-Entropy do the same in fused kernels).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint

from kokorozoo.data.encoding import IGNORE_INDEX

#: Labelled tokens per chunk: 1,024 x 128,256 float32 logits are 0.5 GB, and the chunk's softmax
#: and gradient make it about 2 GB at the backward's peak, while the matmul stays large enough
#: to run at full speed.
DEFAULT_LOSS_CHUNK = 1024


def labelled_token_loss(
    hidden: Tensor, labels: Tensor, lm_head: nn.Module, chunk_size: int = DEFAULT_LOSS_CHUNK
) -> tuple[Tensor, Tensor]:
    """Summed next-token cross-entropy of ``labels`` [B, L] given the final hidden states
    ``hidden`` [B, L, H] (position t predicts label t + 1), and how many labels there are."""
    if chunk_size < 1:
        raise ValueError(f"loss_chunk_size must be at least 1, got {chunk_size}")
    targets = labels[:, 1:]
    labelled = targets != IGNORE_INDEX
    states, targets = hidden[:, :-1][labelled], targets[labelled]
    count = labelled.sum()
    if not len(targets):
        return hidden.sum() * 0.0, count  # nothing to learn, but a loss that backward accepts
    total = None
    for start in range(0, len(targets), chunk_size):
        chunk = (lm_head, states[start : start + chunk_size], targets[start : start + chunk_size])
        loss = checkpoint(_chunk_loss, *chunk, use_reentrant=False) if torch.is_grad_enabled() else _chunk_loss(*chunk)
        total = loss if total is None else total + loss
    return total, count


def _chunk_loss(lm_head: nn.Module, states: Tensor, targets: Tensor) -> Tensor:
    return F.cross_entropy(lm_head(states).float(), targets, reduction="sum")


def token_losses(logits: Tensor, labels: Tensor) -> tuple[Tensor, Tensor]:
    """The same loss from full logits [B, L, V]: the reference the tests compare against, and
    the "before" of the memory benchmark. No training path uses it."""
    shifted = labels[:, 1:]
    loss = F.cross_entropy(
        logits[:, :-1].flatten(0, 1).float(), shifted.flatten(), ignore_index=IGNORE_INDEX, reduction="sum"
    )
    return loss, (shifted != IGNORE_INDEX).sum()
