"""The one backbone loader every task uses: an LLM by hub name or local path, 4-bit NF4 or not,
LoRA adapters, gradient checkpointing, and the embedded ``tiny`` default.

The paper's model (``tokyotech-llm/Llama-3.1-Swallow-8B-Instruct-v0.3``) and ``tiny`` go through
the same ``from_pretrained`` code: ``tiny`` is a small random Llama saved in the Hugging Face
format (with a byte-level BPE tokenizer trained on KokoroChat's training split) in a cache folder,
so the code path tested on CPU is the one that loads the real model on a GPU.
"""

from __future__ import annotations

import dataclasses
import hashlib
import itertools
import json
import logging
import os
import shutil
import tempfile
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import torch

if TYPE_CHECKING:
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

log = logging.getLogger(__name__)

TINY = "tiny"
QUANTIZATIONS = ("nf4", "none")
COMPUTE_DTYPES = {"bfloat16": torch.bfloat16, "float16": torch.float16, "float32": torch.float32}

#: The paper's LoRA targets: every attention and MLP projection of a Llama block.
LORA_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")

# Llama-3 special tokens, so that ``tiny`` renders chats exactly like the paper's Swallow model.
BEGIN_OF_TEXT = "<|begin_of_text|>"
END_OF_TEXT = "<|end_of_text|>"
START_HEADER = "<|start_header_id|>"
END_HEADER = "<|end_header_id|>"
END_OF_TURN = "<|eot_id|>"
PAD = "<|finetune_right_pad_id|>"
SPECIAL_TOKENS = (BEGIN_OF_TEXT, END_OF_TEXT, START_HEADER, END_HEADER, END_OF_TURN, PAD)

#: The Llama-3 chat format with ``{% generation %}`` around each assistant reply and its
#: ``<|eot_id|>``, which is what ``apply_chat_template(return_assistant_tokens_mask=True)`` needs
#: to mark the tokens a response model is trained on.
LLAMA3_CHAT_TEMPLATE = (
    "{{- bos_token }}"
    "{%- for message in messages %}"
    "{{- '<|start_header_id|>' + message['role'] + '<|end_header_id|>\\n\\n' }}"
    "{%- if message['role'] == 'assistant' %}"
    "{%- generation %}{{- message['content'] | trim + '<|eot_id|>' }}{%- endgeneration %}"
    "{%- else %}{{- message['content'] | trim + '<|eot_id|>' }}{%- endif %}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|start_header_id|>assistant<|end_header_id|>\\n\\n' }}{%- endif %}"
)

#: Llama 3's pre-tokenization pattern (words, 1-3 digit numbers, punctuation, newline runs).
LLAMA3_SPLIT_PATTERN = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*"
    r"|\s*[\r\n]+|\s+(?!\S)|\s+"
)

#: Bump when the tiny model's format changes, so that old cached builds are not reused.
TINY_FORMAT_VERSION = 2


class BackboneError(ValueError):
    """A backbone setting that cannot work (unknown model, quantization, dtype): one clear line."""


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


@dataclass(frozen=True)
class TinyConfig:
    """Size of the embedded ``tiny`` model. The defaults train one epoch over a few hundred
    1k-token dialogue windows in a few minutes on 2 CPU cores; every field is part of the cache
    key, so changing one builds (once) a new model."""

    vocab_size: int = 8000
    hidden_size: int = 256
    num_layers: int = 4
    num_heads: int = 4
    num_kv_heads: int = 2
    intermediate_size: int = 768
    max_position_embeddings: int = 4096
    #: How many training-split dialogues the BPE tokenizer learns from.
    tokenizer_dialogues: int = 500
    #: "nfkc" folds full-width ASCII and "…" ("？" -> "?"), so decoding gives back the NFKC form of
    #: such text; "none" keeps every text byte for byte, like the real Llama-3 tokenizer.
    normalizer: str = "none"
    #: Seed of the random weights and of the tokenizer's dialogue sample.
    seed: int = 0

    def __post_init__(self):
        if self.normalizer not in ("nfkc", "none"):
            raise BackboneError(f"tiny normalizer must be 'nfkc' or 'none', got {self.normalizer!r}")
        if self.hidden_size % self.num_heads or self.num_heads % self.num_kv_heads:
            raise BackboneError(
                f"tiny hidden_size ({self.hidden_size}) must be a multiple of num_heads ({self.num_heads}),"
                f" and num_heads a multiple of num_kv_heads ({self.num_kv_heads})"
            )


@dataclass
class Backbone:
    """A loaded model (a ``PeftModel`` when LoRA is on), its tokenizer, and the name it was asked
    for (``tiny``, a hub name or a path)."""

    model: PreTrainedModel
    tokenizer: PreTrainedTokenizerBase
    name: str


# ---------------------------------------------------------------------------------------------
# Loading


