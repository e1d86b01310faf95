"""Shared fixtures: the real KokoroChat data, the tiny backbone, short fits and exported tiny models,
each made once per test session."""

import os
from pathlib import Path

import pytest
import yaml

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from kokorozoo.data import find_root, load_kokorochat  # noqa: E402


@pytest.fixture(scope="session")
def kokorochat_root() -> Path:
    """The real dialogue folder (../shared/kokorochat/kokorochat_dialogues in CI)."""
    return find_root()


@pytest.fixture(scope="session")
def kokorochat(kokorochat_root):
    return load_kokorochat(kokorochat_root)


#: A tiny backbone small enough for tests: built once per session in a temporary cache.
SMALL_TINY = {
    "vocab_size": 2000,
    "hidden_size": 64,
    "num_layers": 2,
    "num_heads": 4,
    "num_kv_heads": 2,
    "intermediate_size": 128,
    "max_position_embeddings": 4096,
    "tokenizer_dialogues": 100,
}


@pytest.fixture(scope="session")
def tiny_cache(tmp_path_factory):
    """KOKOROZOO_CACHE for this session (inherited by CLI subprocesses)."""
    path = tmp_path_factory.mktemp("kokorozoo-cache")
    os.environ["KOKOROZOO_CACHE"] = str(path)
    return path


@pytest.fixture(scope="session")
def small_tiny(tiny_cache):
    from kokorozoo.backbone import TinyConfig, build_tiny

    cfg = TinyConfig(**SMALL_TINY)
    build_tiny(cfg, cache_dir=tiny_cache)
    return cfg


@pytest.fixture(scope="session")
def tiny_tokenizer(small_tiny, tiny_cache):
    from kokorozoo.backbone import load_tokenizer

    return load_tokenizer("tiny", small_tiny, cache_dir=tiny_cache)


REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def short_fit_args(small_tiny):
    """``kokorozoo fit`` arguments for a shipped config cut to a few seconds: the small tiny
    backbone, 4 steps validated every 2, 8 training and 2 validation dialogues, batch 2."""

    def args(config: str, root, *extra: str) -> list[str]:
        return [
            "fit",
            "--config",
            str(REPO / "configs" / config),
            *[f"--model.init_args.tiny.{k}={v}" for k, v in vars(small_tiny).items()],
            f"--trainer.default_root_dir={root}",
            "--trainer.max_steps=4",
            "--trainer.val_check_interval=2",
            "--trainer.log_every_n_steps=1",
            "--trainer.enable_progress_bar=false",
            "--data.init_args.limit_train=8",
            "--data.init_args.limit_val=2",
            "--data.init_args.batch_size=2",
            "--model.init_args.warmup_steps=1",
            *extra,
        ]

    return args


@pytest.fixture
def paper_config(capsys):
    """A config of configs/paper/ as ``kokorozoo fit --print_config`` resolves it, after checking
    what every paper run shares: Swallow-8B in NF4, computing in bfloat16 where the GPU has it
    (``auto``), and the paper's LoRA."""
    from kokorozoo.cli import main

    def read(name: str) -> dict:
        with pytest.raises(SystemExit) as stop:
            main(["fit", "--config", str(REPO / "configs" / "paper" / f"{name}.yaml"), "--print_config"])
        assert stop.value.code in (0, None)
        cfg = yaml.safe_load(capsys.readouterr().out)
        model = cfg["model"]["init_args"]
        assert model["backbone"] == "tokyotech-llm/Llama-3.1-Swallow-8B-Instruct-v0.3"
        assert (model["quantization"], model["compute_dtype"]) == ("nf4", "auto")  # bfloat16 on a GPU with it
        assert model["lora"] == {
            "r": 8, "alpha": 16, "dropout": 0.05,
            "target_modules": ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"],
            "modules_to_save": [],
        }  # fmt: skip
        return cfg

    return read


# -- exported tiny models: a counselor, a client and a score-heads model, each a short fit through the
# CLI then `kokorozoo export` (made once per test session). They compute in float32 without
# quantization, where batching cannot flip a greedy token.
FLOAT32 = ("--model.init_args.quantization=none", "--model.init_args.compute_dtype=float32", "--test_after_fit=false")
#: Short prompts and turns: the sessions stay within seconds.
SPEAKER = (
    "--data.init_args.max_length=384",
    "--model.init_args.max_new_tokens=10",
    "--model.init_args.min_new_tokens=2",
)
MODELS = {
    "counselor": ("response.yaml", SPEAKER),
    "client": ("client.yaml", SPEAKER),
    "scorer": ("score_heads.yaml", ()),
}


@pytest.fixture(scope="session")
def exports(short_fit_args, tmp_path_factory) -> dict[str, Path]:
    """name -> export folder (its checkpoint: ``last.ckpt`` under the folder's parent)."""
    from kokorozoo.cli import main

    made = {}
    for name, (config, extra) in MODELS.items():
        root = tmp_path_factory.mktemp(name)
        assert main(short_fit_args(config, root, *FLOAT32, *extra)) == 0
        [ckpt] = root.glob("lightning_logs/version_*/checkpoints/last.ckpt")
        made[name] = root / "export"
        assert main(["export", str(ckpt), str(made[name])]) == 0
    return made
