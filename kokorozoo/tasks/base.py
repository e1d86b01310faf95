"""What every kokorozoo task shares: the backbone, the optimizer and schedule, adapter-only
checkpoints and export. A task subclasses :class:`Task` and writes its steps, its inference and
its metrics, nothing else.

A task provides (torchgeo's named hooks, litgpt's explicit steps):

- ``training_step`` / ``validation_step`` and its metrics, as any LightningModule;
- ``configure_heads(backbone)``: trainable modules beside the adapters (saved with them; name
  the attribute in :attr:`Task.head_name` and export writes and reloads it);
- for test and predict, :meth:`Task.infer` (the model's outputs for a batch),
  :meth:`Task.prediction_rows` (one JSON-able row per prediction, what ``test_step`` and
  ``predict_step`` return), :meth:`Task.update_test_metrics` and :meth:`Task.test_figures` (the
  model's figures), and :meth:`Task.score_constant` where a constant answer is a baseline.

Gathering the rows across processes, the baselines and the files (``predictions_file``,
``metrics.json``) are the evaluation layer's (:mod:`kokorozoo.evaluation.writer`).

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
    RELEASED_MODELS,
    Backbone,
    Llama3Config,
    LoraSettings,
    TinyConfig,
    load_backbone,
    load_tokenizer,
    released_name,
    trainable_state_dict,
)
from kokorozoo.chat_format import stop_token_ids
from kokorozoo.errors import UsageError
from kokorozoo.generation import generate_padded, generate_shared_prefix, shared_prefix_supported
from kokorozoo.tasks.loss import DEFAULT_LOSS_CHUNK, labelled_token_loss
from kokorozoo.tasks.model_files import CHECKPOINT_KEY, EXPORT_INFO


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
        output_dir: where test/predict write their files (default: the run's log folder; written
            by :class:`kokorozoo.evaluation.writer.ResultWriter`).
    """

    #: The task's name in results and exports (``task`` of ``metrics.json``, the model card).
    task_name: str = "task"
    #: The validation metric that picks the best checkpoint, and whether lower is better.
    monitor: str = "val_loss"
    mode: str = "min"
    #: The file test and predict write, one row per prediction.
    predictions_file: str = "predictions.jsonl"
    #: Settings of how a trained model is read (not of what was trained): a user's value for one
    #: of them wins over the checkpoint's at ``test``/``predict --ckpt_path``.
    reading_settings: tuple[str, ...] = ()
    #: The model is not loaded here but asked over an API (:mod:`kokorozoo.tasks.endpoint`): no
    #: weights, no checkpoint, not zero-shot.
    remote: bool = False

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

    @property
    def released(self) -> str | None:
        """The hub id of the released KokoroChat model this task's backbone is, if it is one: a
        model trained elsewhere, tested as it was released (not zero-shot)."""
        name = released_name(str(self.hparams.backbone))
        return RELEASED_MODELS[name] if name else None

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

    def hidden_states(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None, position_ids: torch.Tensor | None = None
    ) -> torch.Tensor:
        """The final (normed) hidden states [B, L, H], without the LM head: at 8k tokens a
        [batch, length, vocabulary] logits tensor would take tens of GB. Positions count from each
        row's first real token, so left- and right-padded rows read alike. A packed batch
        (:func:`~kokorozoo.data.batching.pack_samples`) gives ``position_ids`` restarting at each
        sample and no mask: transformers then keeps attention inside each sample."""
        if position_ids is None:
            position_ids = (attention_mask.cumsum(-1) - 1).clamp(min=0)
        # no cache: with one, transformers would not look for packed samples in the positions
        out = self.decoder(
            input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids, use_cache=False
        )
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
    def generate_text(
        self,
        prompts: Sequence[Sequence[int]],
        max_new_tokens: int,
        min_new_tokens: int = 0,
        shared_prefix: bool = False,
    ) -> list[str]:
        """Greedy continuations of ``prompts`` (token lists), each stopping at the end of the
        assistant turn. ``shared_prefix`` computes the history that prompts share once (see
        :mod:`kokorozoo.generation`); otherwise one ``generate`` call on the left-padded batch."""
        tokenizer = self.tokenizer
        settings = dict(
            max_new_tokens=max_new_tokens,
            min_new_tokens=min_new_tokens,
            stop_ids=stop_token_ids(tokenizer),
            pad_id=tokenizer.pad_token_id,
        )
        if shared_prefix and not shared_prefix_supported(self.model):
            warnings.warn(
                "this model's attention or generation config needs generate: prompts are not sharing their prefixes",
                stacklevel=2,
            )  # shown once
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
        kept = set(trainable_state_dict(self)) | set(self.head_buffers)
        checkpoint["state_dict"] = {k: v for k, v in checkpoint["state_dict"].items() if k in kept}
        checkpoint[CHECKPOINT_KEY] = {"task": _class_path(type(self)), "prompt": self.prompt_settings}

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        missing = sorted(set(trainable_state_dict(self)) - set(checkpoint["state_dict"]))
        if missing:
            raise ValueError(
                f"the checkpoint lacks {len(missing)} trained tensors of this task (first: {missing[0]}):"
                " it was written by another task or backbone setting"
            )

    # -- test and predict: inference and the task's figures ------------------------------------
    # Rows go to a writer in the evaluation layer (kokorozoo.evaluation.writer, on every trainer
    # of the CLI): it gathers them across processes, adds the baselines and writes the files.

    def infer(self, batch: dict) -> Any:
        """The model's outputs for a test/predict batch (texts, predicted scores, logits ...)."""
        raise NotImplementedError

    def prediction_rows(self, batch: dict, outputs: Any) -> list[dict]:
        """One JSON-able row per prediction of ``batch``, written to :attr:`predictions_file`."""
        raise NotImplementedError

    def update_test_metrics(self, batch: dict, outputs: Any) -> None:
        """Add a test batch to the task's test metrics."""
        raise NotImplementedError

    def test_figures(self, rows: list[dict]) -> dict[str, Any]:
        """The model's test figures once every batch is in (``rows``: every process's, in order):
        the fields of :class:`kokorozoo.evaluation.results.Result` the task knows (``task``,
        ``metrics``, ``dialogues`` or ``turns``, ...), the metrics reset. The writer logs them."""
        raise NotImplementedError

    def score_constant(self, labels: torch.Tensor, rows: list[dict]) -> dict[str, Any] | None:
        """The task's figures of answering every test row with ``labels`` (the training part's
        most frequent ones, as the datamodule's ``train_labels`` gives them): the constant
        baseline. None: the task has no such baseline."""
        return None

    def test_step(self, batch: dict, batch_idx: int) -> list[dict]:
        outputs = self.infer(batch)
        self.update_test_metrics(batch, outputs)
        return self.prediction_rows(batch, outputs)

    def predict_step(self, batch: dict, batch_idx: int) -> list[dict]:
        return self.prediction_rows(batch, self.infer(batch))

    # -- export and reload ------------------------------------------------------------------

    #: The attribute holding what ``configure_heads`` adds, saved by :meth:`export` as safetensors
    #: in :attr:`head_file` and described in ``kokorozoo.json`` under this name.
    head_name: str | None = None
    head_file: str = "head.safetensors"

    @property
    def head_buffers(self) -> tuple[str, ...]:
        """Buffers the head reads (not trained): kept in checkpoints and exports beside it."""
        return ()

    def head_description(self) -> dict[str, Any]:
        """How the head reads the backbone, for ``kokorozoo.json``; its list entries (the labels,
        in the order of the head's rows) must be equal when an export is read back."""
        return {}

    def export(self, out_dir: str | os.PathLike) -> Path:
        """Write a PEFT adapter folder (``PeftModel.from_pretrained`` loads it onto the backbone),
        the tokenizer, the head (:attr:`head_name`), and ``kokorozoo.json`` naming the task, its
        settings and the prompt settings it was trained with; :meth:`from_export` reads it back."""
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        self.model.save_pretrained(out)
        _name_base_model(out, self.hparams.backbone)
        self.tokenizer.save_pretrained(out)
        settings = {k: v for k, v in self.hparams.items() if not k.startswith("_")}
        info = {"task": _class_path(type(self)), "name": self.task_name, "settings": settings}
        info["prompt"] = self.prompt_settings
        quantization = getattr(self._causal_lm().config, "quantization_config", None)
        if quantization is not None:  # how the base was loaded: BitsAndBytesConfig(**this) reloads it so
            info["quantization_config"] = quantization if isinstance(quantization, dict) else quantization.to_dict()
        if (generation := self.generation_settings()) is not None:
            self.generation_config(generation).save_pretrained(out)
        if self.head_name is not None:
            from safetensors.torch import save_file

            tensors = {**getattr(self, self.head_name).state_dict(), **{k: getattr(self, k) for k in self.head_buffers}}
            save_file({k: v.detach().cpu().contiguous() for k, v in tensors.items()}, out / self.head_file)
            info[self.head_name] = {"file": self.head_file, **self.head_description()}
        _write_json(out / EXPORT_INFO, info)
        return out

    def generation_settings(self) -> dict[str, Any] | None:
        """The decoding a task that generates uses (``transformers.GenerationConfig`` fields),
        written into exports as ``generation_config.json``; None for a task that does not."""
        return None

    def generation_config(self, settings: dict[str, Any]):
        """``settings`` with the tokenizer's stop, pad and start ids: ``model.generate`` on a
        plain transformers model then decodes as kokorozoo does."""
        from transformers import GenerationConfig

        from kokorozoo.chat_format import stop_token_ids

        tokenizer = self.tokenizer
        return GenerationConfig(
            **settings,
            eos_token_id=stop_token_ids(tokenizer),
            pad_token_id=tokenizer.pad_token_id,
            bos_token_id=tokenizer.bos_token_id,
        )

    def load_head(self, folder: Path, info: dict) -> None:
        """The exported head, in place of the fresh one ``configure_heads`` made (the folder
        already checked by :func:`kokorozoo.tasks.model_files.read_export`)."""
        from safetensors.torch import load_file

        saved = info.get(self.head_name)
        if saved is None:
            raise UsageError(
                f"{folder}: the export holds no {self.head_name} of {type(self).__name__} (written"
                " before it was saved): export the checkpoint again"
            )
        for key, expected in self.head_description().items():
            if isinstance(expected, list) and saved.get(key) != expected:
                raise UsageError(
                    f"{Path(folder) / EXPORT_INFO}: {self.head_name}.{key}: {saved.get(key)} are not this task's {expected}"
                )
        tensors = load_file(Path(folder) / saved["file"])
        for name in self.head_buffers:
            getattr(self, name).copy_(tensors.pop(name))
        getattr(self, self.head_name).load_state_dict(tensors)

    @classmethod
    def from_export(cls, folder: str | os.PathLike) -> Task:
        """The task an exported folder holds, ready to predict (in a fresh process too): the
        backbone its ``kokorozoo.json`` names, the PEFT adapter loaded onto it, and the task's
        extras (heads); every file checked first (:mod:`kokorozoo.tasks.model_files`)."""
        from kokorozoo.tasks.model_files import load_export

        return load_export(folder, expected=cls)


def task_class(class_path: str) -> type:
    """The class a ``module.Class`` path names (a config may name a re-export of the same class)."""
    module, _, name = class_path.rpartition(".")
    return getattr(importlib.import_module(module), name)


def _class_path(cls: type) -> str:
    return f"{cls.__module__}.{cls.__qualname__}"


def _name_base_model(folder: Path, backbone: str) -> None:
    """PEFT writes the base model's local path into ``adapter_config.json``; a model loaded by hub
    name is named by it, so the folder loads anywhere (``tiny``/``llama3`` and local folders keep
    the path they were built or read at)."""
    config_path = folder / "adapter_config.json"
    if not config_path.is_file() or backbone in ("tiny", "llama3") or Path(backbone).exists():
        return
    if (released := released_name(backbone)) is not None:  # a released model: by its hub id, not the short name
        backbone = RELEASED_MODELS[released]
    config = json.loads(config_path.read_text(encoding="utf-8"))
    config["base_model_name_or_path"] = backbone
    _write_json(config_path, config)


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