def load_backbone(
    model: str = TINY,
    quantization: str = "nf4",
    compute_dtype: str = "bfloat16",
    lora: LoraSettings | None = LoraSettings(),
    gradient_checkpointing: bool = False,
    tiny: TinyConfig | None = None,
    cache_dir: str | os.PathLike | None = None,
    device: str | None = None,
) -> Backbone:
    """Load ``model`` ready for training: base weights frozen (4-bit NF4 with ``quantization="nf4"``),
    LoRA adapters trainable (none with ``lora=None``, e.g. for zero-shot), in train mode.

    ``model`` is ``"tiny"`` (built on first use under ``cache_dir``, see :func:`build_tiny`), a
    local folder saved with ``save_pretrained``, or a hub name already in the local cache when the
    hub is offline. ``device`` defaults to this process's GPU (``LOCAL_RANK``) when CUDA is
    available, else the CPU.
    """
    dtype = _compute_dtype(compute_dtype)
    quantization_config = _quantization_config(quantization, dtype)
    source = resolve_model(model, tiny, cache_dir)
    device = device or default_device()

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
    return Backbone(base, load_tokenizer(model, tiny, cache_dir), model)


def load_tokenizer(
    model: str = TINY, tiny: TinyConfig | None = None, cache_dir: str | os.PathLike | None = None
) -> PreTrainedTokenizerBase:
    """The tokenizer of ``model`` alone (for datamodules), with a pad token and a chat template
    that marks assistant tokens (see :data:`LLAMA3_CHAT_TEMPLATE`)."""
    from transformers import AutoTokenizer

    source = resolve_model(model, tiny, cache_dir)
    try:
        tokenizer = AutoTokenizer.from_pretrained(source, local_files_only=hub_offline())
    except OSError as e:
        raise BackboneError(f"tokenizer of {model!r} could not be loaded: {_first_line(e)}") from None
    if tokenizer.pad_token is None:
        tokenizer.pad_token = PAD if PAD in tokenizer.get_vocab() else tokenizer.eos_token
    _ensure_assistant_mask_template(tokenizer, model)
    return tokenizer


def resolve_model(model: str, tiny: TinyConfig | None = None, cache_dir: str | os.PathLike | None = None) -> str:
    """What ``from_pretrained`` gets for ``model``: the tiny model's folder (built if needed), a
    local folder, or a hub name; a name that cannot load offline fails here in one line."""
    if model == TINY:
        return str(build_tiny(tiny, cache_dir=cache_dir))
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


def _compute_dtype(name: str) -> torch.dtype:
    if name not in COMPUTE_DTYPES:
        raise BackboneError(f"compute_dtype must be one of {', '.join(COMPUTE_DTYPES)}, got {name!r}")
    return COMPUTE_DTYPES[name]


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


def _ensure_assistant_mask_template(tokenizer: PreTrainedTokenizerBase, model: str) -> None:
    """Training masks come from ``{% generation %}`` in the chat template; the Llama-3 templates
    shipped with hub models (Swallow's included) lack it, so a Llama-3 tokenizer gets
    :data:`LLAMA3_CHAT_TEMPLATE` (the same rendering, with the markers)."""
    template = tokenizer.chat_template
    if isinstance(template, str) and "endgeneration" in template:
        return
    vocab = tokenizer.get_vocab()
    if all(token in vocab for token in (START_HEADER, END_HEADER, END_OF_TURN)):
        log.info("Using the Llama-3 chat template with assistant-mask markers for %s", model)
        tokenizer.chat_template = LLAMA3_CHAT_TEMPLATE
    else:
        log.warning("The chat template of %s cannot mark assistant tokens (no {%% generation %%})", model)


def _in_hub_cache(name: str) -> bool:
    from huggingface_hub import try_to_load_from_cache

    try:
        return isinstance(try_to_load_from_cache(name, "config.json"), str)
    except ValueError:  # not a valid repo id
        return False


def _first_line(error: BaseException) -> str:
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__


# ---------------------------------------------------------------------------------------------
# The embedded tiny model


def default_cache_dir() -> Path:
    """Where built tiny models live: ``KOKOROZOO_CACHE``, else ``~/.cache/kokorozoo``."""
    return Path(os.environ.get("KOKOROZOO_CACHE") or Path.home() / ".cache" / "kokorozoo").expanduser()


def build_tiny(
    cfg: TinyConfig | None = None, texts: Iterable[str] | None = None, cache_dir: str | os.PathLike | None = None
) -> Path:
    """The folder of the tiny model for ``cfg``, built on first use and reused after.

    The tokenizer learns from ``texts`` when given, else from ``cfg.tokenizer_dialogues`` dialogues
    of KokoroChat's training split (never test dialogues). The folder name is a hash of ``cfg``
    (and of ``texts``); it is written to a temporary folder and renamed into place, so a killed
    build never leaves a half model behind.
    """
    cfg = cfg or TinyConfig()
    texts = None if texts is None else list(texts)
    cache = Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()
    target = cache / f"tiny-{_tiny_key(cfg, texts)}"
    if target.is_dir():
        return target

    started = time.perf_counter()
    cache.mkdir(parents=True, exist_ok=True)
    workdir = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=cache))
    try:
        if texts is None:
            texts = _training_split_texts(cfg)
        tokenizer = train_tokenizer(texts, cfg)
        _save_tiny_model(cfg, tokenizer, workdir)
        try:
            workdir.rename(target)
        except OSError:
            if not target.is_dir():  # another process finished first: its copy is as good
                raise
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    log.info("Built the tiny model in %s (%.1f s)", target, time.perf_counter() - started)
    return target


