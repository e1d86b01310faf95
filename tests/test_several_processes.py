"""Two processes (DDP on CPU, gloo) report exactly what one does: every dialogue and turn once, the
rows in the single-process order, the same metrics; and in float32 the evaluation batch size
changes nothing."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from kokorozoo.cli import main

#: Exactness needs float32: 4-bit bfloat16 kernels round differently for different batch shapes.
FLOAT32 = ("--model.init_args.quantization=none", "--model.init_args.compute_dtype=float32")
#: Per task: the config, and an odd number of test items (5 dialogues; 5 counselor turns).
TASKS = {
    "score_heads.yaml": ("--data.init_args.limit_test=5", "--data.init_args.max_length=768"),
    "response.yaml": ("--data.init_args.test_turns=5", "--data.init_args.max_length=1024",
                      "--model.init_args.max_new_tokens=6", "--data.init_args.limit_test=2"),
}  # fmt: skip
TWO_PROCESSES = ("--trainer.devices=2", "--trainer.strategy=ddp")


def kokorozoo(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    result = subprocess.run(
        [sys.executable, "-m", "kokorozoo.cli", *args], capture_output=True, text=True, env=env, timeout=900
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return result


def outputs(folder: Path) -> tuple[dict, list[dict], list[float]]:
    """metrics.json, the rows, and apart the heads' written probabilities: those are compared to
    1e-5 (float32 sums in another order differ in the last bits, which never moves a decision)."""
    report = json.loads((folder / "metrics.json").read_text())
    lines = next(p for p in folder.iterdir() if p.suffix == ".jsonl").read_text().splitlines()
    rows = [json.loads(line) for line in lines]
    probabilities = [p for row in rows for item in row.pop("distribution", []) for p in item]
    return {k: v for k, v in report.items() if k != "checkpoint"}, rows, probabilities


def assert_same(one: tuple, two: tuple) -> None:
    assert one[:2] == two[:2]
    assert one[2] == pytest.approx(two[2], abs=1e-5)


@pytest.fixture(scope="module", params=list(TASKS))
def fitted(request, short_fit_args, tmp_path_factory):
    """A short float32 fit (no test): its best checkpoint and the arguments that test it."""
    config = request.param
    root = tmp_path_factory.mktemp(config.split(".")[0])
    fit = short_fit_args(config, root, *FLOAT32, *TASKS[config])
    assert main([*fit, "--test_after_fit=false"]) == 0
    [best] = root.rglob("best-*.ckpt")
    test = ["test", *(a for a in fit[1:] if not a.startswith(("--trainer.max_steps", "--trainer.val_check")))]
    return config, best, test


def test_two_processes_count_every_item_once_and_report_what_one_does(fitted, tmp_path):
    config, best, test = fitted
    kokorozoo(*test, f"--ckpt_path={best}", f"--model.init_args.output_dir={tmp_path / 'one'}")
    kokorozoo(*test, *TWO_PROCESSES, f"--ckpt_path={best}", f"--model.init_args.output_dir={tmp_path / 'two'}")
    one, two = outputs(tmp_path / "one"), outputs(tmp_path / "two")
    assert len(one[1]) == 5  # an odd number: one process evaluates one more
    assert_same(one, two)


def test_the_evaluation_batch_size_changes_nothing_in_float32(fitted, tmp_path):
    config, best, test = fitted
    for size in (1, 4):
        assert (
            main(
                [
                    *test,
                    f"--ckpt_path={best}",
                    f"--data.init_args.eval_batch_size={size}",
                    f"--model.init_args.output_dir={tmp_path / str(size)}",
                ]
            )
            == 0
        )
    assert_same(outputs(tmp_path / "1"), outputs(tmp_path / "4"))


def test_fit_on_two_processes_runs_through_the_test_of_the_best_checkpoint(short_fit_args, tmp_path):
    kokorozoo(*short_fit_args("score_heads.yaml", tmp_path, *FLOAT32, *TASKS["score_heads.yaml"]), *TWO_PROCESSES)
    [report] = tmp_path.rglob("metrics.json")
    metrics = json.loads(report.read_text())
    assert metrics["dialogues"] == 5 and Path(metrics["checkpoint"]).name.startswith("best-")
