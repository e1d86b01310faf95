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
training part (scored here, :meth:`_ScoreTask.score_constant`; chosen and written by the
evaluation layer, :mod:`kokorozoo.evaluation.writer`, with the non-neural baseline). A test's
figures are logged by the writer as ``test_acc``, ``test_acc_soft``, ``test_mae``,
``test_invalid``, ``test_baseline_acc`` ..., and its rows (per dialogue: id, gold, predicted with null for invalid, and
the raw generation for the text variant) go to ``predictions.jsonl``. Validation computes the same
metrics; the best checkpoint is the one with the highest ``val_acc``, as in the paper.

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

import functools
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from kokorozoo.backbone import Backbone
from kokorozoo.data.batching import unpadded
from kokorozoo.data.datamodules import KokoroChatDataModule
from kokorozoo.data.score_format import AnswerForm, answer_form, format_scores, parse_scores
from kokorozoo.data.stats import STATISTICS
from kokorozoo.errors import UsageError
from kokorozoo.metrics import (
    SCORE_METRICS,
    constant_predictions,
    item_modes,
    point_figures,
    rule_figures,
    score_metrics,
)
from kokorozoo.metrics.rules import METRIC_RULES
from kokorozoo.metrics.scores import BY_RULE, MODEL
from kokorozoo.records import ITEM_MAX, ITEM_NAMES, NUM_ITEMS
from kokorozoo.tasks.base import Task

__all__ = ["ScoreHeadsTask", "ScoreTask"]

#: The six levels 0..5 each head chooses among.
NUM_LEVELS = ITEM_MAX + 1
HEADS_FILE = "score_heads.safetensors"
#: What :class:`ScoreHeadsTask` may read beside the last token's hidden state.
HEAD_FEATURES = ("none", "statistics")


