"""`kokorozoo baseline`: its JSON and table on real dialogues, and its one-line refusals."""

import json

import pytest

from kokorozoo.cli import main

pytestmark = pytest.mark.mutation  # seconds: run per mutant


@pytest.fixture
def small_root(kokorochat_root, tmp_path):
    """A KokoroChat folder of 400 real dialogues (links, not copies)."""
    root = tmp_path / "kokorochat_dialogues"
    root.mkdir()
    for path in sorted(kokorochat_root.glob("*.json"))[:400]:
        (root / path.name).symlink_to(path)
    return root


def test_cli_json(capsys, small_root):
    assert main(["baseline", "score", "--seeds", "0", "--json", "--root", str(small_root)]) == 0
    result = json.loads(capsys.readouterr().out)
    assert {"split", "seeds", "rules", "runs", "mean", "std", "argmax", "mode_baseline", "seconds"} <= set(result)
    assert result["split"] == "random" and result["seeds"] == [0] and len(result["runs"]) == 1
    for stat in ("mean", "std"):
        assert set(result[stat]) == {"acc", "acc_soft", "mae"}
        assert set(result["mode_baseline"][stat]) == {"acc", "acc_soft", "mae"}
    assert {"seed", "acc", "acc_soft", "mae", "argmax", "mode_baseline", "sizes"} <= set(result["runs"][0])
    assert all(key == key.lower() and " " not in key for key in result)


def test_cli_table_client_disjoint(capsys, small_root):
    assert main(["baseline", "score", "--seeds", "3", "--split", "client_disjoint", "--root", str(small_root)]) == 0
    out = capsys.readouterr().out
    assert "client_disjoint" in out and "mean ± std" in out and "ACC_soft" in out and "best_window" in out


def test_cli_unknown_split_is_one_line(capsys):
    assert main(["baseline", "score", "--split", "bogus"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["kokorozoo: error: unknown split 'bogus': expected random or client_disjoint"]
