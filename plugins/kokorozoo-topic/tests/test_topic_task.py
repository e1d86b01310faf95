"""The topic task end to end through the real ``kokorozoo`` CLI, as an installed plugin: discovery,
fit -> best checkpoint -> test, a checkpoint with the head in it that predicts the same numbers
after reloading, and an export of it that does so in a fresh process."""

import json
from pathlib import Path

import pytest
import torch

from kokorozoo.cli import main
from kokorozoo.registry import discover_tasks
from kokorozoo_topic import TOPICS, TopicDataModule, TopicTask

CONFIG = Path(__file__).resolve().parents[1] / "configs" / "topic.yaml"


def fit_args(small_tiny, root, *extra):
    return [
        "fit",
        "--config",
        str(CONFIG),
        *[f"--model.init_args.tiny.{k}={v}" for k, v in vars(small_tiny).items()],
        f"--trainer.default_root_dir={root}",
        "--trainer.max_steps=4",
        "--trainer.val_check_interval=2",
        "--trainer.log_every_n_steps=1",
        "--trainer.enable_progress_bar=false",
        "--trainer.enable_model_summary=false",
        "--data.init_args.limit_train=8",
        "--data.init_args.limit_val=4",
        "--data.init_args.limit_test=6",
        "--data.init_args.batch_size=2",
        "--data.init_args.max_length=128",
        "--model.init_args.warmup_steps=1",
        *extra,
    ]


def test_installed_plugin_is_registered(capsys):
    entry = discover_tasks()["topic"]
    assert entry.ok and entry.cls is TopicTask
    assert (entry.distribution, entry.target) == ("kokorozoo-topic", "kokorozoo_topic:TopicTask")
    assert main(["tasks"]) == 0
    [row] = [line for line in capsys.readouterr().out.splitlines() if line.startswith("topic ")]
    assert row.split() == ["topic", "TopicTask", "kokorozoo-topic", "0.1.0", "ok"]


def test_config_names_the_plugin_classes(capsys):
    import yaml

    with pytest.raises(SystemExit) as stop:
        main(["fit", "--config", str(CONFIG), "--print_config"])
    assert stop.value.code in (0, None)
    cfg = yaml.safe_load(capsys.readouterr().out)
    assert cfg["model"]["class_path"] == "kokorozoo_topic.TopicTask"
    assert cfg["data"]["class_path"] == "kokorozoo_topic.TopicDataModule"


@pytest.fixture(scope="module")
def fitted(small_tiny, tmp_path_factory):
    root = tmp_path_factory.mktemp("topic-fit")
    assert main(fit_args(small_tiny, root)) == 0
    [version] = sorted((root / "lightning_logs").iterdir())[-1:]
    return version


def test_fit_validates_checkpoints_and_tests(fitted):
    metrics = (fitted / "metrics.csv").read_text().splitlines()
    header = metrics[0].split(",")
    assert {"train_loss", "val_loss", "val_acc", "val_macro_f1", "test_acc", "test_macro_f1"} <= set(header)
    assert len([r for r in metrics[1:] if r.split(",")[header.index("val_macro_f1")]]) == 2
    report = json.loads((fitted / "metrics.json").read_text())
    assert report["task"] == "topic" and report["dialogues"] == 6
    assert set(report["metrics"]) == {"acc", "macro_f1"} and set(report["per_topic_f1"]) == set(TOPICS)
    assert report["baseline"]["predicts"] in TOPICS and 0 <= report["baseline"]["acc"] <= 1
    rows = [json.loads(line) for line in (fitted / "predictions.jsonl").read_text().splitlines()]
    assert len(rows) == 6 and all(r["topic"] in TOPICS and r["predicted"] in TOPICS for r in rows)
    assert all(sum(r["probabilities"].values()) == pytest.approx(1, abs=1e-4) for r in rows)
    accuracy = sum(r["topic"] == r["predicted"] for r in rows) / len(rows)
    assert report["metrics"]["acc"] == pytest.approx(accuracy)


def test_checkpoint_holds_the_head_and_adapters_only(fitted):
    ckpt = torch.load(next((fitted / "checkpoints").glob("best-*.ckpt")), weights_only=True)
    keys = set(ckpt["state_dict"])
    assert {"head.weight", "head.bias"} <= keys and ckpt["state_dict"]["head.weight"].shape[0] == len(TOPICS)
    assert all(k.startswith("head.") or "lora_" in k or "modules_to_save" in k for k in keys)
    assert ckpt["kokorozoo"]["task"] == "kokorozoo_topic.task.TopicTask"