class _ScoreTask(Task):
    """What both score tasks share: validation and test by the score metrics, per-dialogue rows and
    the constant baseline's figures. A subclass gives the training loss and :meth:`infer` (the
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
        self.training_modes()  # every score report shows the per-item mode: fail before the work

    def update_test_metrics(self, batch: dict, outputs: tuple[Tensor, list[dict]]) -> None:
        self.test_metrics.update(outputs[0], batch["scores"])

    def test_figures(self, rows: list[dict]) -> dict:
        """The model's figures overall and per item; for a model that gives distributions,
        ``by_rule`` too (each metric under its own rule). ``rules`` names the rule behind each."""
        model = summary(self.test_metrics)
        per_item = {MODEL: {k: self.test_metrics[k].per_item().tolist() for k in SCORE_METRICS}}
        self.test_metrics.reset()
        figures = {"task": self.task_name, "dialogues": len(rows), "metrics": model, "rules": {"metrics": self.rule}}
        if rows and "distribution" in rows[0]:
            gold = torch.tensor([r["gold"] for r in rows])  # JSON ints: int64
            by_rule = rule_figures(torch.tensor([r["distribution"] for r in rows]), gold)
            per_item[BY_RULE] = by_rule.pop("per_item")
            figures.update(by_rule=by_rule, rules={**figures["rules"], BY_RULE: dict(METRIC_RULES)})
        return {**figures, "per_item": per_item}

    def score_constant(self, labels: Tensor, rows: list[dict]) -> dict:
        """The per-item mode answered for every dialogue: overall, per item, and the modes."""
        gold = torch.tensor([r["gold"] for r in rows]).reshape(-1, NUM_ITEMS)
        figures = point_figures(constant_predictions(labels, len(gold)), gold)
        return {**{k: figures[k] for k in SCORE_METRICS}, "modes": dict(zip(ITEM_NAMES, labels.tolist())),
                "per_item": figures["per_item"]}  # fmt: skip

    def answer_room(self) -> int:
        """Tokens the answer takes after the prompt (its text and ``<|eot_id|>``): a dialogue is cut
        so that prompt and answer fit in ``max_length``, in training and at test alike."""
        messages = [
            {"role": "user", "content": "-"},
            {"role": "assistant", "content": format_scores([ITEM_MAX] * NUM_ITEMS)},
        ]
        render = functools.partial(self.tokenizer.apply_chat_template, tokenize=True, return_dict=True)
        return len(render(messages)["input_ids"]) - len(render(messages[:1], add_generation_prompt=True)["input_ids"])

    def training_modes(self) -> Tensor:
        """Each item's mode on the datamodule's whole training part."""
        datamodule = self.trainer.datamodule if self._trainer is not None else None
        labels = datamodule.train_labels() if isinstance(datamodule, KokoroChatDataModule) else None
        if labels is None:
            raise RuntimeError(f"{type(self).__name__} is tested with a ScoreDataModule (for the baseline)")
        return item_modes(labels)


def summary(metrics) -> dict[str, float]:
    """ACC, ACC_soft, MAE and the invalid count of a score metric collection."""
    values = {k: float(v) for k, v in metrics.compute().items()}
    return {**values, "invalid": metrics["acc"].invalid_count()}


class ScoreTask(_ScoreTask):
    """Score prediction as text: learn to write the answer
    (:func:`~kokorozoo.data.score_format.format_scores`); validate and test by reading the model's
    answer in one of two ways (``scoring``):

    - ``greedy`` (the paper's): generate greedily, parse with
      :func:`~kokorozoo.data.score_format.parse_scores`; an item the model did not write right is
      invalid (counted wrong, error 5).
    - ``constrained``: the answer's shape is fixed, so feed ``D1: v`` .. ``D20: v`` after the
      prompt in one forward pass and read, at each value position, the probabilities of the six
      digits (:func:`~kokorozoo.data.score_format.answer_form`): no invalid item, no generation,
      and a distribution per item, read by each metric's rule (``by_rule`` in ``metrics.json``,
      the argmax in ``metrics``). The values fed in, which later items see, are each item's mode
      on the training part: the answer that says nothing about this dialogue.

    Args:
        max_new_tokens: the longest generated answer (the full answer is about 120 tokens).
        scoring: ``greedy`` (generate, then parse: the paper's way) or ``constrained`` (one
            forward pass reads the six digits' probabilities at each value position: no invalid
            item, a distribution per item, every metric under its rule). A reading setting: given
            at ``test --ckpt_path``, it wins over the checkpoint's.
        **kwargs: backbone and optimizer settings, see :class:`kokorozoo.tasks.base.Task`.
    """

    task_name = "score"
    reading_settings = ("scoring", "max_new_tokens")

    def __init__(self, max_new_tokens: int = 160, scoring: Literal["greedy", "constrained"] = "greedy", **kwargs):
        super().__init__(**kwargs)
        if scoring not in SCORINGS:
            raise UsageError(f"model.init_args.scoring must be one of {', '.join(SCORINGS)}; got {scoring!r}")
        self.scoring, self.rule = scoring, SCORINGS[scoring]
        self._form: AnswerForm | None = None

    def generation_settings(self) -> dict:
        return {"do_sample": False, "max_new_tokens": self.hparams.max_new_tokens}

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
        if self.scoring == "constrained":
            probs = self.answer_distribution(batch["prompt"])
            return probs.argmax(-1).float(), [{"distribution": p.tolist()} for p in probs.cpu()]
        texts = self.generate(batch["prompt"])
        preds = torch.stack([parse_scores(text) for text in texts]).to(batch["scores"].device)
        return preds, [{"generation": text} for text in texts]

    @torch.no_grad()
    def answer_distribution(self, prompt: dict) -> Tensor:
        """Each item's probabilities of the six levels [B, 20, 6], read in one forward pass over
        the left-padded prompts followed by the answer form; the LM head runs on the 20 value
        positions only."""
        form = self.answer_form()
        input_ids, mask = prompt["input_ids"], prompt["attention_mask"]
        answer = torch.tensor(form.ids, device=input_ids.device).expand(len(input_ids), -1)
        hidden = self.hidden_states(torch.cat([input_ids, answer], 1), torch.cat([mask, torch.ones_like(answer)], 1))
        before_values = input_ids.shape[1] + torch.tensor(form.value_positions, device=hidden.device) - 1
        logits = self.lm_head(hidden[:, before_values])[..., form.level_ids]
        return logits.float().softmax(-1)

    def answer_form(self) -> AnswerForm:
        """The answer fed in constrained scoring: each item at its training mode (cached)."""
        if self._form is None:
            self._form = answer_form(self.tokenizer, self.training_modes().tolist())
        return self._form


#: How ``ScoreTask`` reads its answers, and the rule its ``metrics`` follow (named in metrics.json).
SCORINGS = {
    "greedy": "the parsed greedy answer",
    "constrained": "argmax of the six digits' probabilities at each value position (by_rule: each metric's rule)",
}


class ScoreHeadsTask(_ScoreTask):
    """Score prediction with 20 classification heads (six levels each) on the final hidden state
    of the prompt's last token, trained jointly with LoRA (see the module docstring for why).

    Args:
        head_dropout: dropout on the hidden state the heads read, in training.
        features: what the heads read beside the hidden state: ``none``, or ``statistics``: the
            eight dialogue statistics (:data:`~kokorozoo.data.stats.STATISTICS`: lengths, counts,
            duration, response times; the paper's Figure 4 finds signal in them), as ``log1p``
            standardised by the training part's mean and spread (kept in checkpoints and exports).
        **kwargs: backbone and optimizer settings, see :class:`kokorozoo.tasks.base.Task`.
    """

    task_name = "score-heads"
    rule = "argmax (comparable with the text variant; by_rule: each metric under its own rule)"

    def __init__(self, head_dropout: float = 0.1, features: Literal["none", "statistics"] = "none", **kwargs):
        super().__init__(**kwargs)
        if features not in HEAD_FEATURES:
            raise UsageError(f"model.init_args.features must be one of {', '.join(HEAD_FEATURES)}; got {features!r}")
        self.dropout = nn.Dropout(head_dropout)
        self.heads: nn.Linear | None = None
        self.reads_statistics = features == "statistics"
        if self.reads_statistics:  # the training part's log1p mean and spread, set by configure_heads
            self.register_buffer("statistics_mean", torch.zeros(len(STATISTICS)))
            self.register_buffer("statistics_scale", torch.ones(len(STATISTICS)))

    def configure_heads(self, backbone: Backbone) -> None:
        """20 linear 6-way classifiers, stored as one [20 * 6, inputs] matrix."""
        device = next(backbone.model.parameters()).device
        inputs = backbone.model.config.hidden_size + (len(STATISTICS) if self.reads_statistics else 0)
        self.heads = nn.Linear(inputs, NUM_ITEMS * NUM_LEVELS, device=device)
        datamodule = self.trainer.datamodule if self._trainer is not None else None
        if hasattr(datamodule, "train_scores"):  # a fit: start from the items' priors
            self._start_at_priors(datamodule.train_scores())
            if self.reads_statistics:
                self._standardise_on(datamodule.train_statistics().to(device))

    @torch.no_grad()
    def _start_at_priors(self, train_scores: Tensor) -> None:
        """Zero weights and biases at the log prior of each item's levels on the training part: a
        head that has learned nothing predicts each item's mode, the baseline, not noise.
        (A checkpoint restored afterwards replaces both.)"""
        counts = F.one_hot(train_scores, NUM_LEVELS).sum(0).float() + 1.0  # [20, 6], add-one smoothed
        self.heads.weight.zero_()
        self.heads.bias.copy_((counts / counts.sum(-1, keepdim=True)).log().flatten())

    @torch.no_grad()
    def _standardise_on(self, train_statistics: Tensor) -> None:
        logged = train_statistics.float().log1p()
        self.statistics_mean.copy_(logged.mean(0))
        self.statistics_scale.copy_(logged.std(0, correction=0).clamp(min=1e-6))

    def item_logits(self, prompt: dict, statistics: Tensor | None = None) -> Tensor:
        """Logits [B, 20, 6] from padded prompts (a prompt gives the same state whatever it is
        batched with: :meth:`~kokorozoo.tasks.base.Task.hidden_states` counts positions per row)
        and, with ``features: statistics``, the dialogues' raw statistics [B, 8]."""
        hidden = self.last_token_states(prompt["input_ids"], prompt["attention_mask"]).float()
        if self.reads_statistics:
            if statistics is None:
                raise ValueError("features: statistics needs the dialogues' statistics (batch['statistics'])")
            standardised = (statistics.float().log1p() - self.statistics_mean) / self.statistics_scale
            hidden = torch.cat([hidden, standardised], dim=1)
        return self.heads(self.dropout(hidden)).view(-1, NUM_ITEMS, NUM_LEVELS)

    def loss(self, batch: dict) -> tuple[Tensor, Tensor]:
        return self._loss_and_logits(batch)[:2]

    def validation_outputs(self, batch: dict) -> tuple[Tensor, Tensor, Tensor]:
        loss, weight, logits = self._loss_and_logits(batch)
        return loss, weight, logits.argmax(-1).float()

    def _loss_and_logits(self, batch: dict) -> tuple[Tensor, Tensor, Tensor]:
        """Mean cross-entropy over the 20 items of every dialogue, weighted by dialogues."""
        logits = self.item_logits(batch["prompt"], batch.get("statistics"))
        loss = F.cross_entropy(logits.flatten(0, 1), batch["scores"].flatten())
        return loss, torch.tensor(logits.shape[0]), logits

    def infer(self, batch: dict) -> tuple[Tensor, list[dict]]:
        """The argmax per item, and each item's distribution over the six levels (in the rows, so
        every rule can be applied to what was written)."""
        probs = self.item_logits(batch["prompt"], batch.get("statistics")).float().softmax(-1)
        return probs.argmax(-1).float(), [{"distribution": p.tolist()} for p in probs.cpu()]

    # -- checkpoints, export and reload -------------------------------------------------------------

    head_name, head_file = "heads", HEADS_FILE
    #: The statistics' standardisation: not trained, but part of what the heads read.
    STATISTICS_BUFFERS = ("statistics_mean", "statistics_scale")

    @property
    def head_buffers(self) -> tuple[str, ...]:
        return self.STATISTICS_BUFFERS if self.reads_statistics else ()

    def head_description(self) -> dict:
        reads = "the final hidden state of the prompt's last token"
        if self.reads_statistics:
            reads += f", then (log1p(statistics) - statistics_mean) / statistics_scale of {', '.join(STATISTICS)}"
        return {
            "reads": reads,
            "logits": f"weight @ inputs + bias, viewed as [{NUM_ITEMS} items, {NUM_LEVELS} levels 0-{ITEM_MAX}]",
            "items": list(ITEM_NAMES),
            "input": self.input_description(),
        }

    def input_description(self) -> dict:
        """What the heads read, step by step, so that the predictions can be reproduced with plain
        transformers + peft (README: "Exports")."""
        prompt = self.prompt_settings
        return {
            "turns": "consecutive utterances of one speaker joined with a newline; client -> user, counselor -> assistant",
            "messages": "[system: system_prompt, if any] + the turns + [user: instruction]",
            "prompt": "tokenizer.apply_chat_template(messages, add_generation_prompt=True)",
            "instruction": prompt.get("instruction"),
            "system_prompt": prompt.get("system_prompt"),
            "max_length": prompt.get("max_length"),
            "answer_room": self.answer_room(),
            "cut": "drop the oldest turns, whole, until len(prompt) + answer_room <= max_length; when not even the"
            " latest turn fits, keep the first token and the last tokens of the prompt",
            "state": "model(prompt, output_hidden_states=True).hidden_states[-1][0, -1] (after the final norm)",
            "prediction": f"argmax over the {NUM_LEVELS} levels of each item",
        }
