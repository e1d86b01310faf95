"""The shipped tiny configs, run as a user runs them (`nox -s slow`: a few minutes each): the
figures a user reads (the final table, the best-checkpoint line, metrics.json) agree and are sane."""

import csv
import json
import re
from pathlib import Path

import pytest

from kokorozoo.cli import main

ROOT = Path(__file__).resolve().parents[1]

#: Each config's task, and where the printed test table's names (one scheme: ``test_<metric>``,
#: ``test_<baseline>_<metric>``) are found in metrics.json.
EXPECTED = {
    "response.yaml": ("response", {f"test_bleu{n}": ("metrics", f"bleu{n}") for n in range(1, 5)}
                      | {f"test_{k}": ("metrics", k) for k in ("rouge1", "rouge2", "rougeL", "dist1", "dist2")}),
    "score.yaml": ("score", {("test_" if p == "metrics" else "test_baseline_") + k: (p, k)
                             for p in ("metrics", "baseline") for k in ("acc", "acc_soft", "mae")}),
    "score_heads.yaml": ("score-heads", {("test_" if p == "metrics" else "test_baseline_") + k: (p, k)
                                         for p in ("metrics", "baseline") for k in ("acc", "acc_soft", "mae")}),
}  # fmt: skip


def printed_table(out: str) -> dict[str, float]:
    """The final test table Lightning prints: metric name -> value."""
    return {name: float(value) for name, value in re.findall(r"^\W*(\w+)\W+(-?\d+\.\d+(?:e[-+]?\d+)?)\W*$", out, re.M)}


@pytest.mark.slow
@pytest.mark.parametrize("config", list(EXPECTED))
def test_shipped_config_fits_and_tests(config, tmp_path, capsys):
    assert main(["fit", "--config", str(ROOT / "configs" / config), f"--trainer.default_root_dir={tmp_path}"]) == 0
    out = capsys.readouterr().out
    [report_path] = tmp_path.glob("lightning_logs/version_*/metrics.json")
    report = json.loads(report_path.read_text())
    task, names = EXPECTED[config]
    assert report["task"] == task and report["metrics"]

    table = printed_table(out)
    for name, (section, key) in names.items():
        assert table[name] == pytest.approx(report[section][key], rel=1e-4, abs=1e-6), name
        assert 0 <= report[section][key] <= (5 if key == "mae" else 100), name

    # the tested checkpoint is the best one by the task's own criterion, as the printed line says
    [best] = re.findall(r"best checkpoint: (\S+) \((\w+) = (-?[\d.]+)\)", out)
    path, monitor, value = best
    assert Path(path).exists() and Path(path).name.startswith("best-")
    with open(report_path.parent / "metrics.csv") as f:
        logged = [float(row[monitor]) for row in csv.DictReader(f) if row.get(monitor)]
    chosen = min(logged) if monitor == "val_loss" else max(logged)
    assert float(value) == pytest.approx(chosen, abs=1e-4)
