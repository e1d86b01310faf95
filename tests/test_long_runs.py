"""Long runs: a run killed at any point and resumed ends where the uninterrupted run does;
last.ckpt is always the latest state; evaluation never writes into another run's folder."""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from kokorozoo.cli import main

#: Two epochs of 8 steps, validated every 4 steps and at each epoch's end.
LONG = (
    "--trainer.max_steps=-1",
    "--trainer.max_epochs=2",
    "--trainer.val_check_interval=4",
    "--data.init_args.limit_train=16",
    "--data.init_args.limit_val=4",
    "--data.init_args.limit_test=6",
    "--data.init_args.max_length=768",
)


@pytest.fixture(scope="module")
def long_args(short_fit_args):
    return lambda root, *extra: short_fit_args("score_heads.yaml", root, *LONG, *extra)


def version(root: Path) -> Path:
    [folder] = (root / "lightning_logs").iterdir()  # a resumed run writes in its own folder: still one
    return folder


def losses(folder: Path) -> dict[int, float]:
    with open(folder / "metrics.csv") as f:
        return {int(r["step"]): float(r["train_loss"]) for r in csv.DictReader(f) if r.get("train_loss")}


def outcome(folder: Path) -> tuple:
    report = json.loads((folder / "metrics.json").read_text())
    predictions = (folder / "predictions.jsonl").read_text()
    return report["metrics"], Path(report["checkpoint"]).name, predictions


@pytest.fixture(scope="module")
def uninterrupted(long_args, tmp_path_factory):
    root = tmp_path_factory.mktemp("uninterrupted")
    assert main(long_args(root)) == 0
    return version(root)


def start_fit(args: list[str], log: Path) -> subprocess.Popen:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONUNBUFFERED": "1"}
    return subprocess.Popen(
        [sys.executable, "-m", "kokorozoo.cli", *args], stdout=log.open("w"), stderr=subprocess.STDOUT, env=env
    )


def wait_for(path: Path, process: subprocess.Popen, timeout: float = 300) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        assert process.poll() is None, f"the run ended before writing {path.name}"
        assert time.monotonic() < deadline
        time.sleep(0.05)


@pytest.mark.parametrize("stop", ["kill -9", "ctrl-c"])
def test_a_stopped_and_resumed_run_ends_where_the_uninterrupted_one_does(stop, long_args, uninterrupted, tmp_path):
    root = tmp_path / "run"
    process = start_fit(long_args(root), tmp_path / "first.log")
    last = root / "lightning_logs" / "version_0" / "checkpoints" / "last.ckpt"
    wait_for(last, process)  # written after the first validation, at step 4 of 16
    if stop == "kill -9":
        process.kill()
        process.wait()
    else:
        process.send_signal(signal.SIGINT)
        assert process.wait(timeout=300) == 130  # the step under way finishes, last.ckpt is written
        assert "interrupted at step" in (tmp_path / "first.log").read_text()
    stopped_at = torch.load(last, weights_only=True)["global_step"]
    assert 4 <= stopped_at < 16

    assert main(long_args(root, f"--ckpt_path={last}")) == 0
    resumed = version(root)
    assert outcome(resumed) == outcome(uninterrupted)  # metrics, the tested (best) checkpoint, predictions
    after = {step: loss for step, loss in losses(resumed).items() if step >= stopped_at}
    assert after and after == {step: losses(uninterrupted)[step] for step in after}  # same batches, same weights
    assert torch.load(resumed / "checkpoints" / "last.ckpt", weights_only=True)["global_step"] == 16


def test_last_ckpt_is_the_final_state_and_a_finished_run_says_so(long_args, uninterrupted, capsys):
    last = uninterrupted / "checkpoints" / "last.ckpt"
    assert torch.load(last, weights_only=True)["global_step"] == 16
    before = (uninterrupted / "metrics.json").read_text()
    capsys.readouterr()
    assert main(long_args(uninterrupted.parent.parent, f"--ckpt_path={last}")) == 0
    out = capsys.readouterr().out.strip().splitlines()
    assert len(out) == 1 and "finished run" in out[0] and str(last) in out[0]
    assert (uninterrupted / "metrics.json").read_text() == before


def test_test_writes_where_the_command_line_says(long_args, uninterrupted, tmp_path):
    before = {name: (uninterrupted / name).read_text() for name in ("metrics.json", "predictions.jsonl")}
    best = uninterrupted.parent.parent / "lightning_logs" / uninterrupted.name / "checkpoints"
    [ckpt] = best.glob("best-*.ckpt")
    new = tmp_path / "elsewhere"
    args = [a.replace("fit", "test", 1) if i == 0 else a for i, a in enumerate(long_args(tmp_path / "root"))]
    assert main([*args, f"--ckpt_path={ckpt}", f"--model.init_args.output_dir={new}"]) == 0
    assert {name: (uninterrupted / name).read_text() for name in before} == before  # the earlier run untouched
    assert json.loads((new / "metrics.json").read_text())["metrics"] == json.loads(before["metrics.json"])["metrics"]
