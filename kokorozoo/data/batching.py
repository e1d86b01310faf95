"""Token lists into batches: padding, the one helper every collate uses (core tasks, score
prompts, generation, plugins), and padding-free packing for the LM losses."""

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


def pack_samples(samples: Sequence[tuple[list[int], list[int]]]) -> dict[str, torch.Tensor]:
    """(input_ids, labels) pairs concatenated into ONE row [1, T], T the sum of their lengths: no
    padding at all. ``position_ids`` restart at 0 at each sample and there is no attention mask, so
    transformers' masking (5.x: ``find_packed_sequence_indices``, for sdpa, eager and flash
    attention alike) keeps each token's attention inside its own sample: every sample reads as
    it would alone in a padded batch. Each sample's first label is ignored (no position predicts
    it in a padded batch either), so no loss term crosses from one sample into the next."""
    input_ids, labels, positions = [], [], []
    for ids, sample_labels in samples:
        input_ids += ids
        labels += [IGNORE_INDEX, *sample_labels[1:]]
        positions += range(len(ids))
    rows = {"input_ids": input_ids, "labels": labels, "position_ids": positions}
    return {key: torch.tensor([values], dtype=torch.long) for key, values in rows.items()}


def batch_samples(
    samples: Sequence[tuple[list[int], list[int]]], pad_id: int, packing: bool
) -> dict[str, torch.Tensor]:
    """An LM batch of (input_ids, labels) pairs: packed into one row, or right-padded."""
    return pack_samples(samples) if packing else pad_samples(samples, pad_id)


def unpadded(input_ids: torch.Tensor, attention_mask: torch.Tensor) -> list[list[int]]:
    """The token lists of a padded batch, without the padding."""
    return [row[mask.bool()].tolist() for row, mask in zip(input_ids, attention_mask)]
