"""The record types and constants every layer names."""

import ast
import json
from pathlib import Path

import pytest

from kokorozoo.data import FEEDBACK_ITEMS, ITEM_NAMES
from kokorozoo.records import expected_total

PACKAGE = Path(__file__).resolve().parents[1] / "kokorozoo"


def test_item_constant_matches_the_files(kokorochat_root):
    raw = json.loads((kokorochat_root / "10.json").read_text(encoding="utf-8"))
    en_keys = [k for k in raw["review_by_client_en"] if k in ITEM_NAMES]
    jp_keys = [k for k in raw["review_by_client_jp"] if k in {i.jp for i in FEEDBACK_ITEMS}]
    assert en_keys == list(ITEM_NAMES)
    assert jp_keys == [i.jp for i in FEEDBACK_ITEMS]


@pytest.mark.parametrize(
    "flags, total",
    [((False, False, False), 61), ((False, False, True), 30), ((True, False, False), 0), ((False, True, True), 0)],
)
def test_the_total_is_the_item_sum_halved_for_an_unwilling_client_and_zero_when_flagged(flags, total):
    assert expected_total([3] * 20 + [1], *flags) == total


def kokorozoo_imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    found = {node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom) and node.module}
    found |= {a.name for node in ast.walk(tree) if isinstance(node, ast.Import) for a in node.names}
    return {name for name in found if name.startswith("kokorozoo")}


def test_the_records_import_nothing_of_kokorozoo_and_the_chat_format_only_them():
    assert kokorozoo_imports(PACKAGE / "records.py") == set()
    assert kokorozoo_imports(PACKAGE / "chat_format.py") == {"kokorozoo.records"}
