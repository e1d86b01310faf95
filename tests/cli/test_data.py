"""`kokorozoo data stats` on the real data reproduces the paper's Table 3."""

import json

import pytest

from kokorozoo.cli import main


def stats(capsys, *args):
    assert main(["data", "stats", "--json", *args]) == 0
    return json.loads(capsys.readouterr().out)


def test_stats_json_reproduces_the_paper(capsys, kokorochat_root):
    s = stats(capsys, "--root", str(kokorochat_root))
    assert s["dialogues"] == 6589
    assert s["utterances"] == {"total": 600939, "counselor": 306495, "client": 294444}
    assert s["speakers"] == {"total": 480, "counselor": 424, "client": 463}
    assert s["avg_utterances_per_dialogue"]["total"] == 91.2
    assert s["avg_characters_per_utterance"] == {"total": 28.39, "counselor": 35.84, "client": 20.63}
    assert s["skipped_files"] == 0 and s["subset"] == "all"
    assert set(s) >= {"merged_turns", "score", "screening_flags", "topics"}
    assert all(k == k.lower() and " " not in k for k in s)


@pytest.mark.parametrize(
    "subset, dialogues, utterances", [("low", 3870, 334022), ("high", 2601, 254515), ("test", 118, None)]
)
def test_stats_subsets(capsys, subset, dialogues, utterances):
    s = stats(capsys, "--subset", subset)
    assert s["dialogues"] == dialogues
    if utterances:
        assert s["utterances"]["total"] == utterances


def table_rows(out: str) -> dict[str, list[str]]:
    """The figures table of ``data stats``: label -> the numbers printed after it."""
    rows = {}
    for line in out.splitlines():
        label, _, numbers = line.partition("  ")
        cells = numbers.split()
        if label and cells and all(c.replace(",", "").replace(".", "").isdigit() for c in cells):
            rows[label.strip()] = cells
    return rows


def test_stats_table(capsys):
    assert main(["data", "stats", "--subset", "test"]) == 0
    out = capsys.readouterr().out
    assert "avg characters / utterance" in out and "118" in out
    rows = table_rows(out)
    s = stats(capsys, "--subset", "test")
    roles = ("total", "counselor", "client")
    assert rows["dialogues"] == ["118"] == [str(s["dialogues"])]
    assert rows["utterances"] == [f"{s['utterances'][k]:,}" for k in roles] == ["12,402", "6,222", "6,180"]
    assert rows["speakers"] == [str(s["speakers"][k]) for k in roles]
    assert rows["avg characters / utterance"] == [f"{s['avg_characters_per_utterance'][k]:.2f}" for k in roles]
    assert rows["merged turns"] == [f"{s['merged_turns'][k]:,}" for k in roles]
    assert f"mean {s['score']['mean']:.2f}, median {s['score']['median']}" in out


def test_missing_root_is_one_line(capsys, tmp_path):
    assert main(["data", "stats", "--root", str(tmp_path / "missing")]) == 2
    assert "no such directory" in capsys.readouterr().err


def test_help_explains(capsys):
    with pytest.raises(SystemExit):
        main(["data", "stats", "--help"])
    out = capsys.readouterr().out
    assert "KOKOROCHAT_ROOT" in out and "--on-error" in out
