"""``kokorozoo chat`` scripted on stdin: replies on stdout, /save writes a file the project's own
loader validates, /reset and bad commands, a missing model folder in one line."""

import io
import json

import pytest

from kokorozoo.cli import main
from kokorozoo.data import dialogue_turns, load_kokorochat, read_dialogue_file
from kokorozoo.interactive.sessions import OPENING
from kokorozoo.records import ITEM_NAMES


def chat(monkeypatch, capsys, *args, lines):
    monkeypatch.setattr("sys.stdin", io.StringIO("".join(f"{line}\n" for line in lines)))
    code = main(["chat", *map(str, args)])
    out, err = capsys.readouterr()
    return code, out.splitlines(), err


def unescaped(line: str) -> str:
    return line.replace("\\n", "\n").replace("\\\\", "\\")


def test_scripted_chat_saves_a_valid_kokorochat_session(exports, tmp_path, monkeypatch, capsys):
    saved = tmp_path / "sessions" / "first.json"
    said = ["最近、眠れない日が続いています。", "仕事のことで悩んでいます。"]
    code, out, err = chat(
        monkeypatch, capsys, exports["counselor"], lines=[said[0], "", said[1], f"/save {saved}", "/quit", "never read"]
    )
    assert code == 0, err
    assert out[0] == OPENING and len(out) == 3  # the opening, then one line per reply
    assert f"saved 5 turns to {saved}" in err

    dialogue = read_dialogue_file(saved)  # validates every field
    turns = dialogue_turns(dialogue)
    assert [t.role for t in turns] == ["counselor", "client", "counselor", "client", "counselor"]
    assert [turns[1].text, turns[3].text] == said
    assert [turns[0].text, turns[2].text, turns[4].text] == [unescaped(line) for line in out]
    record = json.loads(saved.read_text())
    assert record["kokorozoo"]["review"].startswith("placeholder") and dialogue.score == 0
    assert len(load_kokorochat(saved.parent)) == 1
    assert main(["data", "stats", "--root", str(saved.parent), "--json"]) == 0
    stats = json.loads(capsys.readouterr().out)
    assert stats["dialogues"] == 1 and stats["merged_turns"]["total"] == 5


def test_reset_rate_and_end_of_input(exports, tmp_path, monkeypatch, capsys):
    saved = tmp_path / "rated.json"
    code, out, err = chat(
        monkeypatch,
        capsys,
        exports["counselor"],
        "--rate",
        exports["scorer"],
        "--opening",
        "",
        lines=["こんにちは。", "/reset", "/nonsense", "/save", "相談があります。", f"/save {saved}"],
    )
    assert code == 0  # end of input ends the chat
    assert "unknown command /nonsense" in err and "usage: /save FILE" in err and "(a new session)" in err
    rating = out[-21:]
    assert [line.split()[1] for line in rating[:20]] == list(ITEM_NAMES)
    items = [int(line.split()[-1]) for line in rating[:20]]
    assert all(0 <= v <= 5 for v in items) and rating[20] == f"total {sum(items)}/100 (predicted)"
    record = json.loads(saved.read_text())
    assert record["kokorozoo"]["predicted"] == {"items": dict(zip(ITEM_NAMES, items)), "total": sum(items)}
    turns = dialogue_turns(read_dialogue_file(saved))
    assert [t.role for t in turns] == ["client", "counselor"] and turns[0].text == "相談があります。"  # after /reset


@pytest.mark.parametrize("flag", [(), ("--rate",)])
def test_a_missing_model_folder_is_one_line(tmp_path, monkeypatch, capsys, flag, exports):
    missing = tmp_path / "no-such-model"
    args = [exports["counselor"], "--rate", missing] if flag else [missing]
    code, out, err = chat(monkeypatch, capsys, *args, lines=[])
    assert code == 2 and err.count("\n") == 1 and str(missing) in err and "no such model folder" in err


