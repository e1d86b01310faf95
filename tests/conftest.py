"""Shared fixtures: the real KokoroChat data, loaded once per test session."""

import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from kokorozoo.data import find_root, load_kokorochat  # noqa: E402


@pytest.fixture(scope="session")
def kokorochat_root() -> Path:
    """The real dialogue folder (../shared/kokorochat/kokorochat_dialogues in CI)."""
    return find_root()


@pytest.fixture(scope="session")
def kokorochat(kokorochat_root):
    return load_kokorochat(kokorochat_root)


#: A tiny backbone small enough for tests: built once per session in a temporary cache.
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
def tiny_cache(tmp_path_factory):
    """KOKOROZOO_CACHE for this session (inherited by CLI subprocesses)."""
    path = tmp_path_factory.mktemp("kokorozoo-cache")
    os.environ["KOKOROZOO_CACHE"] = str(path)
    return path


@pytest.fixture(scope="session")
def small_tiny(tiny_cache):
    from kokorozoo.backbone import TinyConfig, build_tiny

    cfg = TinyConfig(**SMALL_TINY)
    build_tiny(cfg, cache_dir=tiny_cache)
    return cfg


@pytest.fixture(scope="session")
def tiny_tokenizer(small_tiny, tiny_cache):
    from kokorozoo.backbone import load_tokenizer

    return load_tokenizer("tiny", small_tiny, cache_dir=tiny_cache)
