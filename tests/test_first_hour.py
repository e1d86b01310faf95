"""What a newcomer meets first, run as a user runs it (a subprocess): a mistake ends in one line on
stderr with exit code 2, never a traceback, and is found before any training."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from kokorozoo.cli import main

REPO = Path(__file__).resolve().parents[1]


def kokorozoo(*args: str, env: dict | None = None, cwd: Path | None = None) -> subprocess.CompletedProcess:
    environment = {**os.environ, "HF_HUB_OFFLINE": "1", **(env or {})}
    return subprocess.run(
        [sys.executable, "-m", "kokorozoo.cli", *map(str, args)],
        capture_output=True,
        text=True,
        env=environment,
        cwd=cwd,
        timeout=600,
    )


def one_line_error(result: subprocess.CompletedProcess, *words: str) -> str:
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr + result.stdout
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("kokorozoo: error: "), result.stderr
    assert all(word in lines[0] for word in words), lines[0]
    return lines[0]


@pytest.fixture(scope="module")
def small(small_tiny):
    """Settings that put a shipped config on the small test backbone."""
    return [f"--model.init_args.tiny.{k}={v}" for k, v in vars(small_tiny).items()]


@pytest.mark.skipif(torch.cuda.is_available(), reason="the paper configs run as written where a GPU is visible")
def test_a_paper_config_without_a_gpu_says_how_to_try_it():
    one_line_error(
        kokorozoo("fit", "--config", REPO / "configs/paper/score.yaml"),
        "configs/paper/score.yaml",
        "GPU",
        "--trainer.accelerator cpu",
    )


def test_testing_heads_without_a_checkpoint_is_refused(small, tmp_path):
    one_line_error(
        kokorozoo(
            "test", "--config", REPO / "configs/score_heads.yaml", *small, f"--trainer.default_root_dir={tmp_path}"
        ),
        "ScoreHeadsTask",
        "--ckpt_path",
    )
    assert not list(tmp_path.rglob("metrics.json"))


def test_a_text_task_without_a_checkpoint_is_reported_as_zero_shot(short_fit_args, tmp_path, capsys):
    args = short_fit_args(
        "score.yaml",
        tmp_path,
        "--data.init_args.limit_test=2",
        "--data.init_args.max_length=768",
        "--model.init_args.max_new_tokens=4",
    )
    args = ["test", *(a for a in args[1:] if not a.startswith(("--trainer.max_steps", "--trainer.val_check")))]
    assert main(args) == 0
    assert "no checkpoint: zero-shot" in capsys.readouterr().out
    [report] = tmp_path.rglob("metrics.json")
    metrics = json.loads(report.read_text())
    assert metrics["zero_shot"] is True and metrics["checkpoint"] is None and metrics["dialogues"] == 2


def test_a_step_setting_that_no_longer_fits_several_processes_is_found_before_they_start(small, tmp_path):
    # 8 training dialogues over 3 processes at batch 2: 2 batches each, fewer than val_check_interval
    result = kokorozoo(
        "fit",
        "--config",
        REPO / "configs/score.yaml",
        *small,
        "--trainer.devices=3",
        "--trainer.strategy=ddp",
        "--trainer.val_check_interval=3",
        "--data.init_args.limit_train=8",
        "--data.init_args.batch_size=2",
        "--data.init_args.max_length=768",
        f"--trainer.default_root_dir={tmp_path}",
    )
    one_line_error(result, "trainer.val_check_interval (3)", "2 training batches each of the 3 processes", "at most 2")


def test_export_never_overwrites_an_earlier_export(tmp_path):
    out = tmp_path / "adapter"
    out.mkdir()
    (out / "adapter_model.safetensors").write_text("an earlier export")
    one_line_error(kokorozoo("export", tmp_path / "any.ckpt", out), str(out), "--overwrite")
    assert (out / "adapter_model.safetensors").read_text() == "an earlier export"


@pytest.mark.parametrize("content", [b"", b"PK\x03\x04 truncated", b"\x80\x02garbage"])
def test_a_bad_checkpoint_is_named_in_one_line(small, tmp_path, content):
    ckpt = tmp_path / "broken.ckpt"
    ckpt.write_bytes(content)
    one_line_error(
        kokorozoo(
            "test",
            "--config",
            REPO / "configs/score_heads.yaml",
            *small,
            f"--ckpt_path={ckpt}",
            f"--trainer.default_root_dir={tmp_path}",
        ),
        str(ckpt),
        "not a readable checkpoint",
    )


class RunsCode:
    """Unpickling this runs a shell command: what a crafted checkpoint would do."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