def train_tokenizer(texts: Iterable[str], cfg: TinyConfig | None = None) -> PreTrainedTokenizerBase:
    """A Llama-3-style byte-level BPE tokenizer learnt from ``texts``, with the Llama-3 special
    tokens and :data:`LLAMA3_CHAT_TEMPLATE`."""
    from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    cfg = cfg or TinyConfig()
    texts = list(texts)
    log.info("Training the tiny tokenizer (vocab %d) on %d texts", cfg.vocab_size, len(texts))
    bpe = Tokenizer(models.BPE())
    if cfg.normalizer == "nfkc":
        bpe.normalizer = normalizers.NFKC()
    # Llama 3's split: a run of newlines is one piece whether text follows or not, so a generation
    # prompt ending in the header's blank line tokenizes as it does inside a training dialogue.
    bpe.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(LLAMA3_SPLIT_PATTERN), behavior="isolated"),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=cfg.vocab_size,
        special_tokens=list(SPECIAL_TOKENS),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    # The role names and the blank line of the chat headers, often enough to become single tokens
    # as they are in Llama 3 (KokoroChat itself has almost no ASCII words).
    header_words = ["system\n\nuser\n\nassistant\n\n"] * 1000
    bpe.train_from_iterator(itertools.chain(texts, header_words), trainer)
    bpe.post_processor = processors.TemplateProcessing(
        single=f"{BEGIN_OF_TEXT} $A",
        pair=f"{BEGIN_OF_TEXT} $A {BEGIN_OF_TEXT}:1 $B:1",
        special_tokens=[(BEGIN_OF_TEXT, bpe.token_to_id(BEGIN_OF_TEXT))],
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=bpe,
        bos_token=BEGIN_OF_TEXT,
        eos_token=END_OF_TURN,
        pad_token=PAD,
        chat_template=LLAMA3_CHAT_TEMPLATE,
        model_max_length=cfg.max_position_embeddings,
        clean_up_tokenization_spaces=False,
    )


def _save_tiny_model(cfg: TinyConfig, tokenizer: PreTrainedTokenizerBase, folder: Path) -> None:
    """A randomly initialised (seeded) Llama for ``tokenizer``, saved with it in the HF format."""
    from transformers import GenerationConfig, LlamaConfig, LlamaForCausalLM

    ids = {token: tokenizer.convert_tokens_to_ids(token) for token in SPECIAL_TOKENS}
    stop_ids = [ids[END_OF_TURN], ids[END_OF_TEXT]]
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=cfg.hidden_size,
        intermediate_size=cfg.intermediate_size,
        num_hidden_layers=cfg.num_layers,
        num_attention_heads=cfg.num_heads,
        num_key_value_heads=cfg.num_kv_heads,
        max_position_embeddings=cfg.max_position_embeddings,
        rms_norm_eps=1e-5,
        rope_parameters={"rope_type": "default", "rope_theta": 500000.0},
        bos_token_id=ids[BEGIN_OF_TEXT],
        eos_token_id=stop_ids,
        pad_token_id=ids[PAD],
        tie_word_embeddings=False,
        dtype="bfloat16",
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(cfg.seed)
        model = LlamaForCausalLM(config)
    model.generation_config = GenerationConfig(
        bos_token_id=ids[BEGIN_OF_TEXT], eos_token_id=stop_ids, pad_token_id=ids[PAD], do_sample=False
    )
    model.to(torch.bfloat16).save_pretrained(folder)
    tokenizer.save_pretrained(folder)


def _training_split_texts(cfg: TinyConfig) -> list[str]:
    from kokorozoo.data.kokorochat import load_kokorochat
    from kokorozoo.data.splits import tokenizer_texts

    log.info("Reading %d KokoroChat training dialogues for the tiny tokenizer", cfg.tokenizer_dialogues)
    return tokenizer_texts(load_kokorochat(), n_dialogues=cfg.tokenizer_dialogues, seed=cfg.seed)


def _tiny_key(cfg: TinyConfig, texts: list[str] | None) -> str:
    """A short hash of everything that shapes the tiny model: its settings, the format version and
    the tokenizer's texts (when given; the default ones follow from the settings)."""
    digest = hashlib.sha256()
    digest.update(json.dumps([TINY_FORMAT_VERSION, dataclasses.asdict(cfg)], sort_keys=True).encode())
    if texts is not None:
        digest.update(b"texts")
        for text in texts:
            digest.update(text.encode() + b"\0")
    return digest.hexdigest()[:12]

