"""The response task end to end through the real CLI, on the tiny backbone and the real data, and
its test path in seconds on stubbed generations."""

import inspect
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from _fakes import TOL, ResponseData, read_jsonl, trainer
from _references import reference_text_metrics

from kokorozoo.cli import main
from kokorozoo.data import dialogue_turns
from kokorozoo.data.batching import pad_samples
from kokorozoo.data.datamodules import GenerationRequest
from kokorozoo.data.encoding import dialogue_windows, encode_dialogue, per_turn_samples
from kokorozoo.tasks import ResponseTask
from kokorozoo.tasks.base import Task

ROOT = Path(__file__).resolve().parents[2]


#: What the response tests add to the short fit: few test turns, short prompts and generations.
RESPONSE_ARGS = (
    "--data.init_args.test_turns=4",
    "--data.init_args.max_length=1024",
    "--model.init_args.max_new_tokens=8",
)


@pytest.fixture(scope="module")
def fit_args(short_fit_args):
    return lambda root, *extra: short_fit_args("response.yaml", root, *RESPONSE_ARGS, *extra)


@pytest.fixture(scope="module")
def fitted(fit_args, tmp_path_factory):
    """One short 4-bit fit (validation every 2 steps) with the best checkpoint tested after."""
    root = tmp_path_factory.mktemp("fit")
    assert main(fit_args(root)) == 0
    return root


def run_dir(root):
    [version] = sorted((root / "lightning_logs").iterdir())[-1:]
    return version


