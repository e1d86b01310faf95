"""The endpoint client against a small HTTP server that fails on purpose: a 429 with Retry-After is
waited for and retried, a request that keeps failing is counted (None, never dropped), the cache
makes a rerun send nothing, and a wrong URL, a refused key or an unknown model is one line."""

import pytest
from _servers import REPLY, FailingServer

from kokorozoo.endpoints.cache import AnswerCache
from kokorozoo.endpoints.client import Endpoint, EndpointClient
from kokorozoo.errors import UsageError


@pytest.fixture
def server(request):
    made = []

    def start(plan=(), key=None) -> FailingServer:
        made.append(FailingServer(plan, key))
        return made[-1]

    yield start
    for s in made:
        s.close()


def client(url: str, tmp_path, **settings) -> EndpointClient:
    return EndpointClient(Endpoint("m", url, **settings), AnswerCache(tmp_path / "answers.sqlite"))


MESSAGES = [[{"role": "user", "content": "眠れません。"}]]


def test_a_429_is_retried_after_what_retry_after_asks(server, tmp_path):
    failing = server(plan=[429])
    ask = client(failing.url, tmp_path)
    [answer] = ask.complete(MESSAGES)
    assert answer["text"] == REPLY and answer["completion_tokens"] == 5
    assert len(failing.times) == 2 and failing.times[1] - failing.times[0] >= 1.0  # Retry-After: 1
    assert ask.usage.as_dict() == {
        "requests_sent": 1,
        "answered_from_cache": 0,
        "failed": 0,
        "prompt_tokens": 12,
        "completion_tokens": 5,
    }


def test_the_cache_makes_a_rerun_send_nothing(server, tmp_path):
    failing = server()
    client(failing.url, tmp_path).complete(MESSAGES)
    again = client(failing.url, tmp_path)  # a new run with the same cache file
    [answer] = again.complete(MESSAGES)
    assert answer["text"] == REPLY and len(failing.times) == 1
    assert again.usage.sent == 0 and again.usage.cached == 1
    other = client(failing.url, tmp_path, temperature=0.5)  # another setting is another request
    other.complete(MESSAGES)
    assert len(failing.times) == 2 and failing.bodies[-1]["temperature"] == 0.5


def test_a_request_that_keeps_failing_is_counted_not_dropped(server, tmp_path):
    failing = server(plan=[500, 500, 500])
    ask = client(failing.url, tmp_path, max_retries=1)
    answers = ask.complete([*MESSAGES, [{"role": "user", "content": "二つ目"}]])
    assert len(answers) == 2 and answers.count(None) == 1  # one failed twice (1 retry), the other answered
    assert ask.usage.failed == 1 and ask.usage.errors == {"HTTP 500": 1}
    assert "1 failed (HTTP 500: 1)" in ask.usage.line("m@x")
    assert len(AnswerCache(tmp_path / "answers.sqlite")) == 1  # a failure is not cached: a rerun asks again


def test_a_failed_request_ends_a_simulated_session_as_such(server, tmp_path):
    from datetime import datetime

    from kokorozoo.interactive.remote import EndpointSpeaker
    from kokorozoo.interactive.sessions import Session
    from kokorozoo.interactive.simulate import Simulation
    from kokorozoo.records import Utterance

    failing = server(plan=[500, 500])
    speaker = EndpointSpeaker(client(failing.url, tmp_path, max_retries=1), "counselor")
    partner = EndpointSpeaker(client(failing.url, tmp_path), "client")
    session = Session("s", "Others", [Utterance("client", datetime(2024, 1, 1), "こんにちは")])
    Simulation(speaker, partner, turns=6).run([session])
    assert session.ended == "request_failed" and len(session.utterances) == 1


def test_startup_problems_are_one_line(server, tmp_path, monkeypatch):
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    with pytest.raises(UsageError, match=r"no API key: set OPENAI_API_KEY"):
        client("https://api.example.org/v1", tmp_path)
    with pytest.raises(UsageError, match=r"m@http://127.0.0.1:9/v1: cannot be reached"):
        client("http://127.0.0.1:9/v1", tmp_path).check()
    keyed = server(key="right")
    monkeypatch.setenv("MY_KEY", "wrong")
    with pytest.raises(UsageError, match=r"refused the key in MY_KEY \(401\)"):
        client(keyed.url, tmp_path, api_key_env="MY_KEY").check()
    monkeypatch.setenv("MY_KEY", "right")
    client(keyed.url, tmp_path, api_key_env="MY_KEY").check()
    unknown = EndpointClient(Endpoint("gpt-4o", keyed.url, api_key_env="MY_KEY"), AnswerCache(tmp_path / "a.sqlite"))
    with pytest.raises(UsageError, match=r"the server has no model 'gpt-4o' \(it serves: m\)"):
        unknown.check()


def test_the_key_is_never_written(server, tmp_path, monkeypatch):
    keyed = server(key="sk-secret-123")
    monkeypatch.setenv("OPENAI_API_KEY", "sk-secret-123")
    client(keyed.url, tmp_path).complete(MESSAGES)
    assert b"sk-secret-123" not in (tmp_path / "answers.sqlite").read_bytes()


@pytest.mark.parametrize(
    "spec, problem",
    [("gpt-4o", "an endpoint is MODEL@URL"), ("@http://x/v1", "an endpoint is MODEL@URL"), ("m@ftp://x", "MODEL@URL")],
)
def test_an_endpoint_is_model_at_url(spec, problem):
    with pytest.raises(UsageError, match=problem):
        Endpoint.parse(spec)
    assert Endpoint.parse("gpt-4o@https://api.openai.com/v1/").base_url == "https://api.openai.com/v1"
    assert Endpoint.names_one("m@http://127.0.0.1:8000/v1") and not Endpoint.names_one("runs/export")
