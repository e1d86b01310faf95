"""Loading a backbone: an LLM by hub name or local path, 4-bit NF4 or not, LoRA adapters and
gradient checkpointing. Every task loads its model through :func:`load_backbone`.

The paper's model (``tokyotech-llm/Llama-3.1-Swallow-8B-Instruct-v0.3``), the embedded ``tiny``
default (:mod:`kokorozoo.backbone.tiny`) and the Swallow-shaped ``llama3`` model
(:mod:`kokorozoo.backbone.llama3`) go through the same ``from_pretrained`` code, so the code path
tested on CPU is the one that loads the real model on a GPU.
"""

from __future__ import annotations

import logging
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from kokorozoo.backbone.errors import BackboneError
from kokorozoo.backbone.hardware import AUTO, resolve_compute_dtype
from kokorozoo.backbone.llama3 import LLAMA3, Llama3Config, build_llama3
from kokorozoo.backbone.tiny import TINY, TinyConfig, build_tiny
from kokorozoo.chat_format import PAD, ensure_assistant_mask_template

if TYPE_CHECKING:
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

log = logging.getLogger(__name__)

QUANTIZATIONS = ("nf4", "none")
COMPUTE_DTYPES = {"bfloat16": torch.bfloat16, "float16": torch.float16, "float32": torch.float32}
#: What ``compute_dtype`` accepts: a dtype, or ``auto`` (see :mod:`kokorozoo.backbone.hardware`).
COMPUTE_DTYPE_CHOICES = (AUTO, *COMPUTE_DTYPES)

#: The lab's released KokoroChat models (the paper's Kokoro-Low/High/Full, fine-tuned from
#: Llama-3.1-Swallow-8B-Instruct-v0.3), by the short name a config gives as ``backbone``.
RELEASED_MODELS = {
    "kokorochat-low": "UEC-InabaLab/Llama-3.1-KokoroChat-Low",
    "kokorochat-high": "UEC-InabaLab/Llama-3.1-KokoroChat-High",
    "kokorochat-full": "UEC-InabaLab/Llama-3.1-KokoroChat-Full",
}
#: The names earlier links of the lab's README gave the same models.
EARLIER_NAMES = {f"UEC-InabaLab/KokoroChat-{size}": f"kokorochat-{size.lower()}" for size in ("Low", "High", "Full")}
#: The folder holding local copies of released models, one sub-folder per short name.
MODELS_ENV = "KOKOROZOO_MODELS"

#: The paper's LoRA targets: every attention and MLP projection of a Llama block.
LORA_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


@dataclass(frozen=True)
class LoraSettings:
    """LoRA adapter settings; the defaults are the paper's (r=8, alpha=16, dropout=0.05, all seven
    projections)."""

    r: int = 8
    alpha: int = 16
    dropout: float = 0.05
    target_modules: tuple[str, ...] = LORA_TARGETS
    #: Whole modules trained beside the adapters (PEFT's modules_to_save), e.g. ``lm_head`` for the
    #: tiny backbone, whose random weights give LoRA alone nothing to adapt. The paper used none.
    modules_to_save: tuple[str, ...] = ()

    def peft_config(self):
        from peft import LoraConfig

        return LoraConfig(
            r=self.r,
            lora_alpha=self.alpha,
            lora_dropout=self.dropout,
            target_modules=list(self.target_modules),
            modules_to_save=list(self.modules_to_save) or None,
            bias="none",
            task_type="CAUSAL_LM",
        )


@dataclass
class Backbone:
    """A loaded model (a ``PeftModel`` when LoRA is on) and its tokenizer."""

    model: PreTrainedModel
    tokenizer: PreTrainedTokenizerBase


