"""Peak memory of one training step (forward + backward) at Swallow-8B's width.

The ``llama3`` backbone at full width with 2 of its 32 layers (1.5B parameters, most of them the
128,256-token embeddings and head), NF4 + LoRA with bfloat16 compute as the paper trains, one real
4,096-token KokoroChat row (Kokoro-High, labels on every counselor turn). Variants:

- ``full_logits``: the loss as it was, from ``model(...).logits`` [1, 4096, 128256];
- ``chunked``: :meth:`~kokorozoo.tasks.base.Task.labelled_token_loss` (the LM head on labelled
  positions only, ``loss_chunk_size`` rows at a time);
- ``chunked_checkpointed``: the same with gradient checkpointing (the paper configs' setting),
  on one row and on two (8,192 tokens: the step's memory grows linearly with the tokens).

Each variant runs alone in a fresh process: the step's peak is the process's high-water mark
(``VmHWM``, reset through ``/proc/self/clear_refs`` just before the step) minus its resident
memory before the step, so loading the model does not count. The benchmark's time is that whole
process (loading included), not a speed figure. Target: the chunked step's peak is lower than the
full-logits one by at least the full-logits term (4,096 x 128,256 float32 values, 2.1 GB).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

LENGTH = 4096
#: (loss and checkpointing, rows of LENGTH tokens)
VARIANTS = (("full_logits", 1), ("chunked", 1), ("chunked_checkpointed", 1), ("chunked_checkpointed", 2))
FULL_LOGITS_BYTES = LENGTH * 128_256 * 4

STEP = r"""
import json, sys
import torch
from kokorozoo.data import dialogue_turns, load_kokorochat, response_split
from kokorozoo.data.batching import pad_samples
from kokorozoo.data.encoding import encode_dialogue
from kokorozoo.tasks import ResponseTask
from kokorozoo.tasks.loss import token_losses

variant, rows, length = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])

def status(field):
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) * 1024 for line in f if line.startswith(field + ":"))

task = ResponseTask(backbone="llama3", quantization="nf4", compute_dtype="bfloat16",
                    gradient_checkpointing=variant == "chunked_checkpointed")
task.configure_model()
windows = []  # the first LENGTH tokens of the first long dialogues, labels on every counselor turn
for dialogue in response_split(load_kokorochat(), "high", seed=0).train:
    encoded = encode_dialogue(task.tokenizer, dialogue_turns(dialogue))
    if len(encoded.ids) >= length:
        windows.append(encoded.window(0, length, encoded.targets))
    if len(windows) == rows:
        break
batch = pad_samples(windows, task.tokenizer.pad_token_id)
with open("/proc/self/clear_refs", "w") as f:
    f.write("5")  # the high-water mark starts again from the memory in use now
before = status("VmRSS")
if variant == "full_logits":
    logits = task.model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    total, count = token_losses(logits, batch["labels"])
    del logits
else:
    total, count = task.summed_loss(batch)
(total / count).backward()
print(json.dumps({"variant": variant, "tokens": batch["input_ids"].numel(), "labelled": int(count),
                  "resident_before": before, "step_peak": status("VmHWM") - before,
                  "loss": float(total / count)}))
"""


def run_step(variant: str, rows: int) -> dict:
    """One training step of ``variant`` on ``rows`` rows in a fresh process; its memory figures."""
    # big buffers are mapped and unmapped, so freed memory leaves the resident set at once
    env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": str(1 << 20), "HF_HUB_OFFLINE": "1"}
    proc = subprocess.run(
        [sys.executable, "-c", STEP, variant, str(rows), str(LENGTH)], capture_output=True, text=True, env=env
    )
    if proc.returncode:
        raise AssertionError(f"{variant} failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


RESULTS: dict[str, dict] = {}


@pytest.mark.parametrize("variant, rows", VARIANTS, ids=[f"{v}-{r}x{LENGTH}" for v, r in VARIANTS])
def test_training_step_peak_memory(benchmark, variant, rows):
    result = benchmark.pedantic(run_step, args=(variant, rows), rounds=1, iterations=1)
    RESULTS[variant, rows] = result
    benchmark.extra_info.update({**result, "rows": rows, "step_peak_gib": round(result["step_peak"] / 2**30, 2)})
    assert result["tokens"] == rows * LENGTH and result["labelled"] > rows * LENGTH // 4


def test_chunked_loss_saves_at_least_the_full_logits_term(benchmark):
    if not {("full_logits", 1), ("chunked", 1)} <= set(RESULTS):
        pytest.skip("needs the full_logits and chunked variants of this run")
    before, after = RESULTS["full_logits", 1], RESULTS["chunked", 1]
    saved = before["step_peak"] - after["step_peak"]
    benchmark.extra_info.update({"saved_bytes": saved, "full_logits_term": FULL_LOGITS_BYTES})
    benchmark.pedantic(lambda: None, rounds=1, iterations=1)
    assert saved >= FULL_LOGITS_BYTES
    assert after["loss"] == pytest.approx(before["loss"], rel=1e-3)
