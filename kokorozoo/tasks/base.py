"""What every kokorozoo task shares: the backbone, the optimizer and schedule, adapter-only
checkpoints, the test/predict output files and export. A task subclasses :class:`Task` and writes
its steps and its metrics, nothing else.

A task provides (torchgeo's named hooks, litgpt's explicit steps):

- ``training_step`` / ``validation_step`` and its metrics, as any LightningModule;
- ``configure_heads(backbone)``: trainable modules beside the adapters (saved with them);
- for test and predict, :meth:`Task.infer` (the model's outputs for a batch),
  :meth:`Task.prediction_rows` (one JSON-able row per prediction), :meth:`Task.update_test_metrics`
  and :meth:`Task.test_report` (what ``metrics.json`` holds). The base collects the rows and
  writes ``predictions_file`` and ``metrics.json``.

Checkpoints hold only what is trained (LoRA, heads) plus the optimizer state: a 4-bit base cannot
be loaded back strictly, and it is the same for every run anyway. Loading is therefore non-strict,
so :meth:`Task.on_load_checkpoint` checks by hand that every trained tensor is there.
"""

from __future__ import annotations

import importlib
import json
import os
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
from lightning.pytorch import LightningModule

from kokorozoo.backbone import (
    Backbone,
    Llama3Config,
    LoraSettings,
    TinyConfig,
    load_backbone,
    load_tokenizer,
    trainable_state_dict,
)
from kokorozoo.chat_format import stop_token_ids
from kokorozoo.generation import generate_padded, generate_shared_prefix, shared_prefix_supported
from kokorozoo.tasks.loss import DEFAULT_LOSS_CHUNK, labelled_token_loss

CHECKPOINT_KEY = "kokorozoo"
EXPORT_INFO = "kokorozoo.json"


def _bnb_optimizer(name: str) -> Callable[..., torch.optim.Optimizer]:
    def build(params, lr, weight_decay):
        import bitsandbytes as bnb

        return getattr(bnb.optim, name)(params, lr=lr, weight_decay=weight_decay)

    return build


def _adamw(params, lr, weight_decay) -> torch.optim.Optimizer:
    on_cuda = all(p.is_cuda for p in params)
    return torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay, fused=on_cuda or None)


#: The optimizers the paper's runs name, by their Hugging Face Trainer names.
OPTIMIZERS: dict[str, Callable[..., torch.optim.Optimizer]] = {
    "adamw": _adamw,
    "adamw_torch": _adamw,
    "adamw_torch_fused": _adamw,
    "adamw_8bit": _bnb_optimizer("AdamW8bit"),
    "paged_adamw_8bit": _bnb_optimizer("PagedAdamW8bit"),
}


