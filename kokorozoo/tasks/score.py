"""Score prediction (the paper's Table 5): from the whole merged dialogue, predict the client's 20
feedback items D1..D20 (0-5 each), as text (:class:`ScoreTask`, the paper's model) or with 20
classification heads on the backbone (:class:`ScoreHeadsTask`).

Both read the same samples (:class:`~kokorozoo.data.datamodules.ScoreDataModule`): the dialogue,
then an instruction naming the 20 items in Japanese, rendered by the one chat template.

**The answer format** (text variant): one line per item, in order, nothing else::

    D1: 3
    D2: 4
    ...
    D20: 5

Short (about six tokens a line), unambiguous, and labelled, so that a partial answer still gives
the items it names. :func:`format_scores` writes it; :func:`parse_scores` reads it.

**The parser** never raises and returns float ``Tensor[20]`` with NaN for an invalid item:

- the text is NFKC-normalized first, so full-width ``Ｄ１：３`` reads as ``D1:3``;
- every ``D<n>: <value>`` anywhere counts (``=`` works too, spaces optional, ``d`` as ``D``); text
  around it is ignored, and so are item numbers outside 1-20;
- a value must be one digit 0-5: ``6``, ``10``, ``-1``, ``+3``, ``3.5`` make the item invalid
  (the whole number is read, so ``35`` is never taken for 3); a missing item is invalid;
- an item given twice counts when both values agree, and is invalid when they differ.

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
:meth:`ScoreHeadsTask.from_export` loads such a folder in a fresh process.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from kokorozoo.backbone import Backbone, load_backbone
from kokorozoo.data.datamodules import format_scores, parse_scores
from kokorozoo.data.encoding import IGNORE_INDEX
from kokorozoo.data.kokorochat import ITEM_MAX, ITEM_NAMES, NUM_ITEMS
from kokorozoo.generation import unpadded
from kokorozoo.metrics import constant_predictions, item_modes, score_metrics
from kokorozoo.tasks.base import Task

__all__ = ["ScoreHeadsTask", "ScoreTask", "format_scores", "parse_scores"]

#: The six levels 0..5 each head chooses among.
NUM_LEVELS = ITEM_MAX + 1
HEADS_FILE = "score_heads.safetensors"
METRICS = ("acc", "acc_soft", "mae")


def decoder_of(model: nn.Module) -> tuple[nn.Module, nn.Module]:
    """The decoder stack (final norm included, no LM head) and the LM head of a causal LM, LoRA
    wrapped or not. Calling the decoder directly gives the final hidden states without the
    [batch, length, vocabulary] logits, which at 8k tokens would take tens of GB."""
    lm = model.get_base_model() if hasattr(model, "get_base_model") else model
    return lm.base_model, lm.get_output_embeddings()


class _ScoreTask(Task):
    """What both score tasks share: validation by the score metrics, test against the baseline,
    predictions and metrics files. A subclass gives the training loss and the predictions."""

    monitor, mode = "val_acc", "max"
    #: The name in the ``kokorozoo.tasks`` entry points, written into ``metrics.json``.
    task_name = "score"

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.val_metrics = score_metrics()
        self.test_metrics = score_metrics()
        self.baseline_metrics = score_metrics()
        self._rows: list[dict] = []
        self._modes: Tensor | None = None

    # -- what a variant provides ----------------------------------------------------------------

    def loss(self, batch: dict) -> tuple[Tensor, Tensor]:
        """The training loss and its weight (how many terms it averages)."""
        raise NotImplementedError

    def predict_scores(self, batch: dict) -> tuple[Tensor, list[dict]]:
        """Predicted scores [B, 20] (NaN = invalid) and extra per-dialogue fields for the JSONL."""
        raise NotImplementedError

    def validation_outputs(self, batch: dict) -> tuple[Tensor, Tensor, Tensor]:
        """Loss, its weight and the predictions; a variant may share one forward between them."""
        return *self.loss(batch), self.predict_scores(batch)[0]

    def final_hidden(self, input_ids: Tensor, attention_mask: Tensor, position_ids: Tensor | None = None) -> Tensor:
        decoder, _ = decoder_of(self.model)
        return decoder(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids).last_hidden_state

    # -- steps ------------------------------------------------------------------------------------

    def training_step(self, batch: dict, batch_idx: int) -> Tensor:
        loss, weight = self.loss(batch)
        self.log("train_loss", loss, prog_bar=True, batch_size=int(weight))
        return loss

    def validation_step(self, batch: dict, batch_idx: int) -> None:
        loss, weight, preds = self.validation_outputs(batch)
        self.log("val_loss", loss, batch_size=int(weight))
        self.val_metrics.update(preds, batch["scores"])

    def on_validation_epoch_end(self) -> None:
        values = summary(self.val_metrics)
        self.log_dict({f"val_{k}": float(v) for k, v in values.items()}, prog_bar=True)
        self.val_metrics.reset()

    def test_step(self, batch: dict, batch_idx: int) -> None:
        preds, extras = self.predict_scores(batch)
        gold = batch["scores"]
        self.test_metrics.update(preds, gold)
        self.baseline_metrics.update(constant_predictions(self._modes, len(gold)).to(gold.device), gold)
        self._rows += prediction_rows(batch, preds, extras)

    def on_test_epoch_start(self) -> None:
        self._rows = []
        self.test_metrics.reset()
        self.baseline_metrics.reset()
        self._modes = self._baseline_modes()

    def on_test_epoch_end(self) -> None:
        model, baseline = summary(self.test_metrics), summary(self.baseline_metrics)
        self.log_dict({f"test_{k}": float(v) for k, v in model.items()})
        self.log_dict({f"baseline_{k}": float(baseline[k]) for k in METRICS})
        columns = {k: self.test_metrics[k].per_item().tolist() for k in METRICS}
        columns.update({f"baseline_{k}": self.baseline_metrics[k].per_item().tolist() for k in METRICS})
        per_item = {name: {k: values[i] for k, values in columns.items()} for i, name in enumerate(ITEM_NAMES)}
        self.write_jsonl("predictions.jsonl", self._rows)
        self.write_json(
            "metrics.json",
            {
                "task": self.task_name,
                "seed": getattr(self.trainer.datamodule, "seed", None),
                "dialogues": len(self._rows),
                "metrics": model,
                "baseline": {**{k: baseline[k] for k in METRICS}, "modes": dict(zip(ITEM_NAMES, self._modes.tolist()))},
                "per_item": per_item,
            },
        )

    def predict_step(self, batch: dict, batch_idx: int) -> list[dict]:
        rows = prediction_rows(batch, *self.predict_scores(batch))
        self._rows += rows
        return rows

    def on_predict_epoch_start(self) -> None:
        self._rows = []

    def on_predict_epoch_end(self) -> None:
        self.write_jsonl("predictions.jsonl", self._rows)

    def _baseline_modes(self) -> Tensor:
        """Each item's mode on the datamodule's whole training part."""
        datamodule = self.trainer.datamodule if self._trainer is not None else None
        if not hasattr(datamodule, "train_scores"):
            raise RuntimeError(f"{type(self).__name__} is tested with a ScoreDataModule (for the baseline)")
        return item_modes(datamodule.train_scores())


def summary(metrics) -> dict[str, float]:
    """ACC, ACC_soft, MAE and the invalid count of a score metric collection."""
    values = {k: float(v) for k, v in metrics.compute().items()}
    return {**values, "invalid": metrics["acc"].invalid_count()}


def prediction_rows(batch: dict, preds: Tensor, extras: list[dict]) -> list[dict]:
    """Per-dialogue records: id, gold scores and predicted scores (null where invalid)."""
    return [
        {
            "dialogue_id": dialogue_id,
            "gold": gold.tolist(),
            "predicted": [None if torch.isnan(v) else int(v) for v in pred],
            **extra,
        }
        for dialogue_id, gold, pred, extra in zip(batch["dialogue_ids"], batch["scores"], preds.cpu(), extras)
    ]


class ScoreTask(_ScoreTask):
    """Score prediction as text: learn to write the answer (:func:`format_scores`), validate and
    test greedy generations read by :func:`parse_scores`.

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
        """Next-token cross-entropy on the answer's tokens; the LM head runs only where a label
        is, so the cost does not grow with the dialogue's length times the vocabulary."""
        _, lm_head = decoder_of(self.model)
        hidden = self.final_hidden(batch["input_ids"], batch["attention_mask"])
        labels = batch["labels"][:, 1:]
        labelled = labels != IGNORE_INDEX
        logits = lm_head(hidden[:, :-1][labelled])
        count = labelled.sum()
        return F.cross_entropy(logits.float(), labels[labelled], reduction="sum") / count.clamp(min=1), count

    def predict_scores(self, batch: dict) -> tuple[Tensor, list[dict]]:
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

    def __init__(self, head_dropout: float = 0.1, **kwargs):
        super().__init__(**kwargs)
        self.head_dropout = nn.Dropout(head_dropout)
        self.heads: nn.Linear | None = None

    def configure_heads(self, backbone: Backbone) -> None:
        """20 linear 6-way classifiers, stored as one [20 * 6, hidden] matrix."""
        device = next(backbone.model.parameters()).device
        self.heads = nn.Linear(backbone.model.config.hidden_size, NUM_ITEMS * NUM_LEVELS, device=device)

    def item_logits(self, prompt: dict) -> Tensor:
        """Logits [B, 20, 6] from left-padded prompts: positions count from each row's first real
        token, so a prompt gives the same state whatever it is batched with."""
        mask = prompt["attention_mask"]
        positions = (mask.cumsum(-1) - 1).clamp(min=0)
        hidden = self.final_hidden(prompt["input_ids"], mask, positions)[:, -1].float()
        return self.heads(self.head_dropout(hidden)).view(-1, NUM_ITEMS, NUM_LEVELS)

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

    def predict_scores(self, batch: dict) -> tuple[Tensor, list[dict]]:
        return self.item_logits(batch["prompt"]).argmax(-1).float(), [{} for _ in batch["dialogue_ids"]]

    # -- export and reload ------------------------------------------------------------------------

    def export(self, out_dir: str | os.PathLike) -> Path:
        """The PEFT adapter folder of :meth:`Task.export`, plus the heads (safetensors)."""
        from safetensors.torch import save_file

        out = super().export(out_dir)
        save_file({k: v.detach().cpu().contiguous() for k, v in self.heads.state_dict().items()}, out / HEADS_FILE)
        info_path = out / "kokorozoo.json"
        info = json.loads(info_path.read_text(encoding="utf-8"))
        info["heads"] = {
            "file": HEADS_FILE,
            "reads": "the final hidden state of the prompt's last token",
            "logits": f"weight @ hidden + bias, viewed as [{NUM_ITEMS} items, {NUM_LEVELS} levels 0-{ITEM_MAX}]",
            "items": list(ITEM_NAMES),
        }
        info_path.write_text(json.dumps(info, ensure_ascii=False, indent=2) + "\n", encoding="utf-8")
        return out

    @classmethod
    def from_export(cls, folder: str | os.PathLike) -> ScoreHeadsTask:
        """The task an exported folder holds, ready to predict: the backbone its ``kokorozoo.json``
        names, the PEFT adapter loaded onto it, and the heads."""
        from peft import PeftModel
        from safetensors.torch import load_file

        folder = Path(folder)
        settings = json.loads((folder / "kokorozoo.json").read_text(encoding="utf-8"))["settings"]
        task = cls(**settings)
        backbone = load_backbone(
            task.hparams.backbone,
            quantization=task.hparams.quantization,
            compute_dtype=task.hparams.compute_dtype,
            lora=None,
            tiny=task.tiny,
        )
        model = backbone.model
        if (folder / "adapter_config.json").exists():
            model = PeftModel.from_pretrained(model, folder)
        task.model, task._tokenizer = model, backbone.tokenizer
        task.configure_heads(backbone)
        task.heads.load_state_dict(load_file(folder / HEADS_FILE))
        return task.eval()
