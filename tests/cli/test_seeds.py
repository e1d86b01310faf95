"""``kokorozoo seeds``: a score config fitted once per seed, and the runs' mean ± std."""

import json
from pathlib import Path

import pytest

from kokorozoo.cli import main
from kokorozoo.cli.seeds import fit_command

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def fit_args(short_fit_args):
    """The short fit of the heads config, with 3 test dialogues and prompts of 768 tokens."""
    return lambda config, root, *extra: short_fit_args(
        config, root, "--data.init_args.limit_test=3", "--data.init_args.max_length=768", *extra
    )


def write_metrics(folder, seed, acc, acc_soft, mae, invalid=0, split="random", **extra):
    folder.mkdir(parents=True)
    report = {
        "task": "score",
        "seed": seed,
        "split": split,
        "metrics": {"acc": acc, "acc_soft": acc_soft, "mae": mae, "invalid": invalid},
        "baseline": {"acc": 34.4, "acc_soft": 77.4, "mae": 0.905, "modes": {}},
        "classical": {"acc": 39.0 + seed, "acc_soft": 88.0, "mae": 0.74},
        **extra,
    }
    (folder / "metrics.json").write_text(json.dumps(report))


def test_seeds_aggregate_mean_and_sample_std(tmp_path, capsys):
    for seed, acc in enumerate([33.0, 35.0, 37.0]):
        write_metrics(tmp_path / "runs" / f"seed_{seed}", seed, acc, 80.0 + seed, 0.8 + seed / 100, invalid=seed)
    assert main(["seeds", "--aggregate", str(tmp_path / "runs"), "--out", str(tmp_path / "summary")]) == 0
    summary = json.loads((tmp_path / "summary" / "summary.json").read_text())["summary"]
    assert summary["acc"] == {"mean": 35.0, "std": 2.0, "n": 3}
    assert summary["acc_soft"]["mean"] == pytest.approx(81.0) and summary["acc_soft"]["std"] == pytest.approx(1.0)
    assert summary["mae"]["mean"] == pytest.approx(0.81) and summary["invalid"]["mean"] == 1.0
    assert summary["baseline_acc"] == {"mean": pytest.approx(34.4), "std": 0.0, "n": 3}
    assert summary["classical_acc"] == {"mean": 40.0, "std": 1.0, "n": 3} and "by_rule_acc" not in summary
    table = capsys.readouterr().out
    assert "35.00 ± 2.00" in table and "0.8100 ± 0.0100" in table and "base ACC" in table
    assert table.startswith("split: random") and "classical ACC_soft" in table and "40.00 ± 1.00" in table
    csv_rows = (tmp_path / "summary" / "summary.csv").read_text().splitlines()
    assert csv_rows[0].startswith("seed,acc,acc_soft,mae") and csv_rows[-2].startswith("mean,35.0")
    assert csv_rows[0].endswith("classical_acc,classical_acc_soft,classical_mae")


def test_seeds_show_the_rule_figures_when_every_run_has_them(tmp_path, capsys):
    rules = {"acc": 36.0, "acc_soft": 85.0, "mae": 0.8}
    for seed in (0, 1):
        write_metrics(tmp_path / f"seed_{seed}", seed, 35.0, 80.0, 0.9, by_rule=rules)
    assert main(["seeds", "--aggregate", str(tmp_path)]) == 0
    assert "by rule ACC_soft" in capsys.readouterr().out
    write_metrics(tmp_path / "seed_2", 2, 35.0, 80.0, 0.9)  # one run without: the column is left out
    assert main(["seeds", "--aggregate", str(tmp_path)]) == 0
    assert "by rule" not in capsys.readouterr().out
    write_metrics(tmp_path / "other" / "seed_0", 0, 35.0, 80.0, 0.9, split="client_disjoint")
    assert main(["seeds", "--aggregate", str(tmp_path)]) == 2
    assert "different splits (client_disjoint, random)" in capsys.readouterr().err


def test_seeds_run_passes_the_seed_to_fit_and_data(tmp_path):
    cmd = fit_command("configs/score.yaml", 3, tmp_path, ["--trainer.max_steps=2"])
    assert cmd[1:5] == ["-m", "kokorozoo.cli", "fit", "--config"]
    assert "--seed_everything=3" in cmd and "--data.init_args.seed=3" in cmd
    assert f"--model.init_args.output_dir={tmp_path / 'seed_3'}" in cmd and cmd[-1] == "--trainer.max_steps=2"


def test_seeds_report_bad_input_in_one_line(tmp_path, capsys):
    (tmp_path / "metrics.json").write_text(json.dumps({"task": "response", "metrics": {"bleu1": 1}}))
    assert main(["seeds", "--aggregate", str(tmp_path)]) == 2
    assert "not a score-prediction metrics.json" in capsys.readouterr().err
    write_metrics(tmp_path / "heads", 0, 30.0, 80.0, 0.9)
    (tmp_path / "heads" / "metrics.json").write_text(
        (tmp_path / "heads" / "metrics.json").read_text().replace('"score"', '"score-heads"')
    )
    write_metrics(tmp_path / "text", 0, 30.0, 80.0, 0.9)
    assert main(["seeds", "--aggregate", str(tmp_path / "heads"), str(tmp_path / "text")]) == 2
    assert "different tasks (score, score-heads)" in capsys.readouterr().err
    assert main(["seeds", "--aggregate", str(tmp_path / "missing")]) == 2
    assert "missing: no such file or folder" in capsys.readouterr().err


def test_seeds_two_tiny_runs(fit_args, tmp_path):
    """Two seeds of the heads task through the real ``kokorozoo fit`` subprocesses (~30 s)."""
    overrides = fit_args("score_heads.yaml", tmp_path)[3:]
    overrides = [o for o in overrides if not o.startswith("--trainer.default_root_dir")]
    code = main(["seeds", "--config", str(ROOT / "configs" / "score_heads.yaml"), "--seeds", "0", "1",
                       "--out", str(tmp_path), "--", *overrides])  # fmt: skip
    assert code == 0
    result = json.loads((tmp_path / "summary.json").read_text())
    assert [r["seed"] for r in result["runs"]] == [0, 1] and result["summary"]["acc"]["n"] == 2