class Task(LightningModule):
    """Base of every task.

    Args:
        backbone: ``tiny`` (the embedded default), a local folder or a hub name (e.g.
            ``tokyotech-llm/Llama-3.1-Swallow-8B-Instruct-v0.3``).
        quantization: ``nf4`` (QLoRA) or ``none``.
        compute_dtype: ``auto`` (bfloat16 where the device computes it natively, float32
            elsewhere; see :mod:`kokorozoo.backbone.hardware`), ``bfloat16``, ``float16`` or ``float32``.
        lora: LoRA settings (the paper's by default); ``null`` trains no adapter.
        gradient_checkpointing: trade compute for memory.
        tiny: size of the ``tiny`` backbone.
        llama3: layers (and, for tests, width) of the ``llama3`` backbone, Swallow-8B's shape.
        loss_chunk_size: labelled tokens whose vocabulary-sized logits exist at once in the loss.
        optimizer: ``adamw`` (fused on CUDA; ``adamw_torch``/``adamw_torch_fused`` are aliases),
            ``adamw_8bit`` or ``paged_adamw_8bit`` (bitsandbytes).
        lr: peak learning rate, reached after ``warmup_steps`` of linear warm-up, then decayed
            linearly to zero (the Hugging Face Trainer's default schedule, which the paper used).
        warmup_steps: linear warm-up steps.
        weight_decay: AdamW weight decay.
        output_dir: where test/predict write their files (default: the run's log folder).
    """

    #: The validation metric that picks the best checkpoint, and whether lower is better.
    monitor: str = "val_loss"
    mode: str = "min"
    #: The file test and predict write, one row per prediction.
    predictions_file: str = "predictions.jsonl"
    #: Settings of how a trained model is read (not of what was trained): a user's value for one
    #: of them wins over the checkpoint's at ``test``/``predict --ckpt_path``.
    reading_settings: tuple[str, ...] = ()

    def __init__(
        self,
        backbone: str = "tiny",
        quantization: str = "nf4",
        compute_dtype: str = "auto",
        lora: LoraSettings | None = LoraSettings(),
        gradient_checkpointing: bool = False,
        tiny: TinyConfig | None = None,
        llama3: Llama3Config | None = None,
        loss_chunk_size: int = DEFAULT_LOSS_CHUNK,
        optimizer: str = "adamw_8bit",
        lr: float = 1e-3,
        warmup_steps: int = 100,
        weight_decay: float = 0.0,
        output_dir: str | None = None,
    ):
        super().__init__()
        if optimizer not in OPTIMIZERS:
            raise ValueError(f"optimizer must be one of {', '.join(OPTIMIZERS)}; got {optimizer!r}")
        self.save_hyperparameters()
        self.lora, self.tiny = _settings(LoraSettings, lora), _settings(TinyConfig, tiny)
        self.llama3 = _settings(Llama3Config, llama3)
        # plain values in hparams, so checkpoints load with torch.load(weights_only=True)
        self.hparams.lora, self.hparams.tiny = _jsonable(self.lora), _jsonable(self.tiny)
        self.hparams.llama3 = _jsonable(self.llama3)
        self.strict_loading = False
        self.model: torch.nn.Module | None = None
        self._tokenizer = None
        self._rows: list[dict] = []
        #: Set when test/predict run without a checkpoint: the reports say "zero-shot".
        self.zero_shot = False
        #: The datamodule's settings that shape this model's inputs (``prompt_settings()``: the
        #: max length, system prompt, role ...), recorded when connected and kept in checkpoints
        #: and exports, so a model can be prompted as it was trained without its config.
        self.prompt_settings: dict[str, Any] = {}

    # -- backbone ---------------------------------------------------------------------------

    @property
    def tokenizer(self):
        if self._tokenizer is None:
            self._tokenizer = load_tokenizer(self.hparams.backbone, self.tiny, llama3=self.llama3)
        return self._tokenizer

    def load_backbone(self, lora: bool = True) -> Backbone:
        """This task's backbone; ``lora=False`` loads the base alone (an exported adapter goes on it)."""
        hp = self.hparams
        return load_backbone(
            hp.backbone,
            quantization=hp.quantization,
            compute_dtype=hp.compute_dtype,
            lora=self.lora if lora else None,
            gradient_checkpointing=hp.gradient_checkpointing,
            tiny=self.tiny,
            llama3=self.llama3,
        )

    def configure_model(self) -> None:
        """Load the backbone once (Lightning calls this before training or restoring)."""
        if self.model is None:
            self._attach(self.load_backbone())

    def _attach(self, backbone: Backbone) -> None:
        self.model, self._tokenizer = backbone.model, backbone.tokenizer
        self.configure_heads(backbone)

    def configure_heads(self, backbone: Backbone) -> None:
        """Add task-specific trainable modules on top of the backbone (none by default)."""

    @classmethod
    def has_heads(cls) -> bool:
        """Whether the task trains modules of its own (``configure_heads``): without a checkpoint
        they are random, so testing it means nothing (a text task tested so is zero-shot)."""
        return cls.configure_heads is not Task.configure_heads

    def connect_datamodule(self, datamodule) -> None:
        """Hand the datamodule what the task owns: the tokenizer, and the room a generated answer
        needs after its prompt (``max_new_tokens``, for tasks that generate)."""
        datamodule.connect(self.tokenizer, max_new_tokens=self.hparams.get("max_new_tokens", 0))
        self.prompt_settings = datamodule.prompt_settings()

    def hidden_states(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None,
                      position_ids: torch.Tensor | None = None) -> torch.Tensor:
        """The final (normed) hidden states [B, L, H], without the LM head: at 8k tokens a
        [batch, length, vocabulary] logits tensor would take tens of GB. Positions count from each
        row's first real token, so left- and right-padded rows read alike. A packed batch
        (:func:`~kokorozoo.data.batching.pack_samples`) gives ``position_ids`` restarting at each
        sample and no mask: transformers then keeps attention inside each sample."""
        if position_ids is None:
            position_ids = (attention_mask.cumsum(-1) - 1).clamp(min=0)
        # no cache: with one, transformers would not look for packed samples in the positions
        out = self.decoder(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids, use_cache=False)
        return out.last_hidden_state

    def labelled_token_loss(self, batch: dict) -> tuple[torch.Tensor, torch.Tensor]:
        """Summed next-token cross-entropy over the labelled tokens of a padded or packed batch,
        and their count; the LM head runs on labelled positions only, ``loss_chunk_size`` at a
        time (see :mod:`kokorozoo.tasks.loss`): no [B, L, V] tensor in training or validation."""
        hidden = self.hidden_states(batch["input_ids"], batch.get("attention_mask"), batch.get("position_ids"))
        return labelled_token_loss(hidden, batch["labels"], self.lm_head, self.hparams.loss_chunk_size)

    def last_token_states(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """The final hidden state [B, H] of each row's last real token, left- or right-padded: the
        one position of a causal model that has read the whole input."""
        hidden = self.hidden_states(input_ids, attention_mask)
        last = attention_mask.shape[1] - 1 - attention_mask.flip(-1).argmax(-1)
        return hidden[torch.arange(hidden.shape[0], device=hidden.device), last]

    @property
    def decoder(self) -> torch.nn.Module:
        """The decoder stack (final norm included, no LM head), LoRA layers inside it."""
        return self._causal_lm().base_model

    @property
    def lm_head(self) -> torch.nn.Module:
        return self._causal_lm().get_output_embeddings()

    def _causal_lm(self) -> torch.nn.Module:
        return self.model.get_base_model() if hasattr(self.model, "get_base_model") else self.model

    @torch.no_grad()
    def generate_text(self, prompts: Sequence[Sequence[int]], max_new_tokens: int, min_new_tokens: int = 0,
                      shared_prefix: bool = False) -> list[str]:
        """Greedy continuations of ``prompts`` (token lists), each stopping at the end of the
        assistant turn. ``shared_prefix`` computes the history that prompts share once (see
        :mod:`kokorozoo.generation`); otherwise one ``generate`` call on the left-padded batch."""
        tokenizer = self.tokenizer
        settings = dict(max_new_tokens=max_new_tokens, min_new_tokens=min_new_tokens,
                        stop_ids=stop_token_ids(tokenizer), pad_id=tokenizer.pad_token_id)
        if shared_prefix and not shared_prefix_supported(self.model):
            warnings.warn("this model's attention or generation config needs generate: prompts are not sharing"
                          " their prefixes", stacklevel=2)  # shown once
            shared_prefix = False
        if shared_prefix:
            new_tokens = generate_shared_prefix(self.model, prompts, batch_size=len(prompts), **settings)
        else:
            new_tokens = generate_padded(self.model, prompts, **settings)
        return tokenizer.batch_decode(new_tokens, skip_special_tokens=True)

    # -- optimization -----------------------------------------------------------------------

    def configure_optimizers(self):
        from transformers import get_linear_schedule_with_warmup

        hp = self.hparams
        params = [p for p in self.parameters() if p.requires_grad]
        optimizer = OPTIMIZERS[hp.optimizer](params, hp.lr, hp.weight_decay)
        total = max(int(self.trainer.estimated_stepping_batches), 1)
        schedule = get_linear_schedule_with_warmup(optimizer, min(hp.warmup_steps, total), total)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": schedule, "interval": "step"}}

    # -- checkpoints ------------------------------------------------------------------------

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        trained = trainable_state_dict(self)
        checkpoint["state_dict"] = {k: v for k, v in checkpoint["state_dict"].items() if k in trained}
        checkpoint[CHECKPOINT_KEY] = {"task": _class_path(type(self)), "prompt": self.prompt_settings}

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        missing = sorted(set(trainable_state_dict(self)) - set(checkpoint["state_dict"]))
        if missing:
            raise ValueError(
                f"the checkpoint lacks {len(missing)} trained tensors of this task (first: {missing[0]}):"
                " it was written by another task or backbone setting"
            )

    # -- test and predict: rows, metrics and files -----------------------------------------------

    def infer(self, batch: dict) -> Any:
        """The model's outputs for a test/predict batch (texts, predicted scores, logits ...)."""
        raise NotImplementedError

    def prediction_rows(self, batch: dict, outputs: Any) -> list[dict]:
        """One JSON-able row per prediction of ``batch``, written to :attr:`predictions_file`."""
        raise NotImplementedError

    def update_test_metrics(self, batch: dict, outputs: Any) -> None:
        """Add a test batch to the task's test metrics."""
        raise NotImplementedError

    def test_report(self, rows: list[dict]) -> dict:
        """What ``metrics.json`` holds after test (the task logs its figures here too)."""
        raise NotImplementedError

    def test_step(self, batch: dict, batch_idx: int) -> None:
        outputs = self.infer(batch)
        self.update_test_metrics(batch, outputs)
        self._rows += self.prediction_rows(batch, outputs)

    def predict_step(self, batch: dict, batch_idx: int) -> list[dict]:
        rows = self.prediction_rows(batch, self.infer(batch))
        self._rows += rows
        return rows

    def on_test_epoch_start(self) -> None:
        self._rows = []

    def on_predict_epoch_start(self) -> None:
        self._rows = []

    def on_test_epoch_end(self) -> None:
        rows = self._all_rows()
        report = self.test_report(rows)
        report["checkpoint"] = self.trainer.ckpt_path if self._trainer is not None else None
        if self.zero_shot:
            report["zero_shot"] = True
        self.write_jsonl(self.predictions_file, rows)
        self.write_json("metrics.json", report)

    def on_predict_epoch_end(self) -> None:
        self.write_jsonl(self.predictions_file, self._all_rows())

    def _all_rows(self) -> list[dict]:
        """Every process's rows in rank order: each process evaluates a contiguous slice of the
        part (see :mod:`kokorozoo.data.sampling`), so this is the single-process order."""
        if self._trainer is None or self.trainer.world_size == 1:
            return self._rows
        gathered: list[list[dict]] = [[] for _ in range(self.trainer.world_size)]
        torch.distributed.all_gather_object(gathered, self._rows)
        return [row for rows in gathered for row in rows]

    def _writes(self) -> bool:
        """Only the first process writes files (every rank runs test/predict under DDP)."""
        return self._trainer is None or self.trainer.is_global_zero

    def output_path(self, name: str) -> Path:
        """A file in the output folder: ``output_dir`` or the run's log folder."""
        folder = self.hparams.output_dir or (self.trainer.log_dir if self._trainer else None) or "."
        Path(folder).mkdir(parents=True, exist_ok=True)
        return Path(folder) / name

    def write_json(self, name: str, obj: Any) -> Path:
        path = self.output_path(name)
        if self._writes():
            _write_json(path, obj)
        return path

    def write_jsonl(self, name: str, rows: list[dict]) -> Path:
        path = self.output_path(name)
        if not self._writes():
            return path
        tmp = path.with_suffix(path.suffix + ".tmp")
        with open(tmp, "w", encoding="utf-8") as f:
            for row in rows:
                f.write(json.dumps(row, ensure_ascii=False) + "\n")
        os.replace(tmp, path)
        return path

    # -- export and reload ------------------------------------------------------------------

    def export(self, out_dir: str | os.PathLike) -> Path:
        """Write a PEFT adapter folder (``PeftModel.from_pretrained`` loads it onto the backbone),
        the tokenizer, what :meth:`export_extras` adds, and ``kokorozoo.json`` naming the task, its
        settings and the prompt settings it was trained with; :meth:`from_export` reads it back."""
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        self.model.save_pretrained(out)
        self.tokenizer.save_pretrained(out)
        settings = {k: v for k, v in self.hparams.items() if not k.startswith("_")}
        info = {"task": _class_path(type(self)), "settings": settings, "prompt": self.prompt_settings,
                **self.export_extras(out)}
        _write_json(out / EXPORT_INFO, info)
        return out

    def export_extras(self, out: Path) -> dict:
        """Files a task writes beside the adapter (e.g. heads), described for ``kokorozoo.json``."""
        return {}

    def load_export_extras(self, folder: Path, info: dict) -> None:
        """Read back what :meth:`export_extras` wrote."""

    @classmethod
    def from_export(cls, folder: str | os.PathLike) -> Task:
        """The task an exported folder holds, ready to predict (in a fresh process too): the
        backbone its ``kokorozoo.json`` names, the PEFT adapter loaded onto it, and the task's
        extras (heads)."""
        from peft import PeftModel

        folder = Path(folder)
        info = json.loads((folder / EXPORT_INFO).read_text(encoding="utf-8"))
        task = _instantiate(info["task"], info["settings"], expected=cls)
        backbone = task.load_backbone(lora=False)
        if (folder / "adapter_config.json").exists():
            backbone.model = PeftModel.from_pretrained(backbone.model, folder)
        task._attach(backbone)
        task.load_export_extras(folder, info)
        task.prompt_settings = dict(info.get("prompt") or {})
        return task.eval()


class CheckpointError(ValueError):
    """A checkpoint a user named cannot be used: the message names the file and why."""


def read_checkpoint(path: str | Path) -> dict[str, Any]:
    """A kokorozoo checkpoint's contents (on the CPU); one-line errors for a missing, truncated,
    foreign or garbage file."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such checkpoint file")
    try:
        saved = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - torch raises many kinds for a file that is not a checkpoint
        reason = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise CheckpointError(f"{path}: not a readable checkpoint (truncated or not a checkpoint: {reason})") from None
    if not isinstance(saved, dict) or CHECKPOINT_KEY not in saved or "task" not in saved[CHECKPOINT_KEY]:
        raise CheckpointError(f"{path}: not a kokorozoo checkpoint (no {CHECKPOINT_KEY!r} entry)")
    return saved


def load_task(checkpoint: str | os.PathLike) -> Task:
    """The task a kokorozoo checkpoint was written by, with its trained tensors loaded."""
    saved = read_checkpoint(checkpoint)
    task = _instantiate(saved[CHECKPOINT_KEY]["task"], saved["hyper_parameters"])
    task.configure_model()
    task.on_load_checkpoint(saved)
    task.load_state_dict(saved["state_dict"], strict=False)
    task.prompt_settings = dict(saved[CHECKPOINT_KEY].get("prompt") or {})
    task.eval()
    return task


def _instantiate(class_path: str, settings: dict, expected: type = Task) -> Task:
    """The task class at ``class_path`` built with its saved settings (LightningCLI's private
    entries such as ``_class_path`` are not init arguments)."""
    cls = task_class(class_path)
    if not issubclass(cls, expected):
        raise ValueError(f"{class_path} is not a {expected.__name__}")
    return cls(**{k: v for k, v in settings.items() if not k.startswith("_")})


def task_class(class_path: str) -> type:
    """The class a ``module.Class`` path names (a config may name a re-export of the same class)."""
    module, _, name = class_path.rpartition(".")
    return getattr(importlib.import_module(module), name)


def _class_path(cls: type) -> str:
    return f"{cls.__module__}.{cls.__qualname__}"


def _write_json(path: Path, obj: Any) -> None:
    path.write_text(json.dumps(obj, ensure_ascii=False, indent=2) + "\n", encoding="utf-8")


def _jsonable(value: Any) -> Any:
    import dataclasses

    if dataclasses.is_dataclass(value):
        return {k: _jsonable(v) for k, v in dataclasses.asdict(value).items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    return value


def _settings(cls, value):
    """A settings dataclass from what a config gives (a dict, a namespace, or the object itself)."""
    if value is None or isinstance(value, cls):
        return value
    fields = dict(vars(value)) if not isinstance(value, dict) else dict(value)
    for key in ("target_modules", "modules_to_save"):
        if key in fields:
            fields[key] = tuple(fields[key])
    return cls(**fields)
