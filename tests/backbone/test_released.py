"""The lab's released KokoroChat models by name: a short name, its hub id or an earlier name
resolve to a local copy or the hub; offline without a copy, one line says where to put it; a
shipped config tests such a model as kokorozoo tests its own (tested here with a tiny model in the
released model's folder)."""

import json
import shutil
from pathlib import Path

import pytest

from kokorozoo.backbone import RELEASED_MODELS, BackboneError, build_tiny, released_name, resolve_model
from kokorozoo.cli import main

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize(
    "given", ["kokorochat-high", "UEC-InabaLab/Llama-3.1-KokoroChat-High", "UEC-InabaLab/KokoroChat-High"]
)
def test_every_name_of_a_released_model_is_known(given):
    assert released_name(given) == "kokorochat-high"
    assert released_name("tokyotech-llm/Llama-3.1-Swallow-8B-Instruct-v0.3") is None


def test_offline_without_a_copy_says_where_to_put_one(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("KOKOROZOO_MODELS", str(tmp_path / "models"))
    with pytest.raises(BackboneError) as error:
        resolve_model("kokorochat-low")
    message = str(error.value)
    assert (
        "\n" not in message
        and "kokorochat-low (UEC-InabaLab/Llama-3.1-KokoroChat-Low) is not on this machine" in message
    )
    assert f"put a copy in {tmp_path / 'models' / 'kokorochat-low'}" in message
    assert "huggingface-cli download UEC-InabaLab/Llama-3.1-KokoroChat-Low" in message


def test_a_shipped_config_tests_a_released_model_from_its_local_copy(small_tiny, tiny_cache, tmp_path, monkeypatch):
    models = tmp_path / "models"
    shutil.copytree(build_tiny(small_tiny, cache_dir=tiny_cache), models / "kokorochat-high")  # the copy a user puts
    monkeypatch.setenv("KOKOROZOO_MODELS", str(models))
    args = [
        "test",
        "--config",
        str(ROOT / "configs" / "released" / "kokorochat_high.yaml"),
        "--trainer.accelerator=cpu",  # the config's GPU run, on this CPU
        "--model.init_args.quantization=none",
        "--model.init_args.compute_dtype=float32",
        "--model.init_args.max_new_tokens=4",
        "--data.init_args.max_length=384",
        "--data.init_args.limit_test=1",
        "--data.init_args.test_turns=4",
        "--trainer.enable_progress_bar=false",
        f"--trainer.default_root_dir={tmp_path / 'run'}",
    ]
    assert main(args) == 0
    [folder] = (tmp_path / "run").glob("lightning_logs/version_*")
    result = json.loads((folder / "metrics.json").read_text())
    assert result["released_model"] == RELEASED_MODELS["kokorochat-high"] and "zero_shot" not in result
    assert result["turns"] == 4 and result["metrics"]