def load_backbone(
    model: str = TINY,
    quantization: str = "nf4",
    compute_dtype: str = AUTO,
    lora: LoraSettings | None = LoraSettings(),
    gradient_checkpointing: bool = False,
    tiny: TinyConfig | None = None,
    cache_dir: str | os.PathLike | None = None,
    device: str | None = None,
    llama3: Llama3Config | None = None,
) -> Backbone:
    """Load ``model`` ready for training: base weights frozen (4-bit NF4 with ``quantization="nf4"``),
    LoRA adapters trainable (none with ``lora=None``, e.g. for zero-shot), in train mode.

    ``model`` is ``"tiny"`` or ``"llama3"`` (built on first use under ``cache_dir`` from the
    ``tiny`` or ``llama3`` settings, see :func:`~kokorozoo.backbone.tiny.build_tiny` and
    :func:`~kokorozoo.backbone.llama3.build_llama3`), a local folder saved with
    ``save_pretrained``, or a hub name already in the local cache when the hub is offline. ``device`` defaults to this process's GPU (``LOCAL_RANK``) when CUDA is
    available, else the CPU. ``compute_dtype="auto"`` is bfloat16 where that device computes it
    natively and float32 elsewhere; one log line says which and why.
    """
    device = device or default_device()
    compute_dtype = _resolved_compute_dtype(compute_dtype, device)
    dtype = COMPUTE_DTYPES[compute_dtype]
    quantization_config = _quantization_config(quantization, dtype)
    source = resolve_model(model, tiny, cache_dir, llama3)

    from transformers import AutoModelForCausalLM

    log.info("Loading %s (%s, %s) on %s", model, quantization, compute_dtype, device)
    try:
        base = AutoModelForCausalLM.from_pretrained(
            source,
            dtype=dtype,
            quantization_config=quantization_config,
            device_map=device,
            local_files_only=hub_offline(),
        )
    except OSError as e:
        raise BackboneError(f"model {model!r} could not be loaded: {_first_line(e)}") from None
    disable_cpu_weight_repacking(base)
    _prepare_for_training(base, quantization_config is not None, gradient_checkpointing)

    if lora is not None:
        from peft import get_peft_model

        try:
            base = get_peft_model(base, lora.peft_config())
        except ValueError as e:
            raise BackboneError(f"LoRA on {model!r}: {_first_line(e)}") from None
    base.train()
    return Backbone(base, load_tokenizer(model, tiny, cache_dir, llama3))


def load_tokenizer(
    model: str = TINY,
    tiny: TinyConfig | None = None,
    cache_dir: str | os.PathLike | None = None,
    llama3: Llama3Config | None = None,
) -> PreTrainedTokenizerBase:
    """The tokenizer of ``model`` alone (for datamodules), with a pad token and a chat template
    that marks assistant tokens (see :data:`kokorozoo.chat_format.LLAMA3_CHAT_TEMPLATE`)."""
    from transformers import AutoTokenizer

    source = resolve_model(model, tiny, cache_dir, llama3)
    try:
        tokenizer = AutoTokenizer.from_pretrained(source, local_files_only=hub_offline())
    except OSError as e:
        raise BackboneError(f"tokenizer of {model!r} could not be loaded: {_first_line(e)}") from None
    if tokenizer.pad_token is None:
        tokenizer.pad_token = PAD if PAD in tokenizer.get_vocab() else tokenizer.eos_token
    ensure_assistant_mask_template(tokenizer, model)
    # a whole dialogue is rendered first and cut to data.max_length by kokorozoo itself, so the
    # tokenizer's warning about sequences longer than the model is noise
    tokenizer.model_max_length = sys.maxsize
    return tokenizer


def resolve_model(
    model: str,
    tiny: TinyConfig | None = None,
    cache_dir: str | os.PathLike | None = None,
    llama3: Llama3Config | None = None,
) -> str:
    """What ``from_pretrained`` gets for ``model``: the tiny or llama3 model's folder (built if
    needed), a local folder, or a hub name; a name that cannot load offline fails here in one line."""
    if model == TINY:
        return str(build_tiny(tiny, cache_dir=cache_dir))
    if model == LLAMA3:
        return str(build_llama3(llama3, cache_dir=cache_dir))
    if released_name(model) is not None:
        return _released_source(released_name(model))
    path = Path(model).expanduser()
    if path.is_dir():
        return str(path)
    if path.exists() or model.startswith((".", "/", "~")) or model.count("/") > 1:
        raise BackboneError(f"model {model!r} is not a directory (expected a folder saved with save_pretrained)")
    if hub_offline() and not _in_hub_cache(model):
        raise BackboneError(
            f"model {model!r} is not a local directory and not in the local Hugging Face cache, and the hub is"
            " offline (HF_HUB_OFFLINE=1): download it where the hub is reachable, or pass its local folder"
        )
    return model


def released_name(model: str) -> str | None:
    """The short name of a released KokoroChat model ``model`` names (its short name, hub id or an
    earlier name), None for any other model."""
    if model in RELEASED_MODELS:
        return model
    if model in EARLIER_NAMES:
        return EARLIER_NAMES[model]
    return next((name for name, hub_id in RELEASED_MODELS.items() if hub_id == model), None)


def released_folder(name: str) -> Path:
    """Where a local copy of the released model ``name`` is looked for: ``$KOKOROZOO_MODELS/NAME``
    (default ``$KOKOROZOO_CACHE/models/NAME``)."""
    from kokorozoo.backbone.tiny import default_cache_dir

    return Path(os.environ.get(MODELS_ENV) or default_cache_dir() / "models").expanduser() / name


def _released_source(name: str) -> str:
    """A released model's local copy, else its hub id; offline without either, one line saying
    where to put the copy."""
    folder, hub_id = released_folder(name), RELEASED_MODELS[name]
    if folder.is_dir():
        return str(folder)
    if hub_offline() and not _in_hub_cache(hub_id):
        raise BackboneError(
            f"{name} ({hub_id}) is not on this machine and the hub is offline (HF_HUB_OFFLINE=1): put a copy in"
            f" {folder} (`huggingface-cli download {hub_id} --local-dir {folder}` where the hub is reachable), or set"
            f" {MODELS_ENV} to the folder that holds {name}/"
        )
    return hub_id


