"""The client model: the response task with ``role: client`` learns and generates the client's
turns from the same data, splits and chat rendering (the client stays the ``user``)."""

import json

import pytest

from kokorozoo.chat_format import LLAMA3_CHAT_TEMPLATE, chat_messages
from kokorozoo.cli import main
from kokorozoo.data import dialogue_turns, target_turn_indices
from kokorozoo.data.datamodules import ResponseDataModule
from kokorozoo.data.encoding import IGNORE_INDEX, encode_dialogue, generation_prompt, next_turn_prompt

EOT = "<|eot_id|>"


@pytest.fixture(scope="module")
def dialogue(kokorochat):
    return kokorochat.by_id()["10"]


def labelled_spans(ids, labels):
    """The runs of labelled tokens of a sample, each as its token ids."""
    spans, current = [], []
    for token, label in zip(ids, labels):
        if label != IGNORE_INDEX:
            assert label == token
            current.append(token)
        elif current:
            spans, current = spans + [current], []
    return spans + ([current] if current else [])


@pytest.mark.parametrize("mode", ["dialogue", "per_turn"])
def test_the_label_mask_covers_exactly_the_client_turns(tiny_tokenizer, dialogue, mode):
    data = ResponseDataModule(role="client", mode=mode, max_length=4096)
    data.connect(tiny_tokenizer)
    samples = data.training_samples([dialogue], "test")
    turns = dialogue_turns(dialogue)
    spans = [tiny_tokenizer.decode(span) for ids, labels in samples for span in labelled_spans(ids, labels)]
    targets = target_turn_indices(turns, "client")
    assert targets == [i for i, t in enumerate(turns) if t.role == "client" and i > 0] and len(targets) > 10
    assert spans == [turns[i].text.strip() + EOT for i in targets]  # turn by turn, nothing else


def test_client_prompts_end_with_the_user_header(tiny_tokenizer, dialogue):
    turns = dialogue_turns(dialogue)
    encoded = encode_dialogue(tiny_tokenizer, turns, target="client")
    for t in encoded.targets[:6]:
        prompt = generation_prompt(encoded, t, 4096)[0]
        expected = tiny_tokenizer.apply_chat_template(
            chat_messages(turns[:t]), tokenize=False, add_generation_prompt=True, target_role="user"
        )
        assert tiny_tokenizer.decode(prompt) == expected
        assert expected.endswith("<|start_header_id|>user<|end_header_id|>\n\n")
        assert next_turn_prompt(tiny_tokenizer, turns[:t], "client", 4096) == prompt  # a turn not yet said


def test_the_counselor_rendering_is_unchanged(tiny_tokenizer, dialogue):
    """The default target renders byte for byte as the template did before it had one."""
    before = (
        LLAMA3_CHAT_TEMPLATE.replace("{%- set target = target_role | default('assistant') %}", "")
        .replace("== target", "== 'assistant'")
        .replace("' + target + '", "assistant")
    )
    assert "target" not in before
    messages = chat_messages(dialogue_turns(dialogue), "あなたはカウンセラーです。")
    for kwargs in ({"return_assistant_tokens_mask": True, "return_dict": True}, {"tokenize": False}):
        now = tiny_tokenizer.apply_chat_template(messages, **kwargs)
        old = tiny_tokenizer.apply_chat_template(messages, chat_template=before, **kwargs)
        assert now == old


def test_a_client_fit_records_its_role_and_generates_client_turns(short_fit_args, tmp_path, kokorochat):
    args = short_fit_args(
        "client.yaml",
        tmp_path,
        "--data.init_args.test_turns=3",
        "--data.init_args.max_length=512",
        "--model.init_args.max_new_tokens=6",
    )
    assert main(args) == 0
    [version] = (tmp_path / "lightning_logs").iterdir()
    rows = [json.loads(line) for line in (version / "generations.jsonl").read_text().splitlines()]
    by_id = kokorochat.by_id()
    assert len(rows) == 3
    for row in rows:
        turn = dialogue_turns(by_id[row["dialogue_id"]])[row["turn_index"]]
        assert turn.role == "client" and row["reference"] == turn.text

    out = tmp_path / "export"
    assert main(["export", str(version / "checkpoints" / "last.ckpt"), str(out)]) == 0
    info = json.loads((out / "kokorozoo.json").read_text())
    assert info["prompt"] == {"max_length": 512, "role": "client", "system_prompt": None}
    assert info["settings"]["max_new_tokens"] == 6 and info["settings"]["generation"] == "shared_prefix"

    from kokorozoo.tasks import ResponseTask

    task = ResponseTask.from_export(out)
    assert task.prompt_settings == info["prompt"] and task.hparams.max_new_tokens == 6


def test_role_is_checked(tmp_path):
    with pytest.raises(ValueError, match="role must be 'counselor' or 'client'"):
        ResponseDataModule(role="therapist")


def test_the_paper_client_config_is_the_paper_response_run_on_client_turns(paper_config):
    client, counselor = paper_config("client_high"), paper_config("response_high")
    assert (client["data"]["init_args"]["role"], counselor["data"]["init_args"]["role"]) == ("client", "counselor")
    assert client["model"] == counselor["model"]  # Swallow-8B, NF4, LoRA, optimizer, lr, warm-up, decoding
    for key in ("subset", "mode", "max_length"):
        assert client["data"]["init_args"][key] == counselor["data"]["init_args"][key], key
    assert client["trainer"]["max_epochs"] == counselor["trainer"]["max_epochs"] == 5
