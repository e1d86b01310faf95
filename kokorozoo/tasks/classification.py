"""Classifying a whole dialogue into one of a few labels: a linear head on the backbone's final
hidden state at the last real token (what a causal model has read everything by), trained with
cross-entropy beside the LoRA adapters, evaluated with accuracy, macro-F1 and F1 per label beside
the constant most-frequent-label baseline.

A plugin that classifies dialogues names its labels and the datamodule gives ``batch["labels"]``
(class indices) and ``train_labels()``; everything else (head, steps, rows, metrics, the baseline,
export) is here, written once.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torchmetrics import MetricCollection
from torchmetrics.classification import MulticlassAccuracy, MulticlassF1Score

from kokorozoo.backbone import Backbone
from kokorozoo.tasks.base import Task


def classification_metrics(classes: int, **kwargs) -> MetricCollection:
    """Accuracy (micro: the share of dialogues right) and macro-F1 (every label counts the same)."""
    return MetricCollection(
        {
            "acc": MulticlassAccuracy(classes, average="micro", **kwargs),
            "macro_f1": MulticlassF1Score(classes, average="macro", **kwargs),
        }
    )


class ClassificationTask(Task):
    """A dialogue's label from a QLoRA backbone and a linear head (float32) trained with the
    adapters; the head is kept in checkpoints, and ``kokorozoo export`` writes it beside the
    adapter (:attr:`head_file`) for :meth:`Task.from_export`. The best checkpoint has the highest
    validation macro-F1.

    A subclass sets :attr:`labels` (in the order of the datamodule's class indices),
    :attr:`label_field` (the name of the gold label in ``predictions.jsonl``) and
    :attr:`task_name`.

    Args:
        head_dropout: dropout on the pooled hidden state before the head.
        **kwargs: backbone and optimizer settings, see :class:`kokorozoo.tasks.base.Task`.
    """

    labels: tuple[str, ...] = ()
    label_field: str = "label"
    task_name: str = "classification"
    monitor, mode = "val_macro_f1", "max"
    head_name = "head"

    def __init__(self, head_dropout: float = 0.0, **kwargs):
        super().__init__(**kwargs)
        if len(self.labels) < 2:
            raise TypeError(f"{type(self).__name__}.labels must name at least two labels")
        self.head: torch.nn.Linear | None = None
        self.dropout = torch.nn.Dropout(head_dropout)
        self.val_metrics = classification_metrics(len(self.labels))
        self.test_metrics = classification_metrics(len(self.labels))
        self.test_per_label = MulticlassF1Score(len(self.labels), average=None)

    def configure_heads(self, backbone: Backbone) -> None:
        device = backbone.model.get_input_embeddings().weight.device
        self.head = torch.nn.Linear(backbone.model.config.hidden_size, len(self.labels), device=device)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """Logits, one row per dialogue, from the last real token's state."""
        return self.head(self.dropout(self.last_token_states(input_ids, attention_mask).float()))

    def infer(self, batch: dict) -> torch.Tensor:
        return self(batch["input_ids"], batch["attention_mask"])

    def head_description(self) -> dict:
        return {
            "reads": "the final hidden state of the dialogue's last token (attention_mask's last 1)",
            "logits": f"weight @ hidden + bias, one per label ({len(self.labels)})",
            f"{self.label_field}s": list(self.labels),
        }

    # -- training and validation --------------------------------------------------------------

    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        loss = F.cross_entropy(self.infer(batch), batch["labels"])
        self.log("train_loss", loss, prog_bar=True, batch_size=len(batch["labels"]))
        return loss

    def validation_step(self, batch: dict, batch_idx: int) -> None:
        logits, size = self.infer(batch), len(batch["labels"])
        self.log("val_loss", F.cross_entropy(logits, batch["labels"]), prog_bar=True, batch_size=size, sync_dist=True)
        self.val_metrics.update(logits, batch["labels"])
        self.log_dict({f"val_{k}": m for k, m in self.val_metrics.items()}, prog_bar=True, batch_size=size)

    # -- test and predict ---------------------------------------------------------------------

    def prediction_rows(self, batch: dict, logits: torch.Tensor) -> list[dict]:
        probs = logits.float().softmax(dim=-1)
        best = probs.argmax(dim=-1)
        rows = []
        for i, dialogue_id in enumerate(batch["dialogue_ids"]):
            row = {"dialogue_id": dialogue_id}
            if "labels" in batch:
                row[self.label_field] = self.labels[int(batch["labels"][i])]
            row["predicted"] = self.labels[int(best[i])]
            row["probabilities"] = {label: round(float(p), 6) for label, p in zip(self.labels, probs[i])}
            rows.append(row)
        return rows

    def update_test_metrics(self, batch: dict, logits: torch.Tensor) -> None:
        self.test_metrics.update(logits, batch["labels"])
        self.test_per_label.update(logits, batch["labels"])

    def test_figures(self, rows: list[dict]) -> dict:
        values = {name: float(value) for name, value in self.test_metrics.compute().items()}
        per_label = dict(zip(self.labels, (float(v) for v in self.test_per_label.compute())))
        self.test_metrics.reset()
        self.test_per_label.reset()
        return {
            "task": self.task_name,
            "dialogues": len(rows),
            "metrics": values,
            "extra": {f"per_{self.label_field}_f1": per_label},
        }

    def score_constant(self, majority: torch.Tensor, rows: list[dict]) -> dict:
        """Always answering the training part's most frequent label, scored on the same rows."""
        majority = int(majority)
        gold = torch.tensor([self.labels.index(r[self.label_field]) for r in rows])
        metrics = classification_metrics(len(self.labels), sync_on_compute=False)  # every process holds all rows
        metrics.update(F.one_hot(torch.full_like(gold, majority), len(self.labels)).float(), gold)
        return {"predicts": self.labels[majority], **{k: float(v) for k, v in metrics.compute().items()}}
