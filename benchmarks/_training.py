"""A bare training loop the benchmarks time: what ScoreTask.training_step does per batch, without
Lightning's loop around it."""

import torch


def train_steps(task, batches) -> int:
    """Forward, backward and an AdamW step per batch; returns the trained (labelled) tokens."""
    optimizer = torch.optim.AdamW([p for p in task.parameters() if p.requires_grad], lr=1e-4)
    trained = 0
    for batch in batches:
        loss, count = task.loss(batch)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        trained += int(count)
    return trained
