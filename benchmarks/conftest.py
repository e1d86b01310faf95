"""Shared benchmark fixtures: the real data and the default tiny backbone (built once, cached)."""

import os

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")


@pytest.fixture(scope="session")
def kokorochat():
    from kokorozoo.data import load_kokorochat

    return load_kokorochat()