@pytest.mark.parametrize("command", ["test", "fit", "export", "chat"])
def test_a_checkpoint_that_would_run_code_is_refused_in_one_line(small, tmp_path, command):
    marker = tmp_path / "the-code-ran"
    ckpt = tmp_path / "crafted.ckpt"
    torch.save({"kokorozoo": {"task": "kokorozoo.tasks.score.ScoreHeadsTask"}, "state_dict": {},
                "payload": RunsCode(marker)}, ckpt)  # fmt: skip
    lightning = ("--config", REPO / "configs/score_heads.yaml", *small, f"--trainer.default_root_dir={tmp_path}")
    args = {
        "test": ("test", *lightning, f"--ckpt_path={ckpt}"),
        "fit": ("fit", *lightning, f"--ckpt_path={ckpt}"),
        "export": ("export", ckpt, tmp_path / "export"),
        "chat": ("chat", ckpt),
    }[command]
    one_line_error(kokorozoo(*args), str(ckpt), "refused", "could run code")
    assert not marker.exists()


def test_mistakes_in_the_settings_are_found_before_training(small, tmp_path):
    fit = (
        "fit",
        "--config",
        REPO / "configs/score_heads.yaml",
        *small,
        "--data.init_args.limit_train=4",
        "--data.init_args.limit_val=2",
    )
    one_line_error(
        kokorozoo(*fit, "--data.init_args.max_length=64", f"--trainer.default_root_dir={tmp_path}"),
        "data.init_args.max_length (64)",
        "instruction",
    )
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    one_line_error(
        kokorozoo(*fit, f"--trainer.default_root_dir={blocker / 'runs'}"), "cannot be written", str(blocker / "runs")
    )


def test_a_config_file_that_is_empty_or_missing_is_named(tmp_path):
    empty = tmp_path / "empty.yaml"
    empty.write_text("")
    one_line_error(kokorozoo("fit", "--config", empty), str(empty), "empty")
    one_line_error(kokorozoo("fit", "--config", tmp_path / "nope.yaml"), "nope.yaml", "no such config file")


def test_a_data_location_the_user_named_is_never_replaced_by_another(tmp_path):
    one_line_error(
        kokorozoo("data", "stats", env={"KOKOROCHAT_ROOT": str(tmp_path / "missing")}),
        "KOKOROCHAT_ROOT",
        "no such directory",
    )
    one_line_error(
        kokorozoo("data", "stats", env={"KOKOROCHAT_ROOT": str(tmp_path)}),
        "KOKOROCHAT_ROOT",
        "no KokoroChat dialogue files",
    )


def test_skipping_every_file_leaves_nothing_and_says_so(small, tmp_path):
    root = tmp_path / "data"
    root.mkdir()
    (root / "1.json").write_text("{not json")
    result = kokorozoo(
        "fit",
        "--config",
        REPO / "configs/score_heads.yaml",
        *small,
        f"--data.init_args.root={root}",
        "--data.init_args.on_error=skip",
        f"--trainer.default_root_dir={tmp_path / 'runs'}",
    )
    assert result.returncode == 2 and "Traceback" not in result.stderr
    report, error = result.stderr.strip().splitlines()  # the skipped file, as asked, then the one error
    assert report.startswith(f"skipped {root / '1.json'}: ") and "invalid JSON" in report
    assert error.startswith("kokorozoo: error: ") and "no valid dialogue left (1 invalid files skipped)" in error
