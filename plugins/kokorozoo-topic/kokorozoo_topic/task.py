"""Topic classification: a linear head on the backbone's final hidden state at the last token of
the rendered dialogue (what a causal model has read everything by), trained with cross-entropy
beside the LoRA adapters. Evaluated with accuracy and macro-F1 over the 11 topics, beside the
constant majority-topic baseline."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torchmetrics import MetricCollection
from torchmetrics.classification import MulticlassAccuracy, MulticlassF1Score

from kokorozoo.api import Backbone, Task
from kokorozoo_topic.data import NUM_TOPICS, TOPICS

#: The head's file in an exported folder (beside the PEFT adapter).
HEAD_FILE = "topic_head.safetensors"


def topic_metrics(**kwargs) -> MetricCollection:
    """Accuracy (micro: the share of dialogues right) and macro-F1 (every topic counts the same)."""
    return MetricCollection(
        {
            "acc": MulticlassAccuracy(NUM_TOPICS, average="micro", **kwargs),
            "macro_f1": MulticlassF1Score(NUM_TOPICS, average="macro", **kwargs),
        }
    )


class TopicTask(Task):
    """Classify a dialogue's main topic (``topic.main_en``, 11 classes) with a QLoRA backbone.

    The head (a linear layer, float32) is trained with the adapters and saved in the checkpoint
    with them; the best checkpoint is the one with the highest validation macro-F1. ``kokorozoo
    export`` writes it beside the adapter (:data:`HEAD_FILE`) and ``Task.from_export`` loads it.

    Args:
        head_dropout: dropout on the pooled hidden state before the head.
        **kwargs: backbone and optimizer settings, see :class:`kokorozoo.tasks.base.Task`.
    """

    monitor, mode = "val_macro_f1", "max"
    head_name, head_file = "head", HEAD_FILE

    def __init__(self, head_dropout: float = 0.0, **kwargs):
        super().__init__(**kwargs)
        self.head: torch.nn.Linear | None = None
        self.dropout = torch.nn.Dropout(head_dropout)
        self.val_metrics = topic_metrics().clone(prefix="val_")
        self.test_metrics = topic_metrics().clone(prefix="test_")
        self.test_per_topic = MulticlassF1Score(NUM_TOPICS, average=None)

    def configure_heads(self, backbone: Backbone) -> None:
        device = backbone.model.get_input_embeddings().weight.device
        self.head = torch.nn.Linear(backbone.model.config.hidden_size, NUM_TOPICS, device=device)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """Topic logits, one row per dialogue, from the last real token's state."""
        return self.head(self.dropout(self.last_token_states(input_ids, attention_mask).float()))

    def infer(self, batch: dict) -> torch.Tensor:
        return self(batch["input_ids"], batch["attention_mask"])

    def head_description(self) -> dict:
        return {
            "reads": "the final hidden state of the dialogue's last token",
            "logits": f"weight @ hidden + bias, one per topic ({NUM_TOPICS})",
            "topics": list(TOPICS),
        }

    # -- training and validation ------------------------------------------------------------

    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        loss = F.cross_entropy(self.infer(batch), batch["labels"])
        self.log("train_loss", loss, prog_bar=True, batch_size=len(batch["labels"]))
        return loss

    def validation_step(self, batch: dict, batch_idx: int) -> None:
        logits = self.infer(batch)
        size = len(batch["labels"])
        self.log("val_loss", F.cross_entropy(logits, batch["labels"]), prog_bar=True, batch_size=size)
        self.val_metrics.update(logits, batch["labels"])
        self.log_dict(self.val_metrics, prog_bar=True, batch_size=size)

    # -- test and predict --------------------------------------------------------------------

    def prediction_rows(self, batch: dict, logits: torch.Tensor) -> list[dict]:
        probs = logits.softmax(dim=-1)
        best = probs.argmax(dim=-1)
        rows = []
        for i, dialogue_id in enumerate(batch["dialogue_ids"]):
            row = {
                "dialogue_id": dialogue_id,
                "predicted": TOPICS[int(best[i])],
                "probabilities": {topic: round(float(p), 6) for topic, p in zip(TOPICS, probs[i])},
            }
            if "labels" in batch:
                row = {"dialogue_id": dialogue_id, "topic": TOPICS[int(batch["labels"][i])], **row}
            rows.append(row)
        return rows

    def update_test_metrics(self, batch: dict, logits: torch.Tensor) -> None:
        self.test_metrics.update(logits, batch["labels"])
        self.test_per_topic.update(logits, batch["labels"])

    def test_figures(self, rows: list[dict]) -> dict:
        values = {name: float(value) for name, value in self.test_metrics.compute().items()}
        self.log_dict(values)
        per_topic = dict(zip(TOPICS, (float(v) for v in self.test_per_topic.compute())))
        self.test_metrics.reset()
        self.test_per_topic.reset()
        return {"task": "topic", "dialogues": len(rows), "metrics": values, "extra": {"per_topic_f1": per_topic}}

    def score_constant(self, majority: torch.Tensor, rows: list[dict]) -> dict:
        """Always answering the training part's most frequent topic, scored on the same rows."""
        gold = torch.tensor([TOPICS.index(r["topic"]) for r in rows])
        metrics = topic_metrics(sync_on_compute=False)  # every process holds all rows
        metrics.update(F.one_hot(torch.full_like(gold, int(majority)), NUM_TOPICS).float(), gold)
        return {"predicts": TOPICS[int(majority)], **{k: float(v) for k, v in metrics.compute().items()}}
