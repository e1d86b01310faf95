"""What every kokorozoo task shares: the backbone, the optimizer and schedule, adapter-only
checkpoints and the output folder. A task subclasses :class:`Task` and writes its steps.

Checkpoints hold only what is trained (LoRA, heads) plus the optimizer state: a 4-bit base cannot
be loaded back strictly, and it is the same for every run anyway. Loading is therefore non-strict,
so :meth:`Task.on_load_checkpoint` checks by hand that every trained tensor is there.
"""

from __future__ import annotations

import json
import os
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from lightning.pytorch import LightningModule

from kokorozoo.backbone import Backbone, LoraSettings, TinyConfig, load_backbone, load_tokenizer
from kokorozoo.generation import generate_padded, generate_shared_prefix, shared_prefix_supported, stop_token_ids

OPTIMIZERS = ("adamw", "adamw_torch", "adamw_torch_fused", "adamw_8bit", "paged_adamw_8bit")
CHECKPOINT_KEY = "kokorozoo"


class Task(LightningModule):
    """Base of every task.

    Args:
        backbone: ``tiny`` (the embedded default), a local folder or a hub name (e.g.
            ``tokyotech-llm/Llama-3.1-Swallow-8B-Instruct-v0.3``).
        quantization: ``nf4`` (QLoRA) or ``none``.
        compute_dtype: ``bfloat16``, ``float16`` or ``float32``.
        lora: LoRA settings (the paper's by default); ``null`` trains no adapter.
        gradient_checkpointing: trade compute for memory.
        tiny: size of the ``tiny`` backbone.
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

    def __init__(
        self,
        backbone: str = "tiny",
        quantization: str = "nf4",
        compute_dtype: str = "bfloat16",
        lora: LoraSettings | None = LoraSettings(),
        gradient_checkpointing: bool = False,
        tiny: TinyConfig | None = None,
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
        # plain values in hparams, so checkpoints load with torch.load(weights_only=True)
        self.hparams.lora, self.hparams.tiny = _jsonable(self.lora), _jsonable(self.tiny)
        self.strict_loading = False
        self.model: torch.nn.Module | None = None
        self._tokenizer = None

    # -- backbone ---------------------------------------------------------------------------

    @property
    def tokenizer(self):
        if self._tokenizer is None:
            self._tokenizer = load_tokenizer(self.hparams.backbone, self.tiny)
        return self._tokenizer

    def load_backbone(self) -> Backbone:
        hp = self.hparams
        return load_backbone(
            hp.backbone,
            quantization=hp.quantization,
            compute_dtype=hp.compute_dtype,
            lora=self.lora,
            gradient_checkpointing=hp.gradient_checkpointing,
            tiny=self.tiny,
        )

    def configure_model(self) -> None:
        """Load the backbone once (Lightning calls this before training or restoring)."""
        if self.model is None:
            loaded = self.load_backbone()
            self.model, self._tokenizer = loaded.model, loaded.tokenizer
            self.configure_heads(loaded)

    def configure_heads(self, backbone: Backbone) -> None:
        """Add task-specific trainable modules on top of the backbone (none by default)."""

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

        params = [p for p in self.parameters() if p.requires_grad]
        optimizer = build_optimizer(self.hparams.optimizer, params, self.hparams.lr, self.hparams.weight_decay)
        total = max(int(self.trainer.estimated_stepping_batches), 1)
        schedule = get_linear_schedule_with_warmup(optimizer, min(self.hparams.warmup_steps, total), total)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": schedule, "interval": "step"}}

    # -- checkpoints ------------------------------------------------------------------------

    def trained_names(self) -> set[str]:
        return {name for name, p in self.named_parameters() if p.requires_grad}

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        trained = self.trained_names()
        checkpoint["state_dict"] = {k: v for k, v in checkpoint["state_dict"].items() if k in trained}
        checkpoint[CHECKPOINT_KEY] = {"task": f"{type(self).__module__}.{type(self).__qualname__}"}

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        missing = sorted(self.trained_names() - set(checkpoint["state_dict"]))
        if missing:
            raise ValueError(
                f"the checkpoint lacks {len(missing)} trained tensors of this task (first: {missing[0]}):"
                " it was written by another task or backbone setting"
            )

    # -- export -----------------------------------------------------------------------------

    def export(self, out_dir: str | os.PathLike) -> Path:
        """Write a PEFT adapter folder (``PeftModel.from_pretrained`` loads it onto the backbone),
        the tokenizer, and ``kokorozoo.json`` naming the task and its settings."""
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        self.model.save_pretrained(out)
        self.tokenizer.save_pretrained(out)
        settings = {k: v for k, v in self.hparams.items() if not k.startswith("_")}
        info = {"task": f"{type(self).__module__}.{type(self).__qualname__}", "settings": settings}
        (out / "kokorozoo.json").write_text(json.dumps(info, ensure_ascii=False, indent=2) + "\n", encoding="utf-8")
        return out

    # -- outputs ----------------------------------------------------------------------------

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
        if not self._writes():
            return path
        path.write_text(json.dumps(obj, ensure_ascii=False, indent=2) + "\n", encoding="utf-8")
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


def load_task(checkpoint: str | os.PathLike) -> Task:
    """The task a kokorozoo checkpoint was written by, with its trained tensors loaded."""
    import importlib

    path = Path(checkpoint)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such checkpoint file")
    try:
        saved = torch.load(path, map_location="cpu", weights_only=True)
        module, _, name = saved[CHECKPOINT_KEY]["task"].rpartition(".")
    except (KeyError, TypeError) as e:
        raise ValueError(f"{path}: not a kokorozoo checkpoint (no {e} entry)") from None
    except Exception as e:  # noqa: BLE001 - torch raises many kinds for a file that is not a checkpoint
        raise ValueError(f"{path}: not a readable checkpoint ({type(e).__name__})") from None
    cls = getattr(importlib.import_module(module), name)
    # LightningCLI adds private entries such as _class_path; they are not init arguments
    task = cls(**{k: v for k, v in saved["hyper_parameters"].items() if not k.startswith("_")})
    task.configure_model()
    task.on_load_checkpoint(saved)
    task.load_state_dict(saved["state_dict"], strict=False)
    task.eval()
    return task


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


def build_optimizer(name: str, params, lr: float, weight_decay: float) -> torch.optim.Optimizer:
    """The optimizers the paper's runs name, by their Hugging Face Trainer names."""
    if name in ("adamw", "adamw_torch", "adamw_torch_fused"):
        on_cuda = all(p.is_cuda for p in params)
        return torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay, fused=on_cuda or None)
    import bitsandbytes as bnb

    if name == "adamw_8bit":
        return bnb.optim.AdamW8bit(params, lr=lr, weight_decay=weight_decay)
    if name == "paged_adamw_8bit":
        return bnb.optim.PagedAdamW8bit(params, lr=lr, weight_decay=weight_decay)
    raise ValueError(f"optimizer must be one of {', '.join(OPTIMIZERS)}; got {name!r}")
