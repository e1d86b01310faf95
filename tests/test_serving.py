"""``kokorozoo serve`` as a real server process on localhost, serving tiny exports, and kokorozoo's
own endpoint client pointed at it: a served reply is the reply ``kokorozoo chat`` gives for the
same history (streamed through the ``openai`` client too), ``chat`` and both sides of ``simulate``
run on endpoints as on folders, and what the server cannot do is refused."""

import io
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from kokorozoo.cli import main
from kokorozoo.data import load_kokorochat

HISTORIES = [
    [("counselor", "こんにちは。今日はどうされましたか？"), ("client", "最近眠れなくて困っています。")],
    [("client", "仕事がつらいです。")],
]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def served(exports):
    """name -> base URL of a ``kokorozoo serve`` process for the counselor and the client export."""
    processes, urls = [], {}
    for name in ("counselor", "client"):
        port = _free_port()
        command = [sys.executable, "-m", "kokorozoo.cli", "serve", str(exports[name]), "--name", name]
        processes.append(
            subprocess.Popen(
                [*command, "--port", str(port)],
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
                start_new_session=True,  # the server's workers end with it
            )
        )
        urls[name] = f"http://127.0.0.1:{port}/v1"
    try:
        for url, process in zip(urls.values(), processes):
            _wait_until_it_answers(url, process)
        yield urls
    finally:
        for process in processes:
            os.killpg(process.pid, signal.SIGTERM)
        for process in processes:
            process.wait(timeout=60)


def _wait_until_it_answers(url: str, process: subprocess.Popen, seconds: float = 240) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise AssertionError(f"kokorozoo serve ended: {process.stdout.read()}")
        try:
            with urllib.request.urlopen(f"{url}/models", timeout=5) as answer:
                if answer.status == 200:
                    return
        except OSError:
            time.sleep(1)
    raise AssertionError(f"{url} did not answer in {seconds} s")


@pytest.fixture(scope="module")
def local_counselor(exports):
    from kokorozoo.interactive.models import Speaker

    return Speaker.load(Speaker.find(exports["counselor"], "counselor", "the counselor"))


def _turns(history):
    from kokorozoo.records import Turn

    return [Turn(role, text, 1) for role, text in history]


def _messages(history, role="counselor"):
    return [{"role": "assistant" if r == role else "user", "content": text} for r, text in history]


def test_a_served_reply_is_the_reply_kokorozoo_gives(served, local_counselor):
    """The same history gives the same text from the server (streamed or not, read by the openai
    client itself) as from the model loaded in this process."""
    from openai import OpenAI

    api = OpenAI(base_url=served["counselor"], api_key="none")
    assert [m.id for m in api.models.list()] == ["counselor"]
    expected, _ = local_counselor.next_turns([_turns(h) for h in HISTORIES])
    for history, text in zip(HISTORIES, expected):
        answer = api.chat.completions.create(model="counselor", messages=_messages(history))
        assert answer.choices[0].message.content == text
        assert answer.usage.prompt_tokens == len(local_counselor.prompt(_turns(history)))
        assert answer.usage.completion_tokens > 0
        chunks = list(api.chat.completions.create(model="counselor", messages=_messages(history), stream=True))
        assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == text
        assert len(chunks) > 2  # streamed piece by piece, not in one chunk
    capped = api.chat.completions.create(model="counselor", messages=_messages(HISTORIES[0]), max_tokens=2)
    assert capped.usage.completion_tokens <= 2


def test_what_the_server_cannot_do_is_refused(served):
    import openai
    from openai import OpenAI

    api = OpenAI(base_url=served["counselor"], api_key="none", max_retries=0)
    with pytest.raises(openai.NotFoundError, match="does not exist here"):
        api.chat.completions.create(model="gpt-4o", messages=_messages(HISTORIES[1]))
    with pytest.raises(openai.BadRequestError, match="stop is not supported"):
        api.chat.completions.create(model="counselor", messages=_messages(HISTORIES[1]), stop=["。"])