def hub_offline() -> bool:
    """Whether the Hugging Face hub is switched off, read now (``huggingface_hub`` reads
    ``HF_HUB_OFFLINE`` only once, at import)."""
    from huggingface_hub import constants

    return constants.HF_HUB_OFFLINE or os.environ.get("HF_HUB_OFFLINE", "").upper() in ("1", "ON", "YES", "TRUE")


def default_device() -> str:
    """This process's GPU when CUDA is available (``LOCAL_RANK`` under multi-GPU launchers), else
    the CPU. A 4-bit model cannot be moved after loading, so it is placed at load time."""
    if torch.cuda.is_available():
        return f"cuda:{int(os.environ.get('LOCAL_RANK', 0))}"
    return "cpu"


def disable_cpu_weight_repacking(model: torch.nn.Module) -> int:
    """Keep every ``bnb.nn.Linear4bit`` in the layout its training kernels read; returns how many.

    On CPUs with AVX512-BF16, bitsandbytes 0.50 repacks a 4-bit weight on its first eval-mode,
    no-grad forward (validation, ``generate``) into a layout with no autograd kernel: later
    training gradients come out silently wrong. Applied on every load, before any forward, so that
    results never depend on the machine. A weight already repacked cannot be restored exactly
    (its scales were rounded to bfloat16), so that raises instead.
    """
    try:
        import bitsandbytes as bnb
    except ImportError:
        return 0
    layers = [(name, m) for name, m in model.named_modules() if isinstance(m, bnb.nn.Linear4bit)]
    for name, layer in layers:
        if getattr(getattr(layer.weight, "quant_state", None), "packing_format_for_cpu", False):
            raise BackboneError(
                f"{name} was already repacked for CPU inference by an eval-mode forward; its training gradients"
                " would be wrong: reload the model (load_backbone applies this fix before any forward)"
            )
        layer.support_avx512bf16_for_cpu = False
    return len(layers)


def trainable_state_dict(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """Only the parameters being trained (LoRA, task heads): what an adapter-only checkpoint holds,
    since a 4-bit base cannot be saved and reloaded strictly."""
    return {name: p.detach() for name, p in model.named_parameters() if p.requires_grad}


def _resolved_compute_dtype(name: str, device: str) -> str:
    """The dtype name ``name`` means on ``device``; ``auto`` is resolved and logged with its reason."""
    if name not in COMPUTE_DTYPE_CHOICES:
        raise BackboneError(f"compute_dtype must be one of {', '.join(COMPUTE_DTYPE_CHOICES)}, got {name!r}")
    choice = resolve_compute_dtype(name, device)
    if name == AUTO:  # shown beside Lightning's own start-up lines, once under DDP
        from lightning.pytorch.utilities import rank_zero_info

        rank_zero_info(f"kokorozoo: compute_dtype auto -> {choice.name} ({choice.reason})")
    return choice.name


def _quantization_config(quantization: str, dtype: torch.dtype):
    """The ``BitsAndBytesConfig`` for NF4 (QLoRA: 4-bit weights, matmuls in ``dtype``), or None."""
    if quantization not in QUANTIZATIONS:
        raise BackboneError(f"quantization must be one of {', '.join(QUANTIZATIONS)}, got {quantization!r}")
    if quantization == "none":
        return None
    try:
        import bitsandbytes  # noqa: F401
    except ImportError:
        raise BackboneError(
            "quantization='nf4' needs bitsandbytes: pip install -c constraints.txt bitsandbytes"
            " (or use quantization='none')"
        ) from None
    from transformers import BitsAndBytesConfig

    return BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_compute_dtype=dtype)


def _prepare_for_training(model: PreTrainedModel, quantized: bool, gradient_checkpointing: bool) -> None:
    """Freeze the base weights; for 4-bit, also peft's k-bit preparation (norms and embeddings in
    float32, inputs that carry gradients through checkpointing)."""
    checkpointing_kwargs = {"use_reentrant": False}
    if quantized:
        from peft import prepare_model_for_kbit_training

        prepare_model_for_kbit_training(
            model, use_gradient_checkpointing=gradient_checkpointing, gradient_checkpointing_kwargs=checkpointing_kwargs
        )
        return
    model.requires_grad_(False)
    if gradient_checkpointing:
        model.activation_checkpointing_enable(activation_checkpointing_kwargs=checkpointing_kwargs)


def _in_hub_cache(name: str) -> bool:
    from huggingface_hub import try_to_load_from_cache

    try:
        return isinstance(try_to_load_from_cache(name, "config.json"), str)
    except ValueError:  # not a valid repo id
        return False


def _first_line(error: BaseException) -> str:
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__
