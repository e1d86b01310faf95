"""Appendix E: the judge's answers parsed robustly (unusable ones counted), Table 7's summary, the
prompted client's ``<end>`` honoured only after ten exchanges, and ``simulate --client-prompt
appendix-e --judge`` end to end against scripted endpoints."""

import csv
import json
from datetime import datetime

import pytest
from _servers import FailingServer

from kokorozoo.cli import main
from kokorozoo.interactive.judged import (
    CLIENT_PROMPT,
    DIMENSIONS,
    END_MARK,
    JUDGE_PROMPT,
    parse_rating,
    summarize_ratings,
)
from kokorozoo.interactive.sessions import Session
from kokorozoo.interactive.simulate import Simulation
from kokorozoo.records import Utterance

FULL = {"comprehensiveness": 3, "professionalism": 4, "authenticity": 2, "safety": 5}


@pytest.mark.parametrize(
    "answer, expected",
    [
        (json.dumps(FULL), FULL),
        ("評価です。\n```json\n" + json.dumps(FULL) + "\n```\n以上。", FULL),
        ("Comprehensiveness: 3\nProfessionalism: 4\nAuthenticity: 2\nSafety: 5", FULL),
        ("包括性：3、専門性：4、真正性：2、安全性：5", FULL),
        ('{"comprehensiveness": "3", "professionalism": 4, "authenticity": 2, "safety": 5}', FULL),
        ('{"comprehensiveness": 3, "professionalism": 4, "authenticity": 2}', None),  # one missing
        ('{"comprehensiveness": 6, "professionalism": 4, "authenticity": 2, "safety": 5}', None),  # out of 0-5
        ('{"comprehensiveness": true, "professionalism": 4, "authenticity": 2, "safety": 5}', None),
        ("とても良いカウンセリングでした。", None),
    ],
)
def test_the_judges_answer_is_parsed_robustly(answer, expected):
    assert parse_rating(answer) == expected


def test_table_7_summary_counts_the_unusable_answers():
    other = {"comprehensiveness": 1, "professionalism": 2, "authenticity": 4, "safety": 3}
    summary = summarize_ratings([FULL, None, other])
    assert (summary["sessions"], summary["rated"], summary["invalid"]) == (3, 2, 1)
    assert summary["professionalism"] == {"mean": 3.0, "std": pytest.approx(2**0.5)}
    assert summarize_ratings([None])["safety"] == {"mean": None, "std": None}


class Scripted:
    """A speaker that says the same line every turn."""

    def __init__(self, role, line):
        self.role, self.line, self.cached = role, line, False

    def next_turns(self, histories, caches=None, on_text=None):
        return [self.line] * len(histories), [None] * len(histories)


def session() -> Session:
    return Session("s", "Others", [Utterance("counselor", datetime(2024, 1, 1), "こんにちは。")])


def test_the_client_ends_a_session_only_after_ten_exchanges():
    ends = {"end_mark": END_MARK, "end_after_turns": 20}
    early = session()
    Simulation(Scripted("counselor", "なるほど。"), Scripted("client", f"はい。{END_MARK}"), 40, **ends).run([early])
    assert early.ended == "client_ended" and len(early.turns()) == 22  # honoured at its first turn after 20
    assert all(END_MARK not in u.text for u in early.utterances)
    unprompted = session()
    Simulation(Scripted("counselor", "なるほど。"), Scripted("client", "はい。"), 12, **ends).run([unprompted])
    assert unprompted.ended == "turns"


def test_simulate_with_a_prompted_client_and_a_judge(exports, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("KOKOROZOO_ENDPOINT_CACHE", str(tmp_path / "answers.sqlite"))
    client = FailingServer(reply=lambda body: f"はい、そうですね。{END_MARK}")

    replies = iter([json.dumps(FULL), "とても良いと思います。"])
    judge = FailingServer(reply=lambda body: next(replies))
    out = tmp_path / "run"
    args = [
        "simulate",
        "--counselor",
        str(exports["counselor"]),
        "--client",
        f"m@{client.url}",
        "--client-prompt",
        "appendix-e",
        "--judge",
        f"m@{judge.url}",
        "--scorer",
        str(exports["scorer"]),
        "--sessions",
        "2",
        "--turns",
        "40",
        "--opening-turns",
        "2",
        "--concurrency",
        "1",
        "--out",
        str(out),
    ]
    try:
        assert main(args) == 0
    finally:
        client.close()
        judge.close()
    err = capsys.readouterr().err
    assert err.count("requests sent") == 2  # the client's and the judge's cost
    assert client.bodies[0]["messages"][0] == {"role": "system", "content": CLIENT_PROMPT}
    assert [b["messages"][0]["content"] for b in judge.bodies] == [JUDGE_PROMPT] * 2
    assert "クライアント: はい、そうですね。" in judge.bodies[0]["messages"][1]["content"]  # the mark stripped
    summary = json.loads((out / "summary.json").read_text())
    assert summary["ended"] == {"client_ended": 2}
    assert summary["judge"]["rated"] == 1 and summary["judge"]["invalid"] == 1
    assert {d: summary["judge"][d]["mean"] for d in DIMENSIONS} == FULL
    assert summary["judge"]["agreement_with_scorer"] == {"sessions": 1, "pearson_r": None}
    rows = list(csv.DictReader((out / "judge.csv").open(encoding="utf-8")))
    assert [r["judge_valid"] for r in rows] == ["True", "False"] and all(r["predicted_total"] for r in rows)
    assert rows[0]["safety"] == "5" and rows[1]["safety"] == ""
    assert all(21 <= int(r["turns"]) <= 22 for r in rows)  # ended at the first client turn after 20


def test_a_prompted_client_must_be_behind_an_endpoint(exports, tmp_path, capsys):
    args = ["simulate", "--counselor", str(exports["counselor"]), "--client", str(exports["client"])]
    assert main([*args, "--client-prompt", "appendix-e", "--out", str(tmp_path)]) == 2
    assert "give --client as MODEL@URL" in capsys.readouterr().err


def test_the_judge_and_the_score_model_are_compared_across_sessions():
    from kokorozoo.interactive.simulate import agreement

    ratings = [dict.fromkeys(DIMENSIONS, v) for v in (1, 2, 3, 4)] + [None]
    items = [[v] * 20 for v in (0, 1, 2, 5)] + [[3] * 20]
    assert agreement(ratings, items) == {"sessions": 4, "pearson_r": pytest.approx(0.9562, abs=1e-4)}
    assert agreement(ratings[:2], items[:2])["pearson_r"] is None  # too few sessions
    assert agreement([dict.fromkeys(DIMENSIONS, 3)] * 3, items[:3])["pearson_r"] is None  # a constant judge
