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