def test_a_client_model_cannot_be_the_counselor(exports, monkeypatch, capsys):
    code, _, err = chat(monkeypatch, capsys, exports["client"], lines=[])
    assert code == 2 and err.count("\n") == 1 and "client model" in err


def test_a_response_export_generates_with_plain_transformers_as_kokorozoo_does(exports):
    """generation_config.json carries the task's decoding (greedy, its lengths, the stop ids), so
    ``model.generate`` on the export loaded with transformers + peft alone gives kokorozoo's reply;
    the card says what the model is and under which licence."""
    import json

    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer, GenerationConfig

    from kokorozoo.tasks.base import Task

    folder = exports["counselor"]
    card = (folder / "README.md").read_text(encoding="utf-8")
    assert "license: cc-by-nc-nd-4.0" in card and "pipeline_tag: text-generation" in card
    assert f"kokorozoo chat {folder.name}" in card
    generation = json.loads((folder / "generation_config.json").read_text())
    assert (generation["do_sample"], generation["max_new_tokens"], generation["min_new_tokens"]) == (False, 10, 2)

    base = json.loads((folder / "adapter_config.json").read_text())["base_model_name_or_path"]
    tokenizer = AutoTokenizer.from_pretrained(folder)
    model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32), folder).eval()
    model.generation_config = GenerationConfig.from_pretrained(folder)  # as the card says
    assert "model.generation_config = GenerationConfig.from_pretrained(folder)" in card
    messages = [
        {"role": "assistant", "content": "こんにちは。"},
        {"role": "user", "content": "最近眠れなくて困っています。"},
    ]
    prompt = tokenizer.apply_chat_template(messages, add_generation_prompt=True, return_tensors="pt", return_dict=True)
    with torch.no_grad():
        plain = model.generate(**prompt)[0, prompt["input_ids"].shape[1] :]
    assert 2 <= len(plain) <= 10
    task = Task.from_export(folder)
    with torch.no_grad():
        [ours] = task.generate_text([prompt["input_ids"][0].tolist()], 10, 2)
    assert tokenizer.decode(plain, skip_special_tokens=True) == ours


def test_retry_and_the_decoding_settings(exports, monkeypatch, capsys):
    """/retry replaces the last reply (the same one when greedy, and says so; another when
    sampling, the same sequence for the same seed); --max-new-tokens caps a greedy reply to the
    start of the uncapped one; /retry with no reply of the client's turn to replace is refused."""
    said = "最近、眠れない日が続いています。"
    model = exports["counselor"]
    code, greedy, err = chat(monkeypatch, capsys, model, lines=["/retry", said, "/retry"])
    assert code == 0 and "nothing to retry" in err and "greedy decoding gives the same reply" in err
    assert len(greedy) == 3 and greedy[1] == greedy[2]  # the opening, the reply, its retry

    capped = chat(monkeypatch, capsys, model, "--max-new-tokens", 2, lines=[said])[1][1]
    assert capped and greedy[1].startswith(capped) and capped != greedy[1]

    sampled = [
        chat(monkeypatch, capsys, model, "--temperature", 5, "--seed", seed, lines=[said, "/retry"])[1][1:]
        for seed in (3, 3, 4)
    ]
    assert sampled[0] == sampled[1]  # the same seed, the same replies
    assert sampled[0][0] != sampled[0][1] and sampled[0] != sampled[2] and greedy[1] not in sampled[0]


@pytest.mark.parametrize(
    ("flag", "value", "problem"),
    [("--temperature", "-1", "must be 0.0 or more"), ("--max-new-tokens", "0", "must be 1 or more"),
     ("--max-new-tokens", "ten", "not a number")],
)  # fmt: skip
def test_a_bad_decoding_setting_is_refused_before_loading(flag, value, problem, exports, monkeypatch, capsys):
    with pytest.raises(SystemExit) as exit:
        chat(monkeypatch, capsys, exports["counselor"], flag, value, lines=[])
    err = capsys.readouterr().err
    assert exit.value.code == 2 and f"argument {flag}: {problem}" in err and "loading" not in err