def test_chat_through_the_endpoint_is_chat_with_the_folder(served, exports, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("KOKOROZOO_ENDPOINT_CACHE", str(tmp_path / "answers.sqlite"))
    lines = "最近、眠れない日が続いています。\n仕事のことで悩んでいます。\n"

    def chat(model):
        monkeypatch.setattr("sys.stdin", io.StringIO(lines))
        assert main(["chat", str(model)]) == 0
        return capsys.readouterr()

    local = chat(exports["counselor"])
    remote = chat(f"counselor@{served['counselor']}")
    assert remote.out == local.out and len(local.out.splitlines()) == 3
    assert "2 requests sent, 0 answered from the cache" in remote.err
    again = chat(f"counselor@{served['counselor']}")
    assert again.out == local.out and "0 requests sent, 2 answered from the cache" in again.err


def test_simulate_with_both_sides_behind_endpoints(served, exports, tmp_path, monkeypatch):
    """The same seed, the same sessions, whether the models are folders or endpoints."""
    monkeypatch.setenv("KOKOROZOO_ENDPOINT_CACHE", str(tmp_path / "answers.sqlite"))
    settings = ["--sessions", "2", "--turns", "6", "--opening-turns", "2", "--seed", "3"]
    sides = {
        "local": (exports["counselor"], exports["client"]),
        "remote": (f"counselor@{served['counselor']}", f"client@{served['client']}"),
    }
    texts = {}
    for name, (counselor, client) in sides.items():
        out = tmp_path / name
        args = ["simulate", "--counselor", str(counselor), "--client", str(client), "--out", str(out), *settings]
        assert main(args) == 0
        sessions = load_kokorochat(out)  # valid KokoroChat files
        texts[name] = {d.id: [(u.role, u.text) for u in d.utterances] for d in sessions}
        summary = json.loads((out / "summary.json").read_text())
        assert "request_failed" not in summary["ended"]
    assert texts["remote"] == texts["local"] and len(texts["local"]) == 2


@pytest.mark.parametrize(
    "model, problem",
    [
        ("counselor@http://127.0.0.1:9/v1", "counselor@http://127.0.0.1:9/v1: cannot be reached"),
        ("gpt-4o@{url}", "the server has no model 'gpt-4o' (it serves: counselor)"),
        ("gpt-4o@https://api.example.org/v1", "no API key: set OPENAI_API_KEY"),
    ],
)
def test_endpoint_mistakes_are_one_line(model, problem, served, monkeypatch, capsys):
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    monkeypatch.setattr("sys.stdin", io.StringIO("こんにちは\n"))
    assert main(["chat", model.format(url=served["counselor"])]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and problem in err, err


def test_serve_checks_the_model_before_starting(tmp_path, capsys):
    assert main(["serve", str(tmp_path / "nothing")]) == 2
    assert "no such model folder or checkpoint (the served model)" in capsys.readouterr().err


def test_vllm_is_told_what_it_can_load(exports, tmp_path, capsys):
    """The paper's adapters (LoRA on the projections only) load in vLLM and the command is printed;
    the tiny configs also train lm_head (modules_to_save), which vLLM's LoRA loader refuses, and
    score heads are kokorozoo's own modules."""
    import shutil

    assert main(["serve", str(exports["counselor"]), "--vllm"]) == 2
    assert "modules_to_save ['lm_head']: vLLM accepts adapters without them only" in capsys.readouterr().err
    assert main(["serve", str(exports["scorer"]), "--vllm"]) == 2
    assert "heads (score_heads.safetensors) are kokorozoo's own modules" in capsys.readouterr().err

    paper_like = tmp_path / "counselor"
    shutil.copytree(exports["counselor"], paper_like)
    config = json.loads((paper_like / "adapter_config.json").read_text())
    config["modules_to_save"] = None
    (paper_like / "adapter_config.json").write_text(json.dumps(config))
    assert main(["serve", str(paper_like), "--vllm", "--name", "kokoro-high"]) == 0
    command = capsys.readouterr().out.strip()
    assert command.startswith("vllm serve ") and "--enable-lora" in command
    assert f"--lora-modules kokoro-high={paper_like.resolve()}" in command
    assert f"--chat-template {paper_like.resolve() / 'chat_template.jinja'}" in command
    assert "--max-model-len 384" in command


def test_a_response_test_through_the_endpoint_is_the_local_test(
    served, exports, small_tiny, tmp_path, monkeypatch, capsys
):
    """``kokorozoo test`` of EndpointResponseTask against the served counselor writes the same
    generations, metrics and baselines as ``kokorozoo test`` of the checkpoint itself, and counts
    what the requests cost."""
    monkeypatch.setenv("KOKOROZOO_ENDPOINT_CACHE", str(tmp_path / "answers.sqlite"))
    [ckpt] = exports["counselor"].parent.glob("lightning_logs/version_*/checkpoints/last.ckpt")
    common = [
        "test",
        "--config",
        str(Path(__file__).resolve().parents[1] / "configs" / "response.yaml"),
        "--data.init_args.max_length=384",
        "--data.init_args.limit_test=2",
        "--model.init_args.max_new_tokens=10",
        "--model.init_args.min_new_tokens=2",
        "--trainer.enable_progress_bar=false",
    ]
    assert main([*common, f"--ckpt_path={ckpt}", f"--trainer.default_root_dir={tmp_path / 'local'}"]) == 0
    remote = [
        "--model=EndpointResponseTask",
        f"--model.init_args.endpoint=counselor@{served['counselor']}",
        *[f"--model.init_args.tiny.{k}={v}" for k, v in vars(small_tiny).items()],  # the tokenizer cutting histories
        f"--trainer.default_root_dir={tmp_path / 'remote'}",
    ]
    capsys.readouterr()
    assert main([*common, *remote]) == 0
    assert "requests sent, 0 answered from the cache" in capsys.readouterr().out

    def run(name):
        [folder] = (tmp_path / name).glob("lightning_logs/version_*")
        rows = [json.loads(line) for line in (folder / "generations.jsonl").read_text().splitlines()]
        return json.loads((folder / "metrics.json").read_text()), rows

    (local, local_rows), (served_result, served_rows) = run("local"), run("remote")
    assert [r["generation"] for r in served_rows] == [r["generation"] for r in local_rows] and len(local_rows) > 10
    assert served_result["metrics"] == local["metrics"] and served_result["baselines"] == local["baselines"]
    endpoint = served_result["endpoint"]
    assert endpoint["model"] == "counselor" and endpoint["requests"] == len(served_rows) and endpoint["failed"] == 0
    assert endpoint["completion_tokens"] > 0 and "zero_shot" not in served_result