def test_tensorboard_shows_the_learning_rate_and_the_settings_beside_the_test_figures(fitted):
    """Read with TensorBoard's own reader: a learning-rate curve (the fit's 1 warm-up step to the
    config's 1e-3, then linear decay to 0 at step 4) and an HParams session holding the task's
    settings and its test figures."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    from tensorboard.plugins.hparams import plugin_data_pb2

    events = EventAccumulator(str(run_dir(fitted)))
    events.Reload()
    [lr] = [tag for tag in events.Tags()["scalars"] if tag.startswith("lr-")]
    steps = [(e.step, e.value) for e in events.Scalars(lr)]
    assert steps == [(0, 0.0), *((s, pytest.approx(1e-3 * (4 - s) / 3, rel=1e-5)) for s in (1, 2, 3))]
    content = events.PluginTagToContent("hparams")
    start = plugin_data_pb2.HParamsPluginData.FromString(content["_hparams_/session_start_info"]).session_start_info
    assert start.hparams["lr"].number_value == pytest.approx(1e-3) and start.hparams["backbone"].string_value == "tiny"
    experiment = plugin_data_pb2.HParamsPluginData.FromString(content["_hparams_/experiment"]).experiment
    shown = {m.name.tag for m in experiment.metric_infos}
    assert {"test_bleu1", "test_rougeL", "test_retrieval_bleu1"} <= shown


def test_fit_trains_validates_checkpoints_and_tests(fitted, kokorochat):
    version = run_dir(fitted)
    metrics = (version / "metrics.csv").read_text().splitlines()
    header = metrics[0].split(",")
    assert "val_loss" in header and "train_loss" in header
    assert {"test_bleu1", "test_dist2", "test_retrieval_bleu1"} <= set(header) and "bleu1" not in header  # one scheme
    val_rows = [r for r in metrics[1:] if r.split(",")[header.index("val_loss")]]
    assert len(val_rows) >= 2  # validation between training steps, on the 4-bit model
    checkpoints = {p.name for p in (version / "checkpoints").iterdir()}
    assert "last.ckpt" in checkpoints and any(n.startswith("best-") for n in checkpoints)
    report = json.loads((version / "metrics.json").read_text())
    assert report["turns"] == 4 and report["tokenize"] == "mecab"
    assert set(report["metrics"]) == {
        "bleu1",
        "bleu2",
        "bleu3",
        "bleu4",
        "rouge1",
        "rouge2",
        "rougeL",
        "dist1",
        "dist2",
    }
    rows = [json.loads(line) for line in (version / "generations.jsonl").read_text().splitlines()]
    assert len(rows) == 4
    assert set(rows[0]) == {"dialogue_id", "turn_index", "history_turns", "previous", "reference", "generation",
                            "baselines"}  # fmt: skip
    assert set(rows[0]["baselines"]) == {"copy_previous", "retrieval"}
    assert all(isinstance(r["generation"], str) and r["reference"] for r in rows)
    by_id = {d.id: d for d in kokorochat}
    for r in rows:  # the turn the generated one answers: the client's, just before it
        turns = dialogue_turns(by_id[r["dialogue_id"]])
        assert (r["previous"], r["reference"]) == (turns[r["turn_index"] - 1].text, turns[r["turn_index"]].text)
        assert turns[r["turn_index"] - 1].role == "client"


def test_checkpoint_holds_only_what_is_trained(fitted):
    ckpt = torch.load(run_dir(fitted) / "checkpoints" / "last.ckpt", weights_only=True)
    keys = list(ckpt["state_dict"])
    assert any("lora_" in k for k in keys)
    assert all("lora_" in k or "modules_to_save" in k for k in keys)  # the config also trains lm_head
    assert not any("base_layer" in k or "embed_tokens" in k for k in keys)
    assert ckpt["kokorozoo"]["task"] == "kokorozoo.tasks.response.ResponseTask"
    assert ckpt["optimizer_states"]


def test_resume_from_last_checkpoint(fitted, fit_args):
    last = run_dir(fitted) / "checkpoints" / "last.ckpt"
    before = torch.load(last, weights_only=True)
    assert before["global_step"] == 4
    # the run ended with its one epoch: a longer run continues into the next epoch
    args = fit_args(fitted, "--trainer.max_steps=6", "--trainer.max_epochs=2", f"--ckpt_path={last}")
    assert main([*args, "--test_after_fit=false"]) == 0
    after = torch.load(run_dir(fitted) / "checkpoints" / "last.ckpt", weights_only=True)
    assert after["global_step"] == 6  # continued, not restarted
    changed = [k for k in before["state_dict"] if not torch.equal(before["state_dict"][k], after["state_dict"][k])]
    assert changed


GENERATE = """
import json, sys, torch
from peft import PeftModel
from kokorozoo.backbone import load_backbone, TinyConfig
spec = json.loads(sys.argv[1])
info = json.load(open(spec["adapter"] + "/kokorozoo.json"))["settings"]
base = load_backbone(info["backbone"], quantization=info["quantization"], compute_dtype=info["compute_dtype"],
                     lora=None, tiny=TinyConfig(**info["tiny"]))
model = PeftModel.from_pretrained(base.model, spec["adapter"]).eval()
out = model.generate(input_ids=torch.tensor([spec["prompt"]]), max_new_tokens=12, do_sample=False,
                     pad_token_id=base.tokenizer.pad_token_id, eos_token_id=base.tokenizer.eos_token_id)