def test_a_cap_that_leaves_no_room_for_the_prompt_is_one_line(exports, monkeypatch, capsys):
    code, _, err = chat(monkeypatch, capsys, exports["counselor"], "--max-new-tokens", 384, lines=[])
    assert code == 2 and err.count("\n") == 1 and "leaves no room for a prompt before max_new_tokens 384" in err


#: The calls a terminal's reader blocks in, by machine: select, pselect6, poll, ppoll.
WAITING_FOR_A_KEY = {"x86_64": {23, 270, 7, 271}, "aarch64": {72, 73}}


def test_ctrl_c_at_a_terminal_prompt_clears_the_line_and_a_second_one_ends(exports):
    """On a real terminal (a pseudo-terminal, as tmux gives): Ctrl-C while typing drops the line
    and the chat goes on; /retry answers again; two Ctrl-C in a row end the chat (exit 0).

    A key goes to the terminal only once the chat waits for one: CPython's readline looks for a
    signal when its wait is interrupted, so a Ctrl-C that lands between the prompt and the wait
    is seen only at the next key (on a loaded machine that window was hit, and the chat waited)."""
    import os
    import platform
    import pty
    import select
    import signal
    import sys
    import time
    from pathlib import Path

    kokorozoo = Path(sys.executable).with_name("kokorozoo")
    pid, terminal = pty.fork()
    if pid == 0:  # the child: the chat, with the pseudo-terminal as its controlling terminal
        os.execve(kokorozoo, [str(kokorozoo), "chat", str(exports["counselor"])], {**os.environ, "TERM": "dumb"})
    screen = b""

    def until(text: str, timeout: float = 120) -> str:
        nonlocal screen
        deadline = time.monotonic() + timeout
        while text.encode() not in screen:
            assert time.monotonic() < deadline, f"no {text!r} on the screen:\n{screen.decode(errors='replace')}"
            if select.select([terminal], [], [], 1)[0]:
                screen += os.read(terminal, 4096)
        shown, screen = screen.decode(errors="replace"), screen[screen.index(text.encode()) + len(text.encode()) :]
        return shown

    def waiting_for_a_key() -> bool | None:
        """Whether the chat's main thread blocks waiting for a key; None where the machine does
        not show a process's system call."""
        waits = WAITING_FOR_A_KEY.get(platform.machine())
        try:
            call = Path(f"/proc/{pid}/syscall").read_text().split()[0]
        except OSError:
            return None
        return None if waits is None else call.isdigit() and int(call) in waits

    def type_keys(keys: bytes, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while (waiting := waiting_for_a_key()) is False:
            assert time.monotonic() < deadline, "the chat never waited for a key"
            time.sleep(0.05)
        if waiting is None:
            time.sleep(1)
        os.write(terminal, keys)

    def exit_status(timeout: float = 60) -> int:
        deadline = time.monotonic() + timeout
        while not (ended := os.waitpid(pid, os.WNOHANG))[0]:
            assert time.monotonic() < deadline, f"the chat did not end:\n{screen.decode(errors='replace')}"
            time.sleep(0.1)
        return os.waitstatus_to_exitcode(ended[1])

    status = None
    try:
        until("client> ")
        type_keys("言いかけた".encode() + b"\x03")
        assert "(Ctrl-C again or /quit to end)" in until("client> ")
        type_keys("眠れません。\r".encode())
        reply = until("client> ").split("counselor> ")[-1].split("\r\n")[0]
        type_keys(b"/retry\r")
        retried = until("client> ")
        assert "greedy decoding gives the same reply" in retried and f"counselor> {reply}" in retried
        type_keys(b"\x03")
        until("client> ")
        type_keys(b"\x03")
        status = exit_status()
    finally:
        if status is None:  # a failed step: never leave the chat behind, waiting on a terminal
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
        os.close(terminal)
    assert status == 0
    assert "言いかけた" not in reply  # the cleared line never reached the model as a turn
