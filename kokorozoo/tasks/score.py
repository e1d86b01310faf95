"""Score prediction (the paper's Table 5): from the whole merged dialogue, predict the client's 20
feedback items D1..D20 (0-5 each), as text (:class:`ScoreTask`, the paper's model) or with 20
classification heads on the backbone (:class:`ScoreHeadsTask`).

Both read the same samples (:class:`~kokorozoo.data.datamodules.ScoreDataModule`): the dialogue,
then an instruction naming the 20 items in Japanese, rendered by the one chat template.

**The answer format** (text variant) and its parser live in :mod:`kokorozoo.data.score_format`:
20 lines ``D1: 3`` .. ``D20: 5``; the parser never raises and marks an invalid item with NaN.

**Metrics** (:mod:`kokorozoo.metrics.scores`): ACC, ACC_soft and MAE over all (dialogue, item) pairs
and per item; an invalid item counts as wrong and as an error of 5, and the invalid count is
reported. Beside them, always, the constant baseline: each item's mode on this seed's whole
training part. Test logs ``test_acc``, ``test_acc_soft``, ``test_mae``, ``test_invalid`` and
``baseline_acc``, ``baseline_acc_soft``, ``baseline_mae`` (Lightning's table shows both), and
writes ``predictions.jsonl`` (per dialogue: id, gold, predicted with null for invalid, and the raw
generation for the text variant) and ``metrics.json``. Validation computes the same metrics; the
best checkpoint is the one with the highest ``val_acc``, as in the paper.

**The heads** (:class:`ScoreHeadsTask`): 20 independent linear classifiers over the six levels
0-5, on the final (normed) hidden state of the prompt's last token, trained with the mean
cross-entropy over the items, jointly with LoRA. Why:

- the last token: in a causal model it is the only position that has read the whole dialogue and
  the instruction, and it is where the model would start writing ``D1:``, so the request to rate
  steers what it holds; mean-pooling would mix in states that saw only the dialogue's beginning;
- classification, not regression: the scores are six discrete, unevenly used levels (3 is a
  third of all ratings, 0 is 1.5%). Cross-entropy learns each item's distribution; its argmax targets ACC (the paper's
  headline and the checkpoint criterion) and falls back to the item's mode, the baseline, where
  the dialogue tells it nothing; and the prediction is an integer like the text variant's, so both
  variants are scored alike. A regression head (MSE) predicts the conditional mean, whose
  rounding is not the most likely score: worse for ACC, the measure that picks the checkpoint;
- heads in float32 beside the 4-bit backbone; dropout on their input only.

The heads are trainable parameters of the task, so the adapter-only checkpoints keep them; export
writes them as ``score_heads.safetensors`` beside the PEFT adapter, and
:meth:`~kokorozoo.tasks.base.Task.from_export` loads such a folder in a fresh process.
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from kokorozoo.backbone import Backbone
from kokorozoo.data.batching import unpadded
from kokorozoo.data.kokorochat import ITEM_MAX, ITEM_NAMES, NUM_ITEMS
from kokorozoo.data.score_format import parse_scores
from kokorozoo.metrics import constant_predictions, item_modes, score_metrics
from kokorozoo.metrics.rules import METRIC_RULES, rule_predictions
from kokorozoo.tasks.base import Task

__all__ = ["ScoreHeadsTask", "ScoreTask"]

#: The six levels 0..5 each head chooses among.
NUM_LEVELS = ITEM_MAX + 1
HEADS_FILE = "score_heads.safetensors"
METRICS = ("acc", "acc_soft", "mae")


class _ScoreTask(Task):
    """What both score tasks share: validation by the score metrics, test against the baseline,
    predictions and metrics files. A subclass gives the training loss and :meth:`infer` (the
    predicted scores)."""

    monitor, mode = "val_acc", "max"
    #: The name in the ``kokorozoo.tasks`` entry points, written into ``metrics.json``.
    task_name = "score"
    #: How the reported ``metrics`` are read from the model's output (named in ``metrics.json``).
    rule = "the parsed greedy answer"

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.val_metrics = score_metrics()
        self.test_metrics = score_metrics()
        self.baseline_metrics = score_metrics()
        self._modes: Tensor | None = None

    # -- what a variant provides ----------------------------------------------------------------

    def loss(self, batch: dict) -> tuple[Tensor, Tensor]:
        """The training loss and its weight (how many terms it averages)."""
        raise NotImplementedError

    def infer(self, batch: dict) -> tuple[Tensor, list[dict]]:
        """Predicted scores [B, 20] (NaN = invalid) and extra per-dialogue fields for the JSONL."""
        raise NotImplementedError

    def validation_outputs(self, batch: dict) -> tuple[Tensor, Tensor, Tensor]:
        """Loss, its weight and the predictions; a variant may share one forward between them."""
        return *self.loss(batch), self.infer(batch)[0]

    # -- steps ------------------------------------------------------------------------------------

    def training_step(self, batch: dict, batch_idx: int) -> Tensor:
        loss, weight = self.loss(batch)
        self.log("train_loss", loss, prog_bar=True, batch_size=int(weight))
        return loss

    def validation_step(self, batch: dict, batch_idx: int) -> None:
        loss, weight, preds = self.validation_outputs(batch)
        self.log("val_loss", loss, batch_size=int(weight), sync_dist=True)
        self.val_metrics.update(preds, batch["scores"])

    def on_validation_epoch_end(self) -> None:
        values = summary(self.val_metrics)
        self.log_dict({f"val_{k}": float(v) for k, v in values.items()}, prog_bar=True)
        self.val_metrics.reset()

    # -- test and predict -------------------------------------------------------------------------

    def prediction_rows(self, batch: dict, outputs: tuple[Tensor, list[dict]]) -> list[dict]:
        """Per-dialogue records: id, gold scores and predicted scores (null where invalid)."""
        preds, extras = outputs
        return [
            {
                "dialogue_id": dialogue_id,
                "gold": gold.tolist(),
                "predicted": [None if torch.isnan(v) else int(v) for v in pred],
                **extra,
            }
            for dialogue_id, gold, pred, extra in zip(batch["dialogue_ids"], batch["scores"], preds.cpu(), extras)
        ]

    def on_test_epoch_start(self) -> None:
        super().on_test_epoch_start()
        self._modes = self._baseline_modes()

    def update_test_metrics(self, batch: dict, outputs: tuple[Tensor, list[dict]]) -> None:
        gold = batch["scores"]
        self.test_metrics.update(outputs[0], gold)
        self.baseline_metrics.update(constant_predictions(self._modes, len(gold)).to(gold.device), gold)

    def test_report(self, rows: list[dict]) -> dict:
        """The model beside the per-item mode (``baseline``) and the non-neural baseline
        (``classical``: each metric under its own rule), overall and per item; for a model that
        gives distributions, ``by_rule`` too. ``rules`` names the rule behind each figure."""
        model, baseline = summary(self.test_metrics), summary(self.baseline_metrics)
        columns = {k: self.test_metrics[k].per_item().tolist() for k in METRICS}
        columns.update({f"baseline_{k}": self.baseline_metrics[k].per_item().tolist() for k in METRICS})
        self.test_metrics.reset()
        self.baseline_metrics.reset()
        gold = torch.tensor([r["gold"] for r in rows], dtype=torch.long)
        classical = by_rule_figures(self._classical_distribution(rows), gold)
        columns.update({f"classical_{k}": v for k, v in classical.pop("per_item").items()})
        report = {
            "task": self.task_name,
            "seed": getattr(self.trainer.datamodule, "seed", None),
            "split": getattr(self.trainer.datamodule, "split_kind", "random"),
            "dialogues": len(rows),
            "metrics": model,
            "baseline": {**{k: baseline[k] for k in METRICS}, "modes": dict(zip(ITEM_NAMES, self._modes.tolist()))},
            "classical": classical,
            "rules": {"metrics": self.rule, "baseline": "the per-item mode", "classical": dict(METRIC_RULES)},
        }
        if rows and "distribution" in rows[0]:
            by_rule = by_rule_figures(torch.tensor([r["distribution"] for r in rows]), gold)
            columns.update({f"by_rule_{k}": v for k, v in by_rule.pop("per_item").items()})
            report["by_rule"] = by_rule
            report["rules"]["by_rule"] = dict(METRIC_RULES)
        report["per_item"] = {name: {k: values[i] for k, values in columns.items()} for i, name in enumerate(ITEM_NAMES)}
        self.log_dict({f"test_{k}": float(v) for k, v in model.items()})
        for name in ("baseline", "classical", "by_rule"):
            if name in report:
                self.log_dict({f"{name}_{k}": float(report[name][k]) for k in METRICS})
        return report

    def _classical_distribution(self, rows: list[dict]) -> Tensor:
        """The non-neural baseline's distributions for the tested dialogues, fitted on this seed's
        whole training part and tuned on its validation part (cached after the first test)."""
        from kokorozoo.evaluation.baselines import score_baseline_distribution

        datamodule = self.trainer.datamodule
        by_id = {d.id: d for d in datamodule.data.dialogues}
        split = datamodule.make_split(datamodule.data.dialogues)
        return score_baseline_distribution(split, [by_id[r["dialogue_id"]] for r in rows])

    def _baseline_modes(self) -> Tensor:
        """Each item's mode on the datamodule's whole training part."""
        datamodule = self.trainer.datamodule if self._trainer is not None else None
        if not hasattr(datamodule, "train_scores"):
            raise RuntimeError(f"{type(self).__name__} is tested with a ScoreDataModule (for the baseline)")
        return item_modes(datamodule.train_scores())


def by_rule_figures(probs: Tensor, gold: Tensor) -> dict:
    """ACC, ACC_soft and MAE of distributions [N, 20, 6], each under its own rule
    (:data:`~kokorozoo.metrics.rules.METRIC_RULES`), overall and per item (``per_item``)."""
    predictions = rule_predictions(probs)
    figures, per_item = {}, {}
    for metric, rule in METRIC_RULES.items():
        metrics = score_metrics(sync_on_compute=False)  # on rows every process already holds
        metrics.update(predictions[rule], gold)
        figures[metric] = float(metrics[metric].compute())
        per_item[metric] = metrics[metric].per_item().tolist()
    return {**figures, "per_item": per_item}


def summary(metrics) -> dict[str, float]:
    """ACC, ACC_soft, MAE and the invalid count of a score metric collection."""
    values = {k: float(v) for k, v in metrics.compute().items()}
    return {**values, "invalid": metrics["acc"].invalid_count()}


class ScoreTask(_ScoreTask):
    """Score prediction as text: learn to write the answer
    (:func:`~kokorozoo.data.score_format.format_scores`), validate and test greedy generations read
    by :func:`~kokorozoo.data.score_format.parse_scores`.

    Args:
        max_new_tokens: the longest generated answer (the full answer is about 120 tokens).
        **kwargs: backbone and optimizer settings, see :class:`kokorozoo.tasks.base.Task`.
    """

    task_name = "score"

    def __init__(self, max_new_tokens: int = 160, **kwargs):
        super().__init__(**kwargs)

    @torch.no_grad()
    def generate(self, prompt: dict) -> list[str]:
        """Greedy answers to left-padded prompts, up to the end of the assistant turn."""
        return self.generate_text(unpadded(prompt["input_ids"], prompt["attention_mask"]), self.hparams.max_new_tokens)

    def loss(self, batch: dict) -> tuple[Tensor, Tensor]:
        """Mean next-token cross-entropy on the answer's tokens (padded or packed batches); the LM
        head runs only where a label is, so the cost does not grow with the dialogue's length
        times the vocabulary."""
        total, count = self.labelled_token_loss(batch)
        return total / count.clamp(min=1), count

    def infer(self, batch: dict) -> tuple[Tensor, list[dict]]:
        texts = self.generate(batch["prompt"])
        preds = torch.stack([parse_scores(text) for text in texts]).to(batch["scores"].device)
        return preds, [{"generation": text} for text in texts]


class ScoreHeadsTask(_ScoreTask):
    """Score prediction with 20 classification heads (six levels each) on the final hidden state
    of the prompt's last token, trained jointly with LoRA (see the module docstring for why).

    Args:
        head_dropout: dropout on the hidden state the heads read, in training.
        **kwargs: backbone and optimizer settings, see :class:`kokorozoo.tasks.base.Task`.
    """

    task_name = "score-heads"
    rule = "argmax (comparable with the text variant; by_rule: each metric under its own rule)"

    def __init__(self, head_dropout: float = 0.1, **kwargs):
        super().__init__(**kwargs)
        self.dropout = nn.Dropout(head_dropout)
        self.heads: nn.Linear | None = None

    def configure_heads(self, backbone: Backbone) -> None:
        """20 linear 6-way classifiers, stored as one [20 * 6, hidden] matrix."""
        device = next(backbone.model.parameters()).device
        self.heads = nn.Linear(backbone.model.config.hidden_size, NUM_ITEMS * NUM_LEVELS, device=device)
        datamodule = self.trainer.datamodule if self._trainer is not None else None
        if hasattr(datamodule, "train_scores"):  # a fit: start from the items' priors
            self._start_at_priors(datamodule.train_scores())

    @torch.no_grad()
    def _start_at_priors(self, train_scores: Tensor) -> None:
        """Zero weights and biases at the log prior of each item's levels on the training part: a
        head that has learned nothing predicts each item's mode, the baseline, not noise.
        (A checkpoint restored afterwards replaces both.)"""
        counts = F.one_hot(train_scores, NUM_LEVELS).sum(0).float() + 1.0  # [20, 6], add-one smoothed
        self.heads.weight.zero_()
        self.heads.bias.copy_((counts / counts.sum(-1, keepdim=True)).log().flatten())

    def item_logits(self, prompt: dict) -> Tensor:
        """Logits [B, 20, 6] from padded prompts (a prompt gives the same state whatever it is
        batched with: :meth:`~kokorozoo.tasks.base.Task.hidden_states` counts positions per row)."""
        hidden = self.last_token_states(prompt["input_ids"], prompt["attention_mask"]).float()
        return self.heads(self.dropout(hidden)).view(-1, NUM_ITEMS, NUM_LEVELS)

    def loss(self, batch: dict) -> tuple[Tensor, Tensor]:
        return self._loss_and_logits(batch)[:2]

    def validation_outputs(self, batch: dict) -> tuple[Tensor, Tensor, Tensor]:
        loss, weight, logits = self._loss_and_logits(batch)
        return loss, weight, logits.argmax(-1).float()

    def _loss_and_logits(self, batch: dict) -> tuple[Tensor, Tensor, Tensor]:
        """Mean cross-entropy over the 20 items of every dialogue, weighted by dialogues."""
        logits = self.item_logits(batch["prompt"])
        loss = F.cross_entropy(logits.flatten(0, 1), batch["scores"].flatten())
        return loss, torch.tensor(logits.shape[0]), logits

    def infer(self, batch: dict) -> tuple[Tensor, list[dict]]:
        """The argmax per item, and each item's distribution over the six levels (in the rows, so
        every rule can be applied to what was written)."""
        probs = self.item_logits(batch["prompt"]).float().softmax(-1)
        return probs.argmax(-1).float(), [{"distribution": p.tolist()} for p in probs.cpu()]

    # -- export and reload ------------------------------------------------------------------------

    def export_extras(self, out: Path) -> dict:
        """The heads, as safetensors beside the adapter."""
        from safetensors.torch import save_file

        save_file({k: v.detach().cpu().contiguous() for k, v in self.heads.state_dict().items()}, out / HEADS_FILE)
        return {
            "heads": {
                "file": HEADS_FILE,
                "reads": "the final hidden state of the prompt's last token",
                "logits": f"weight @ hidden + bias, viewed as [{NUM_ITEMS} items, {NUM_LEVELS} levels 0-{ITEM_MAX}]",
                "items": list(ITEM_NAMES),
            }
        }

    def load_export_extras(self, folder: Path, info: dict) -> None:
        from safetensors.torch import load_file

        self.heads.load_state_dict(load_file(folder / info["heads"]["file"]))