print(json.dumps(out[0].tolist()))
"""


def test_export_reloads_in_a_fresh_process_with_equal_generations(fitted, tmp_path, kokorochat, capsys):
    from kokorozoo.tasks.model_files import load_task

    ckpt = next((run_dir(fitted) / "checkpoints").glob("best-*.ckpt"))
    out = tmp_path / "adapter"
    assert main(["export", str(ckpt), str(out)]) == 0
    assert (out / "adapter_config.json").exists() and (out / "adapter_model.safetensors").exists()

    task = load_task(ckpt)
    turns = dialogue_turns(kokorochat.by_id()["10"])
    prompt = encode_dialogue(task.tokenizer, turns).ids[:60]
    with torch.no_grad():
        here = task.model.generate(
            input_ids=torch.tensor([prompt]),
            max_new_tokens=12,
            do_sample=False,
            pad_token_id=task.tokenizer.pad_token_id,
            eos_token_id=task.tokenizer.eos_token_id,
        )[0].tolist()
    proc = subprocess.run(
        [sys.executable, "-c", GENERATE, json.dumps({"adapter": str(out), "prompt": prompt})],
        capture_output=True,
        text=True,
        check=True,
    )
    assert json.loads(proc.stdout.strip().splitlines()[-1]) == here
    assert len(here) > len(prompt)


def test_dialogue_and_per_turn_modes_sum_to_the_same_loss(small_tiny, kokorochat):
    task = ResponseTask(tiny=small_tiny, quantization="none", compute_dtype="float32")
    task.configure_model()
    task.model.eval()  # no dropout: both modes see the same function
    encoded = encode_dialogue(task.tokenizer, dialogue_turns(kokorochat.by_id()["10"]))
    pad = task.tokenizer.pad_token_id
    with torch.no_grad():
        whole, whole_count = task.summed_loss(pad_samples(dialogue_windows(encoded, 4096), pad))
        per_turn = [task.summed_loss(pad_samples([s], pad)) for s in per_turn_samples(encoded, 4096)]
    assert int(whole_count) == sum(int(c) for _, c in per_turn) > 100
    assert float(whole) == pytest.approx(sum(float(loss) for loss, _ in per_turn), rel=1e-4)


def test_missing_model_is_one_line(fit_args, tmp_path, capsys):
    args = fit_args(tmp_path, "--model.init_args.backbone=no-such-org/no-such-model")
    assert main(args) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "no-such-org/no-such-model" in err[0] and "offline" in err[0]


def test_wrong_config_is_one_line(tmp_path, capsys):
    bad = tmp_path / "bad.yaml"
    bad.write_text("model:\n  class_path: ResponseTask\n  init_args:\n    learning_rate_typo: 1\n")
    assert main(["fit", "--config", str(bad)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "learning_rate_typo" in err[0]


@pytest.mark.parametrize("subset", ["low", "high", "full"])
def test_paper_configs_hold_the_papers_settings(subset, paper_config):
    cfg = paper_config(f"response_{subset}")
    model, data, trainer = cfg["model"]["init_args"], cfg["data"]["init_args"], cfg["trainer"]
    assert (model["optimizer"], model["lr"], model["warmup_steps"]) == ("adamw_8bit", 1e-3, 100)
    micro_batches = trainer["accumulate_grad_batches"]  # the paper's batch in micro-batches
    assert (data["subset"], data["batch_size"] * micro_batches, data["max_length"]) == (subset, 8, 4096)
    assert (trainer["max_epochs"], trainer["val_check_interval"]) == (5, 400 * micro_batches)
    assert cfg["model"]["class_path"].endswith("ResponseTask")


def test_counselor_disjoint_split_keeps_test_counselors_out_of_training(kokorochat):
    from kokorozoo.data.datamodules import ResponseDataModule
    from kokorozoo.errors import UsageError

    random_split = ResponseDataModule(subset="high").make_split(kokorochat.dialogues)
    split = ResponseDataModule(subset="high", split_kind="counselor_disjoint").make_split(kokorochat.dialogues)
    counselors = {part: {d.feedback.counselor_id for d in getattr(split, part)} for part in ("train", "val", "test")}
    assert split.test == random_split.test  # the paper's test dialogues either way
    assert (
        not counselors["test"] & (counselors["train"] | counselors["val"])
        and not counselors["train"] & counselors["val"]
    )
    assert counselors["test"] & {d.feedback.counselor_id for d in random_split.train}  # which the random split mixes
    with pytest.raises(UsageError, match="split_kind must be one of random, counselor_disjoint"):
        ResponseDataModule(split_kind="client_disjoint")


# -- the test path in seconds: a real Trainer.test of stubbed generations -------------------------
# Japanese counselor turns with word 4-grams in common, each metric against tests/_references.py.

#: (generation, reference): Japanese counselor turns with word 4-grams in common, and one with none.
PAIRS = [
    (
        "  お仕事が大変だったのですね。よく頑張ってこられましたね。\n",
        "お仕事が大変だったのですね。今日はどんなことをお話ししたいですか？",
    ),
    (
        "そうなんですね。ご家族とのことで悩んでいらっしゃるのですね。",
        "ご家族とのことで悩んでいらっしゃるのですね。詳しく教えていただけますか。",
    ),
    ("ありがとうございます。", "お話しくださってありがとうございます。"),
    ("それはつらかったですね。", "明日も来てください。"),
    ("今日はどんなことをお話ししたいですか？", "今日はどんなことをお話ししたいですか？"),
]


def decoding(*args, **kwargs) -> dict:
    """The settings a ``generate_text`` call was given, by name (defaults included)."""
    bound = inspect.signature(Task.generate_text).bind(None, *args, **kwargs)
    bound.apply_defaults()
    return {k: v for k, v in bound.arguments.items() if k != "self"}


def response_requests():
    return [GenerationRequest(f"r{i}", 2 * i + 1, i + 1, [1, 2, 3 + i], ref) for i, (_, ref) in enumerate(PAIRS)]


#: What the two response baselines answer, stubbed (they are tested in tests/evaluation).
RESPONSE_BASELINES = {
    "copy_previous": [r for _, r in PAIRS[1:]] + ["ありがとうございます。"],
    "retrieval": [g for g, _ in reversed(PAIRS)],
}


@pytest.mark.parametrize("tokenize", ["mecab", "char"])
@pytest.mark.mutation
def test_response_test_path_reports_what_its_generations_score(tmp_path, tokenize, monkeypatch):
    asked = []

    def response_baselines(train, targets):
        asked.append(([d.id for d in train], [(d.id, t) for d, t in targets]))
        return RESPONSE_BASELINES

    monkeypatch.setattr("kokorozoo.evaluation.baselines.response_baselines", response_baselines)
    task = ResponseTask(quantization="none", compute_dtype="float32", lora=None, output_dir=str(tmp_path),
                        metrics_tokenize=tokenize, max_new_tokens=11, min_new_tokens=3)  # fmt: skip
    task.model = torch.nn.Linear(1, 1)
    calls = []

    def generate_text(*args, **kwargs):
        calls.append(decoding(*args, **kwargs))
        start = sum(len(c["prompts"]) for c in calls[:-1])
        return [g for g, _ in PAIRS[start : start + len(calls[-1]["prompts"])]]

    task.generate_text = generate_text
    requests = response_requests()
    data = ResponseData(requests, lambda batch: {"requests": list(batch)})
    [logged] = trainer(tmp_path).test(task, datamodule=data, verbose=False)
    assert [c.pop("prompts") for c in calls] == [[r.prompt_ids for r in requests[i : i + 2]] for i in (0, 2, 4)]
    assert calls == [{"max_new_tokens": 11, "min_new_tokens": 3, "shared_prefix": True}] * 3  # the task's settings

    rows = read_jsonl(tmp_path / "generations.jsonl")
    assert rows == [
        {"dialogue_id": r.dialogue_id, "turn_index": r.turn_index, "history_turns": r.history_turns,
         "previous": r.previous, "reference": r.reference, "generation": g.strip(),
         "baselines": {name: texts[i] for name, texts in RESPONSE_BASELINES.items()}}
        for i, (r, (g, _)) in enumerate(zip(requests, PAIRS))
    ]  # fmt: skip
    report = json.loads((tmp_path / "metrics.json").read_text(encoding="utf-8"))
    assert (report["task"], report["turns"], report["tokenize"]) == ("response", len(PAIRS), tokenize)
    expected = reference_text_metrics([r["generation"] for r in rows], [r["reference"] for r in rows], tokenize)
    assert set(report["metrics"]) == set(expected)
    for key, value in expected.items():
        assert report["metrics"][key] == pytest.approx(value, abs=TOL), key
        assert logged[f"test_{key}"] == pytest.approx(value, abs=1e-4), key  # logged as float32
    assert expected["bleu4"] > 0 and expected["bleu3"] != expected["bleu4"]
    # the baselines, scored the same way on the same references
    assert asked == [(["r0"], [(r.dialogue_id, r.turn_index) for r in requests])]
    assert set(report["baselines"]) == set(RESPONSE_BASELINES) and report["split"] == "random"
    for name, texts in RESPONSE_BASELINES.items():
        expected = reference_text_metrics(texts, [r.reference for r in requests], tokenize)
        for key, value in expected.items():
            assert report["baselines"][name][key] == pytest.approx(value, abs=TOL), (name, key)
            assert logged[f"test_{name}_{key}"] == pytest.approx(value, abs=1e-4), (name, key)


@pytest.mark.mutation
def test_response_generation_mode_is_passed_and_checked():
    task = ResponseTask(quantization="none", lora=None, generation="generate")
    calls = []
    task.generate_text = lambda *args, **kwargs: calls.append(decoding(*args, **kwargs)) or [" a "] * 2
    assert task.infer({"requests": response_requests()[:2]}) == ["a", "a"]
    assert calls == [{"prompts": [[1, 2, 3], [1, 2, 4]], "max_new_tokens": 256, "min_new_tokens": 0,
                      "shared_prefix": False}]  # the defaults, one padded generate call  # fmt: skip
    with pytest.raises(ValueError, match="generation must be one of shared_prefix, generate"):
        ResponseTask(generation="sample")


def response_test(tmp_path, monkeypatch, **settings) -> dict:
    """A response test run of PAIRS' generations (character tokens) with a datamodule built with
    ``settings``: its report."""
    monkeypatch.setattr(
        "kokorozoo.evaluation.baselines.response_baselines",
        lambda train, targets: {name: texts[: len(targets)] for name, texts in RESPONSE_BASELINES.items()},
    )
    task = ResponseTask(quantization="none", lora=None, output_dir=str(tmp_path), metrics_tokenize="char")
    task.model = torch.nn.Linear(1, 1)
    task.generate_text = lambda prompts, *args: [g for g, _ in PAIRS][: len(prompts)]
    data = ResponseData(response_requests()[:2], lambda batch: {"requests": list(batch)}, **settings)
    trainer(tmp_path).test(task, datamodule=data, verbose=False)
    return json.loads((tmp_path / "metrics.json").read_text(encoding="utf-8"))


@pytest.mark.mutation
def test_the_report_names_the_split(tmp_path, monkeypatch):
    report = response_test(tmp_path, monkeypatch, split_kind="counselor_disjoint")
    assert report["split"] == "counselor_disjoint" and set(report["baselines"]) == set(RESPONSE_BASELINES)


@pytest.mark.mutation
def test_a_client_model_is_reported_without_the_counselor_baselines(tmp_path, monkeypatch):
    report = response_test(tmp_path, monkeypatch, role="client")
    assert report["baselines"] == {} and report["split"] == "random"


@pytest.mark.mutation
def test_predict_writes_the_generations_and_no_metrics(tmp_path):
    task = ResponseTask(quantization="none", lora=None, output_dir=str(tmp_path))
    task.model = torch.nn.Linear(1, 1)
    task.generate_text = lambda prompts, *args: [PAIRS[p[-1] - 3][0] for p in prompts]  # prompt i ends in 3 + i
    requests = response_requests()[:3]
    returned = trainer(tmp_path).predict(
        task, datamodule=ResponseData(requests, lambda batch: {"requests": list(batch)})
    )
    rows = read_jsonl(tmp_path / "generations.jsonl")
    assert rows == [row for batch in returned for row in batch] and not (tmp_path / "metrics.json").exists()
    assert [(r["dialogue_id"], r["generation"]) for r in rows] == [(q.dialogue_id, g.strip()) for q, (g, _) in
                                                                    zip(requests, PAIRS)]  # fmt: skip
