"""KokoroChat from the hub: its rows are validated as files are (tests/data/test_loader.py), and
without the hub it says so at once."""

import pytest

from kokorozoo.data import DataError, load_kokorochat_hub


def test_hub_offline_is_a_clear_error(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_OFFLINE", True)
    with pytest.raises(DataError, match="HF_HUB_OFFLINE"):
        load_kokorochat_hub()
