"""The embedded ``tiny`` backbone: a small random Llama with a byte-level BPE tokenizer trained on
KokoroChat's training split, saved in the Hugging Face format in a cache folder and loaded through
the same ``from_pretrained`` path as a real model (see :mod:`kokorozoo.backbone.loading`).

Its settings (:class:`TinyConfig`), the tokenizer training, the model build and the cache live
here; the chat template and special tokens come from :mod:`kokorozoo.chat_format`.
"""

from __future__ import annotations

import dataclasses
import hashlib
import itertools
import json
import logging
import os
import sys
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from kokorozoo.backbone.cache import build_once
from kokorozoo.backbone.errors import BackboneError
from kokorozoo.chat_format import (
    BEGIN_OF_TEXT,
    END_OF_TURN,
    LLAMA3_CHAT_TEMPLATE,
    PAD,
    SPECIAL_TOKENS,
    stop_token_ids,
)

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

log = logging.getLogger(__name__)

#: The name that selects the embedded model wherever a backbone name or path is expected.
TINY = "tiny"

#: Llama 3's pre-tokenization pattern (words, 1-3 digit numbers, punctuation, newline runs).
LLAMA3_SPLIT_PATTERN = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*"
    r"|\s*[\r\n]+|\s+(?!\S)|\s+"
)

#: Bump when the tiny model's format changes, so that old cached builds are not reused.
TINY_FORMAT_VERSION = 2


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

    def write(folder: Path) -> None:
        tokenizer = train_tokenizer(_training_split_texts(cfg) if texts is None else texts, cfg)
        _save_tiny_model(cfg, tokenizer, folder)

    return build_once(cache / f"tiny-{_tiny_key(cfg, texts)}", write)


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
        show_progress=sys.stderr.isatty(),  # a bar with the rate on a terminal, nothing in logs
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
    stop_ids = stop_token_ids(tokenizer)  # the STOP_TOKENS it has: no <|eom_id|> in the tiny vocabulary
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
    from transformers.utils import logging as hf_logging

    shown = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()  # a bar for one small shard is noise on stderr
    try:
        model.to(torch.bfloat16).save_pretrained(folder)
    finally:
        if shown:
            hf_logging.enable_progress_bar()
    tokenizer.save_pretrained(folder)


def _training_split_texts(cfg: TinyConfig) -> list[str]:
    from kokorozoo.data.loader import load_kokorochat
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
