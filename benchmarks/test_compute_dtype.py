"""The main command's training step in float32 against bfloat16, side by side on this machine.

``configs/score.yaml``'s step: the default tiny backbone in 4-bit NF4, LoRA plus ``lm_head``,
batches of 4 score samples cut to 512 tokens, forward, backward and an AdamW step. bitsandbytes
dequantizes each 4-bit weight to the compute dtype and multiplies in it, so on a CPU without
bfloat16 instructions a bfloat16 step is emulated and several times slower.

The gate holds on any machine because both sides run here: the dtype ``compute_dtype: auto`` picks
must be within AUTO_SLACK of the faster one. Measured (seconds a step, float32 against bfloat16):
AMD EPYC with AVX2 kernels 0.61 against 5.84, with AVX512-BF16 0.61 against 0.48; Intel Xeon
with AVX2 kernels 1.80 against 4.02, with AVX512-BF16 1.58 against 0.17.
"""

from __future__ import annotations

import pytest
from _training import train_steps

from kokorozoo.backbone import LoraSettings
from kokorozoo.backbone.hardware import cpu_has_native_bfloat16, resolve_compute_dtype
from kokorozoo.data.datamodules import ScoreDataModule
from kokorozoo.tasks import ScoreTask

DTYPES = ("float32", "bfloat16")
BATCH, MAX_LENGTH, DIALOGUES = 4, 512, 8
MEDIANS: dict[str, float] = {}
#: auto's pick may be this much slower than the faster dtype (noise; the two differ by 1.3x to 10x).
AUTO_SLACK = 1.5


@pytest.fixture(scope="module")
def batches(kokorochat):
    task = ScoreTask()
    dm = ScoreDataModule(batch_size=BATCH, max_length=MAX_LENGTH, limit_train=DIALOGUES)
    dm._data = kokorochat
    dm.connect(task.tokenizer)
    dm.setup("fit")
    return list(dm.train_dataloader())


@pytest.mark.parametrize("dtype", DTYPES)
def test_score_training_step(benchmark, batches, dtype):
    task = ScoreTask(compute_dtype=dtype, optimizer="adamw", lora=LoraSettings(modules_to_save=("lm_head",)))
    task.configure_model()
    train_steps(task, batches[:1])  # warm-up: first-call allocations and kernel choices
    trained = benchmark.pedantic(train_steps, args=(task, batches), rounds=3, iterations=1)
    assert trained > 0
    MEDIANS[dtype] = benchmark.stats.stats.median / len(batches)
    native, seen = cpu_has_native_bfloat16()
    benchmark.extra_info.update(
        {
            "dtype": dtype,
            "steps": len(batches),
            "seconds_per_step": MEDIANS[dtype],
            "bfloat16_native": native,
            "cpu": seen,
        }
    )
    if len(MEDIANS) == len(DTYPES):
        ratio = MEDIANS["bfloat16"] / MEDIANS["float32"]
        auto = resolve_compute_dtype("auto", "cpu").name
        print(
            f"\ntraining step: float32 {MEDIANS['float32']:.3f} s, bfloat16 {MEDIANS['bfloat16']:.3f} s"
            f" (bfloat16 / float32 = {ratio:.2f}x); auto picks {auto} ({seen})"
        )
        fastest = min(MEDIANS.values())
        assert MEDIANS[auto] <= AUTO_SLACK * fastest, (
            f"auto picks {auto}, {MEDIANS[auto] / fastest:.1f}x slower than the faster dtype on this CPU ({seen})"
        )
