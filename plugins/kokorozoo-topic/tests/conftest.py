"""Fixtures of the plugin's own tests: the real KokoroChat data and a small tiny backbone."""

import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from kokorozoo.data import load_kokorochat  # noqa: E402

PLUGIN = Path(__file__).resolve().parents[1]

#: A tiny backbone small enough for tests (built once per session in a temporary cache).
SMALL_TINY = {
    "vocab_size": 2000,
    "hidden_size": 64,
    "num_layers": 2,
    "num_heads": 4,
    "num_kv_heads": 2,
    "intermediate_size": 128,
    "max_position_embeddings": 4096,
    "tokenizer_dialogues": 100,
}


@pytest.fixture(scope="session")
def kokorochat():
    return load_kokorochat()


@pytest.fixture(scope="session")
def small_tiny(tmp_path_factory):
    from kokorozoo.backbone import TinyConfig, build_tiny

    cache = os.environ.setdefault("KOKOROZOO_CACHE", str(tmp_path_factory.mktemp("kokorozoo-cache")))
    cfg = TinyConfig(**SMALL_TINY)
    build_tiny(cfg, cache_dir=cache)
    return cfg


@pytest.fixture(scope="session")
def tiny_tokenizer(small_tiny):
    from kokorozoo.backbone import load_tokenizer

    return load_tokenizer("tiny", small_tiny, cache_dir=os.environ["KOKOROZOO_CACHE"])
