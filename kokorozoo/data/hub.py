"""KokoroChat from the Hugging Face hub, each row validated as a file is."""

from __future__ import annotations

import os

from kokorozoo.data.loader import KokoroChat, OnError, dialogues_from_rows
from kokorozoo.data.validation import DataError

HUB_DATASET = "UEC-InabaLab/KokoroChat"


def load_kokorochat_hub(
    name: str = HUB_DATASET, split: str = "train", on_error: OnError = "raise", revision: str | None = None
) -> KokoroChat:
    """Load KokoroChat from the Hugging Face hub through ``datasets`` and validate every row.

    Offline (``HF_HUB_OFFLINE=1``) or without a reachable hub this ends at once in a
    :class:`DataError` that says so, never a hang.
    """
    from huggingface_hub import constants

    if constants.HF_HUB_OFFLINE:
        raise DataError(name, "<hub>", "the hub is switched off (HF_HUB_OFFLINE=1); load a local copy with --root")
    os.environ.setdefault("HF_HUB_ETAG_TIMEOUT", "10")
    os.environ.setdefault("HF_HUB_DOWNLOAD_TIMEOUT", "30")
    import datasets

    try:
        rows = datasets.load_dataset(name, split=split, revision=revision)
    except Exception as e:  # noqa: BLE001 - every failure here means "not reachable or not there"
        raise DataError(name, "<hub>", f"could not be loaded from the hub ({type(e).__name__}: {e})") from None
    return dialogues_from_rows(rows, on_error, source=name)
