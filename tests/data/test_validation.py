"""Every kind of bad input: one clear error naming the file and the field; `skip` loses nothing; a
dialogue written back as a record reads back equal."""

import gc
import json
import shutil
import subprocess
import sys

import pytest

from kokorozoo.cli import main
from kokorozoo.data import DataError, load_kokorochat, parse_dialogue, read_dialogue_file
from kokorozoo.data.validation import dialogue_record

GOOD = ("10", "11", "12")


@pytest.fixture
def folder(tmp_path, kokorochat_root):
    """A folder holding three real, valid dialogues."""
    for i in GOOD:
        shutil.copy(kokorochat_root / f"{i}.json", tmp_path / f"{i}.json")
    return tmp_path


def raw(folder, i="10"):
    return json.loads((folder / f"{i}.json").read_text(encoding="utf-8"))


def write(folder, name, obj):
    path = folder / f"{name}.json"
    path.write_text(json.dumps(obj, ensure_ascii=False), encoding="utf-8")
    return path


def drop(d, *path):
    *head, last = path
    for key in head:
        d = d[key]
    del d[last]


def put(d, value, *path):
    *head, last = path
    for key in head:
        d = d[key]
    d[last] = value


EN = "review_by_client_en"

# (name, how to break a real record, the field the error must name)
CASES = [
    ("missing_dialogue", lambda d: drop(d, "dialogue"), "dialogue"),
    ("empty_dialogue", lambda d: put(d, [], "dialogue"), "dialogue"),
    ("dialogue_not_list", lambda d: put(d, "hello", "dialogue"), "dialogue"),
    ("unknown_role", lambda d: put(d, "therapist", "dialogue", 3, "role"), "dialogue[3].role"),
    ("missing_utterance", lambda d: drop(d, "dialogue", 2, "utterance"), "dialogue[2].utterance"),
    ("utterance_not_str", lambda d: put(d, 42, "dialogue", 2, "utterance"), "dialogue[2].utterance"),
    ("empty_utterance", lambda d: put(d, "  ", "dialogue", 1, "utterance"), "dialogue[1].utterance"),
    ("bad_time", lambda d: put(d, "yesterday", "dialogue", 0, "time"), "dialogue[0].time"),
    ("missing_topic_field", lambda d: drop(d, "topic", "main_en"), "topic.main_en"),
    ("missing_review", lambda d: drop(d, EN), EN),
    ("missing_item", lambda d: drop(d, EN, "felt_respected"), f"{EN}.felt_respected"),
    ("item_above_5", lambda d: put(d, 6, EN, "gained_new_insights"), f"{EN}.gained_new_insights"),
    ("item_negative", lambda d: put(d, -1, EN, "felt_respected"), f"{EN}.felt_respected"),
    ("item_is_string", lambda d: put(d, "3", EN, "felt_respected"), f"{EN}.felt_respected"),
    ("item_is_float", lambda d: put(d, 3.0, EN, "felt_respected"), f"{EN}.felt_respected"),
    ("item_is_bool", lambda d: put(d, True, EN, "felt_respected"), f"{EN}.felt_respected"),
    ("score_above_100", lambda d: put(d, 101, EN, "score"), f"{EN}.score"),
    ("score_contradicts_items", lambda d: put(d, 71, EN, "score"), f"{EN}.score"),
    ("flag_contradicts_score", lambda d: put(d, "チェックあり", EN, "unwilling_to_continue"), f"{EN}.score"),
    ("bad_flag_value", lambda d: put(d, "yes", EN, "harmful_due_to_ignorance"), f"{EN}.harmful_due_to_ignorance"),
    ("client_id_string", lambda d: put(d, "3", EN, "client_id"), f"{EN}.client_id"),
    ("japanese_review_differs", lambda d: put(d, 0, "review_by_client_jp", "要約"), "review_by_client_jp.要約"),
    ("record_is_list", lambda d: d.clear() or [d], "<file>"),
]


@pytest.mark.parametrize("name, breaks, field", CASES, ids=[c[0] for c in CASES])
def test_each_bad_field_is_named(folder, name, breaks, field):
    record = raw(folder)
    replaced = breaks(record)
    path = write(folder, "999", replaced if replaced is not None else record)
    with pytest.raises(DataError) as e:
        read_dialogue_file(path)
    assert e.value.field == field
    assert str(e.value).startswith(f"{path}: {field}: ")
    assert "\n" not in str(e.value)


def test_invalid_json(folder):
    (folder / "998.json").write_text('{"dialogue": [', encoding="utf-8")
    with pytest.raises(DataError, match=r"998.json: <json>: invalid JSON at line 1"):
        load_kokorochat(folder)
    assert gc.isenabled()  # the loader pauses the cyclic collector and gives it back, even on errors


def test_non_utf8_bytes(folder):
    data = (folder / "10.json").read_bytes().replace("相談員".encode(), "相談員".encode("shift_jis"), 1)
    (folder / "997.json").write_bytes(data)
    with pytest.raises(DataError, match=r"997.json: <file>: not UTF-8"):
        load_kokorochat(folder)


def test_skip_reports_each_bad_file_and_keeps_every_valid_one(folder):
    (folder / "998.json").write_text("{", encoding="utf-8")
    record = raw(folder)
    put(record, 9, EN, "felt_respected")
    write(folder, "999", record)
    data = load_kokorochat(folder, on_error="skip")
    assert [d.id for d in data] == list(GOOD)
    assert sorted(e.source.rsplit("/", 1)[-1] for e in data.skipped) == ["998.json", "999.json"]
    with pytest.raises(DataError):
        load_kokorochat(folder)


def test_cli_bad_file_is_one_line_and_exit_2(folder, capsys):
    record = raw(folder)
    put(record, 7, EN, "felt_respected")
    write(folder, "999", record)
    assert main(["data", "stats", "--root", str(folder)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "999.json" in err and "review_by_client_en.felt_respected" in err
    assert "Traceback" not in err


def test_cli_skip_reports_and_counts(folder, capsys):
    (folder / "998.json").write_text("not json", encoding="utf-8")
    assert main(["data", "stats", "--root", str(folder), "--on-error", "skip", "--json"]) == 0
    out, err = capsys.readouterr()
    stats = json.loads(out)
    assert stats["dialogues"] == 3 and stats["skipped_files"] == 1
    assert "skipped" in err and "998.json" in err


def test_console_script_exit_code(folder):
    (folder / "998.json").write_text("[", encoding="utf-8")
    proc = subprocess.run(
        [sys.executable, "-m", "kokorozoo.cli", "data", "stats", "--root", str(folder)],
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 2
    assert proc.stderr.strip().startswith("kokorozoo: error: ") and "998.json: <json>" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_duplicate_ids_are_an_error(tmp_path, folder):
    from kokorozoo.data import dialogues_from_rows

    with pytest.raises(DataError, match="more than once"):
        dialogues_from_rows([raw(folder), raw(folder)])


def test_a_dialogue_written_as_a_record_reads_back_equal(kokorochat):
    for dialogue in kokorochat.dialogues[:50]:
        record = json.loads(json.dumps(dialogue_record(dialogue), ensure_ascii=False))  # as a file holds it
        assert parse_dialogue(record, dialogue.id) == dialogue
