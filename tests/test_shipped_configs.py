"""The shipped tiny configs, run as a user runs them (`nox -s slow`: a few minutes each)."""

import json
from pathlib import Path

import pytest

from kokorozoo.cli import main

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
@pytest.mark.parametrize("config", ["response.yaml", "score.yaml", "score_heads.yaml"])
def test_shipped_config_fits_and_tests(config, tmp_path):
    assert main(["fit", "--config", str(ROOT / "configs" / config), f"--trainer.default_root_dir={tmp_path}"]) == 0
    [report] = tmp_path.glob("lightning_logs/version_*/metrics.json")
    metrics = json.loads(report.read_text())
    assert metrics["metrics"]
    assert list(tmp_path.glob("lightning_logs/version_*/checkpoints/best-*.ckpt"))