def test_reloaded_checkpoint_predicts_the_same(fitted, kokorochat, tiny_tokenizer):
    """The head must survive saving: the test run's predictions (Lightning restoring the best
    checkpoint into the trained model) equal those of a new task built by load_task from that
    checkpoint alone (its head first initialized from another seed). The core suite checks the
    same checkpoint machinery in a fresh process."""
    from kokorozoo.tasks.model_files import load_task

    dm = TopicDataModule(max_length=128, limit_test=6, eval_batch_size=16)  # the fit's test batch
    dm._data = kokorochat
    dm.connect(tiny_tokenizer)
    batch = next(iter(dm.test_dataloader()))
    torch.manual_seed(12345)
    task = load_task(next((fitted / "checkpoints").glob("best-*.ckpt")))
    assert isinstance(task, TopicTask) and not task.training
    with torch.no_grad():
        probs = task(batch["input_ids"], batch["attention_mask"]).softmax(-1)
    rows = [json.loads(line) for line in (fitted / "predictions.jsonl").read_text().splitlines()]
    assert batch["dialogue_ids"] == [r["dialogue_id"] for r in rows]
    for row, p in zip(rows, probs.tolist()):
        assert [row["probabilities"][t] for t in TOPICS] == pytest.approx(p, abs=1e-5)


RELOAD = """
import json, sys, torch
from kokorozoo.api import Task
from kokorozoo_topic import TopicDataModule, TopicTask
task = Task.from_export(sys.argv[1])
assert isinstance(task, TopicTask) and not task.training
dm = TopicDataModule(max_length=128, limit_test=6, eval_batch_size=16)  # the fit's test batch
dm.connect(task.tokenizer)
dm.setup("test")
batch = next(iter(dm.test_dataloader()))
with torch.no_grad():
    probs = task(batch["input_ids"], batch["attention_mask"]).softmax(-1)
print(json.dumps({"ids": batch["dialogue_ids"], "probabilities": probs.tolist()}))
"""


def test_exported_model_predicts_the_same_in_a_fresh_process(fitted, tmp_path):
    """``kokorozoo export`` of the best checkpoint writes the head beside the adapter, and
    ``Task.from_export`` in a new process (nothing of the fit in memory) predicts what the test run
    wrote: the head is the trained one, not the fresh one ``configure_heads`` makes."""
    import os
    import subprocess
    import sys

    from safetensors.torch import load_file

    ckpt = next((fitted / "checkpoints").glob("best-*.ckpt"))
    out = tmp_path / "export"
    assert main(["export", str(ckpt), str(out)]) == 0
    info = json.loads((out / "kokorozoo.json").read_text())
    assert info["task"] == "kokorozoo_topic.task.TopicTask" and info["head"]["topics"] == list(TOPICS)
    saved = torch.load(ckpt, weights_only=True)["state_dict"]
    head = load_file(out / info["head"]["file"])
    assert set(head) == {"weight", "bias"} and all(torch.equal(head[k], saved[f"head.{k}"]) for k in head)

    proc = subprocess.run(
        [sys.executable, "-c", RELOAD, str(out)], capture_output=True, text=True,
        cwd=Path(__file__).resolve().parents[3], env={**os.environ, "HF_HUB_OFFLINE": "1"},
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    reloaded = json.loads(proc.stdout.strip().splitlines()[-1])
    rows = [json.loads(line) for line in (fitted / "predictions.jsonl").read_text().splitlines()]
    assert reloaded["ids"] == [r["dialogue_id"] for r in rows]
    for row, p in zip(rows, reloaded["probabilities"]):
        assert [row["probabilities"][t] for t in TOPICS] == pytest.approx(p, abs=1e-5)


def test_an_export_without_the_head_is_refused(tmp_path):
    """An export written before the head was saved would predict with a random head: refused."""
    task = TopicTask()
    with pytest.raises(ValueError, match="the export holds no head of TopicTask .*: export the checkpoint again$"):
        task.load_head(tmp_path, {"task": "kokorozoo_topic.task.TopicTask"})
    with pytest.raises(ValueError, match=r"kokorozoo.json: head.topics: .* are not this task's"):
        task.load_head(tmp_path, {"head": {"file": "topic_head.safetensors", "topics": list(reversed(TOPICS))}})
