"""The backbone every task uses: :mod:`~kokorozoo.backbone.loading` (an LLM by name or path, NF4,
LoRA), :mod:`~kokorozoo.backbone.tiny` (the embedded ``tiny`` default, built and cached) and
:mod:`~kokorozoo.backbone.llama3` (Swallow-8B's shape and tokenizer with random weights)."""

from kokorozoo.backbone.errors import BackboneError
from kokorozoo.backbone.llama3 import LLAMA3, Llama3Config, build_llama3, llama3_tokenizer
from kokorozoo.backbone.loading import (
    COMPUTE_DTYPES,
    LORA_TARGETS,
    QUANTIZATIONS,
    RELEASED_MODELS,
    Backbone,
    LoraSettings,
    default_device,
    disable_cpu_weight_repacking,
    hub_offline,
    load_backbone,
    load_tokenizer,
    released_folder,
    released_name,
    resolve_model,
    trainable_state_dict,
)
from kokorozoo.backbone.tiny import TINY, TinyConfig, build_tiny, default_cache_dir, train_tokenizer

__all__ = [
    "COMPUTE_DTYPES",
    "LLAMA3",
    "LORA_TARGETS",
    "QUANTIZATIONS",
    "RELEASED_MODELS",
    "TINY",
    "Backbone",
    "BackboneError",
    "Llama3Config",
    "LoraSettings",
    "TinyConfig",
    "build_llama3",
    "build_tiny",
    "default_cache_dir",
    "default_device",
    "disable_cpu_weight_repacking",
    "hub_offline",
    "llama3_tokenizer",
    "load_backbone",
    "load_tokenizer",
    "released_folder",
    "released_name",
    "resolve_model",
    "train_tokenizer",
    "trainable_state_dict",
]
