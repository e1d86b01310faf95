"""``kokorozoo simulate`` end to end with tiny exported models: valid session files opening with
real test dialogues, scores in 0-5, one seed gives identical runs, and advancing all sessions in
one batch gives what one session at a time gives."""

import csv
import json

import pytest

from kokorozoo.cli import main
from kokorozoo.data import ITEM_NAMES, dialogue_turns, load_kokorochat
from kokorozoo.interactive.sessions import CLOSING_PHRASES

SESSIONS, TURNS, OPENING = 3, 8, 3


@pytest.fixture(scope="module")
def simulate(exports, tmp_path_factory):
    def run(name: str, *extra: str):
        out = tmp_path_factory.mktemp(name)
        args = [
            "simulate",
            "--counselor",
            exports["counselor"],
            "--client",
            exports["client"],
            "--scorer",
            exports["scorer"],
            "--sessions",
            SESSIONS,
            "--turns",
            TURNS,
            "--opening-turns",
            OPENING,
            "--seed",
            1,
            "--out",
            out,
            *extra,
        ]
        assert main([str(a) for a in args]) == 0
        return out

    return run


@pytest.fixture(scope="module")
def batched(simulate):
    return simulate("batched")


def files(out):
    return {p.relative_to(out).as_posix(): p.read_bytes() for p in sorted(out.rglob("*")) if p.is_file()}


def test_sessions_are_valid_and_open_with_real_test_dialogues(batched, kokorochat):
    sessions = load_kokorochat(batched)  # the project's loader validates every file
    assert len(sessions) == SESSIONS
    real = kokorochat.by_id()
    for session in sessions:
        record = json.loads((batched / "kokorochat_dialogues" / f"{session.id}.json").read_text())
        about = record["kokorozoo"]
        source = real[about["opened_from"]]
        assert source.score >= 99 and session.topic == source.topic  # a test dialogue of the response split
        turns, opening = dialogue_turns(session), dialogue_turns(source)[:OPENING]
        assert turns[:OPENING] == opening
        assert all(a.role != b.role for a, b in zip(turns, turns[1:]))  # the models alternate
        assert OPENING < len(turns) <= TURNS
        ended = about["ended"]
        assert ended in ("turns", "closed", "empty_turn")
        if ended == "turns":
            assert len(turns) == TURNS
        if ended == "closed":
            assert turns[-1].role == "counselor" and any(p in turns[-1].text for p in CLOSING_PHRASES)
        assert about["review"].startswith("placeholder") and session.score == 0


def test_scores_and_summary(batched, capsys):
    with open(batched / "scores.csv") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == SESSIONS
    for row in rows:
        items = [int(row[name]) for name in ITEM_NAMES]
        assert all(0 <= v <= 5 for v in items) and int(row["total"]) == sum(items)
        assert int(row["real_total"]) >= 99
    summary = json.loads((batched / "summary.json").read_text())
    assert summary["sessions"] == SESSIONS and sum(summary["ended"].values()) == SESSIONS
    scores = summary["scores"]
    assert scores["rated"] == SESSIONS and 0 <= scores["predicted"]["total_mean"] <= 100
    assert scores["real"]["total_mean"] == pytest.approx(sum(int(r["real_total"]) for r in rows) / SESSIONS)
    assert main(["data", "stats", "--root", str(batched), "--json"]) == 0  # the release layout: --root OUT
    assert json.loads(capsys.readouterr().out)["dialogues"] == SESSIONS


def test_one_seed_gives_identical_runs(batched, simulate):
    assert files(simulate("again")) == files(batched)


def test_batched_equals_one_session_at_a_time(batched, simulate):
    assert files(simulate("one_at_a_time", "--batch-size", "1")) == files(batched)


def test_another_seed_opens_other_sessions(batched, simulate):
    other = simulate("seed2", "--seed", "2")
    assert sorted(files(other)) != sorted(files(batched))


@pytest.mark.parametrize(
    "swap, message",
    [
        (("--turns", "3"), "--turns (3) must be more than --opening-turns (3)"),
        (("--client", "counselor"), "--client must speak as the client"),
        (("--scorer", "client"), "the scorer must be a ScoreHeadsTask or ScoreTask"),
    ],
)
def test_settings_that_cannot_work_are_one_line(exports, tmp_path, capsys, swap, message):
    args = {
        "--counselor": exports["counselor"],
        "--client": exports["client"],
        "--scorer": exports["scorer"],
        "--turns": 8,
        "--opening-turns": 3,
        "--out": tmp_path,
    }
    option, value = swap
    args[option] = exports.get(value, value)
    assert main(["simulate", *[str(x) for pair in args.items() for x in pair]]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and message in err


def test_a_continued_cache_gives_what_a_full_prefill_gives(small_tiny, kokorochat):
    """Each turn reuses the history computed in the turn before (the longest common prefix) and
    decodes the same greedy tokens as from nothing; the cache streams every token it keeps."""
    from kokorozoo.backbone import load_backbone
    from kokorozoo.chat_format import stop_token_ids
    from kokorozoo.data.encoding import encode_dialogue, generation_prompt
    from kokorozoo.generation import generate_continuing, generate_shared_prefix

    backbone = load_backbone("tiny", quantization="none", compute_dtype="float32", lora=None, tiny=small_tiny)
    model, tokenizer = backbone.model.eval(), backbone.tokenizer
    encoded = encode_dialogue(tokenizer, dialogue_turns(kokorochat.by_id()["10"]))
    settings = dict(
        max_new_tokens=12, min_new_tokens=2, stop_ids=stop_token_ids(tokenizer), pad_id=tokenizer.pad_token_id
    )
    first = [generation_prompt(encoded, t, 1024)[0] for t in encoded.targets[2:6]]
    later = [generation_prompt(encoded, t, 1024)[0] for t in encoded.targets[3:7]]
    streamed = [[] for _ in first]
    new, caches = generate_continuing(
        model, first, [None] * len(first), on_token=lambda i, t: streamed[i].append(t), **settings
    )
    assert streamed == new
    assert all(c.ids == p + n[:-1] and c.layers[0][0].shape[2] == len(c.ids) for c, p, n in zip(caches, first, new))
    for prompts, cached in ((first, [None] * 4), (later, caches)):
        expected = [generate_shared_prefix(model, [p], **settings)[0] for p in prompts]
        assert generate_continuing(model, prompts, cached, **settings)[0] == expected
