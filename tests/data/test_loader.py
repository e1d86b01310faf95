"""The loader against the real KokoroChat release: the paper's figures, exactly."""

import pytest

from kokorozoo.data import (
    FEEDBACK_ITEMS,
    ITEM_NAMES,
    DataError,
    dataset_stats,
    dialogues_from_rows,
    find_root,
    in_subset,
    read_dialogue_file,
)


def test_table3_figures(kokorochat):
    stats = dataset_stats(kokorochat)
    assert stats["dialogues"] == 6589
    assert stats["utterances"] == {"total": 600939, "counselor": 306495, "client": 294444}
    assert stats["speakers"] == {"total": 480, "counselor": 424, "client": 463}
    assert stats["avg_utterances_per_dialogue"]["total"] == 91.20
    assert stats["avg_characters_per_utterance"] == {"total": 28.39, "counselor": 35.84, "client": 20.63}
    assert stats["screening_flags"] == {
        "harmful_due_to_ignorance": 8,
        "other_potentially_unethical": 4,
        "unwilling_to_continue": 209,
    }
    assert len(stats["topics"]) == 11
    assert sum(stats["score"]["histogram"].values()) == 6589


@pytest.mark.parametrize(
    "subset, dialogues, utterances",
    [("low", 3870, 334022), ("high", 2601, 254515), ("full", 6471, None), ("test", 118, None)],
)
def test_subset_figures(kokorochat, subset, dialogues, utterances):
    chosen = [d for d in kokorochat if in_subset(d.score, subset)]
    assert len(chosen) == dialogues
    if utterances is not None:
        assert sum(len(d.utterances) for d in chosen) == utterances


def test_records_are_typed_and_sorted(kokorochat, kokorochat_root):
    ids = [d.id for d in kokorochat]
    assert ids == sorted(ids, key=int)
    first = read_dialogue_file(kokorochat_root / "10.json")
    assert first.id == "10"
    assert first.utterances[0].role == "counselor"
    assert first.utterances[0].text == "こんにちは。相談員です。"
    assert first.utterances[0].time.isoformat() == "2020-03-08T14:59:49"
    assert first.topic.main_en == "Workplace Issues"
    fb = first.feedback
    assert (fb.score, fb.client_id, fb.counselor_id, fb.evaluation_id) == (72, 3, 7, 10)
    assert fb.items[:3] == (3, 3, 2) and fb.items[ITEM_NAMES.index("clarified_issues_cleraly")] == 5
    assert len(fb.items) == len(FEEDBACK_ITEMS) == 20
    assert not (fb.harmful_due_to_ignorance or fb.other_potentially_unethical or fb.unwilling_to_continue)


def test_flags_and_halved_scores(kokorochat):
    unwilling = [d for d in kokorochat if d.feedback.unwilling_to_continue]
    harmful = [d for d in kokorochat if d.feedback.harmful_due_to_ignorance or d.feedback.other_potentially_unethical]
    assert len(unwilling) == 209
    assert all(d.score == sum(d.feedback.items) // 2 for d in unwilling if d not in harmful)
    assert all(d.score == 0 for d in harmful)


def test_rows_load_like_files(kokorochat_root):
    """The hub path validates rows with the same code as files."""
    import json

    rows = [json.loads((kokorochat_root / f"{i}.json").read_text(encoding="utf-8")) for i in (10, 11, 12)]
    data = dialogues_from_rows(rows)
    assert [d.id for d in data] == ["10", "11", "12"]
    assert data.dialogues[0] == read_dialogue_file(kokorochat_root / "10.json")


def test_root_search(monkeypatch, tmp_path, kokorochat_root):
    monkeypatch.setenv("KOKOROCHAT_ROOT", str(kokorochat_root.parent))  # the release folder works too
    assert find_root() == kokorochat_root
    with pytest.raises(DataError, match="no such directory"):
        find_root(tmp_path / "nowhere")


def test_not_found_lists_where_it_looked(monkeypatch, tmp_path):
    monkeypatch.delenv("KOKOROCHAT_ROOT", raising=False)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr("kokorozoo.data.loader.Path.resolve", lambda self: tmp_path / "a" / "b" / "c")
    with pytest.raises(FileNotFoundError) as e:
        find_root()
    assert "KOKOROCHAT_ROOT" in str(e.value)
    assert str(tmp_path / "kokorochat_dialogues") in str(e.value)
