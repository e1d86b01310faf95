"""Exported tiny models for the chat and simulation tests: a counselor, a client and a score-heads
model, each a short fit through the CLI then ``kokorozoo export`` (made once per test session).
They compute in float32 without quantization, where batching cannot flip a greedy token."""

from pathlib import Path

import pytest

from kokorozoo.cli import main

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
    """name -> export folder."""
    made = {}
    for name, (config, extra) in MODELS.items():
        root = tmp_path_factory.mktemp(name)
        assert main(short_fit_args(config, root, *FLOAT32, *extra)) == 0
        [ckpt] = root.glob("lightning_logs/version_*/checkpoints/last.ckpt")
        made[name] = root / "export"
        assert main(["export", str(ckpt), str(made[name])]) == 0
    return made
