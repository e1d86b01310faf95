"""Padding token lists into batches: the one helper every collate uses (core tasks, score prompts,
generation, plugins)."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from kokorozoo.data.encoding import IGNORE_INDEX


def pad_ids(sequences: Sequence[Sequence[int]], value: int, left: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """Pad token lists into a [B, W] tensor and its attention mask; ``left`` for prompts that
    generation (or a last-token head) continues from the right edge."""
    width = max(len(seq) for seq in sequences)
    padded = torch.full((len(sequences), width), value, dtype=torch.long)
    attention = torch.zeros((len(sequences), width), dtype=torch.long)
    for row, seq in enumerate(sequences):
        cols = slice(width - len(seq), width) if left else slice(0, len(seq))
        padded[row, cols] = torch.tensor(seq, dtype=torch.long)
        attention[row, cols] = 1
    return padded, attention


def pad_samples(samples: Sequence[tuple[list[int], list[int]]], pad_id: int) -> dict[str, torch.Tensor]:
    """Right-pad (input_ids, labels) pairs into a batch with an attention mask."""
    input_ids, attention = pad_ids([ids for ids, _ in samples], pad_id)
    labels, _ = pad_ids([labels for _, labels in samples], IGNORE_INDEX)
    return {"input_ids": input_ids, "labels": labels, "attention_mask": attention}


def unpadded(input_ids: torch.Tensor, attention_mask: torch.Tensor) -> list[list[int]]:
    """The token lists of a padded batch, without the padding."""
    return [row[mask.bool()].tolist() for row, mask in zip(input_ids, attention_mask)]
