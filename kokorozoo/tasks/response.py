"""Response generation: learn the counselor's next turn; evaluate greedy generations with BLEU,
ROUGE and Distinct on Japanese tokens (the paper's Table 4)."""

from __future__ import annotations

from typing import Literal

import torch

from kokorozoo.metrics import text_metrics
from kokorozoo.tasks.base import Task
from kokorozoo.tasks.loss import token_losses  # noqa: F401 - the full-logits reference, for tests

GENERATION_MODES = ("shared_prefix", "generate")


class ResponseTask(Task):
    """Response generation with a QLoRA backbone.

    Args:
        max_new_tokens: longest generated turn in test/predict.
        min_new_tokens: shortest generated turn (0, the paper's greedy decoding, lets the model end
            at once; the tiny configs set a few so an untrained model still has text to score).
        metrics_tokenize: how Japanese is tokenized for the metrics: ``mecab`` (words, the default),
            ``char`` or ``none`` (whitespace).
        generation: ``shared_prefix`` (default) runs the history that a batch's prompts share
            through the model once and decodes all prompts together (see
            :mod:`kokorozoo.generation`); ``generate`` calls ``model.generate`` on the left-padded
            batch. Both decode greedily; keep test batches in dialogue order for the sharing.
        **kwargs: backbone and optimizer settings, see :class:`kokorozoo.tasks.base.Task`.
    """

    monitor, mode = "val_loss", "min"
    task_name = "response"
    reading_settings = ("max_new_tokens", "min_new_tokens", "metrics_tokenize", "generation")

    def __init__(
        self,
        max_new_tokens: int = 256,
        min_new_tokens: int = 0,
        metrics_tokenize: str = "mecab",
        generation: Literal["shared_prefix", "generate"] = "shared_prefix",
        **kwargs,
    ):
        super().__init__(**kwargs)
        if generation not in GENERATION_MODES:
            raise ValueError(f"generation must be one of {', '.join(GENERATION_MODES)}, got {generation!r}")
        self.test_metrics = text_metrics(metrics_tokenize)

    # -- training and validation: the loss on every counselor turn's tokens -----------------

    def summed_loss(self, batch: dict) -> tuple[torch.Tensor, torch.Tensor]:
        """Summed loss over the batch's counselor-turn tokens (padded or packed) and their count."""
        return self.labelled_token_loss(batch)

    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        total, count = self.summed_loss(batch)
        loss = total / count.clamp(min=1)
        self.log("train_loss", loss, prog_bar=True, batch_size=batch["input_ids"].shape[0])
        self.log("train_tokens", count.float(), reduce_fx="sum", batch_size=1)
        return loss

    def validation_step(self, batch: dict, batch_idx: int) -> None:
        total, count = self.summed_loss(batch)
        # weighted by tokens so the epoch value is the mean over all labelled tokens
        self.log("val_loss", total / count.clamp(min=1), prog_bar=True, batch_size=int(count), sync_dist=True)

    # -- test and predict: greedy generation of the next counselor turn ----------------------

    predictions_file = "generations.jsonl"

    def generation_settings(self) -> dict:
        """Greedy, as the paper decoded, within the task's lengths."""
        hp = self.hparams
        return {"do_sample": False, "max_new_tokens": hp.max_new_tokens, "min_new_tokens": hp.min_new_tokens}

    def infer(self, batch: dict) -> list[str]:
        """The greedy next counselor turn of every request in ``batch``."""
        hp = self.hparams
        prompts = [r.prompt_ids for r in batch["requests"]]
        texts = self.generate_text(prompts, hp.max_new_tokens, hp.min_new_tokens, hp.generation == "shared_prefix")
        return [text.strip() for text in texts]

    def prediction_rows(self, batch: dict, outputs: list[str]) -> list[dict]:
        return [
            {
                "dialogue_id": r.dialogue_id,
                "turn_index": r.turn_index,
                "history_turns": r.history_turns,
                "previous": r.previous,
                "reference": r.reference,
                "generation": text,
            }
            for r, text in zip(batch["requests"], outputs)
        ]

    def update_test_metrics(self, batch: dict, outputs: list[str]) -> None:
        self.test_metrics.update(outputs, [r.reference for r in batch["requests"]])

    def test_figures(self, rows: list[dict]) -> dict:
        """BLEU, ROUGE and Distinct of the generations, on the tokenization it names."""
        values = {name: float(value) for name, value in self.test_metrics.compute().items()}
        self.test_metrics.reset()
        return {
            "task": self.task_name,
            "turns": len(rows),
            "tokenize": self.hparams.metrics_tokenize,
            "metrics": values,
        }
