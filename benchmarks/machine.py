"""Which machine a benchmark ran on, as far as speed is concerned: the CPU model, torch's CPU
kernel capability and whether bfloat16 is native. Saved baselines are kept per machine key
(benchmarks/baseline/<key>/), because a run on an AVX2-only CPU compared with one saved on an
AVX512-BF16 CPU measures the CPUs, not the code. (pytest-benchmark's own machine id is only the OS
and Python, the same on both.)

``python benchmarks/machine.py`` prints the key; ``--describe`` the facts behind it as JSON.
"""

from __future__ import annotations

import json
import re
import sys


def describe() -> dict:
    """The facts that decide this machine's benchmark speed."""
    import cpuinfo
    import torch

    from kokorozoo.backbone.hardware import cpu_has_native_bfloat16, resolve_compute_dtype

    native, seen = cpu_has_native_bfloat16()
    return {
        "cpu": cpuinfo.get_cpu_info().get("brand_raw") or "unknown CPU",
        "torch_cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "bfloat16_native": native,
        "bfloat16_seen": seen,
        "auto_compute_dtype": resolve_compute_dtype("auto", "cpu").name,
        "threads": torch.get_num_threads(),
    }


def machine_key(facts: dict | None = None) -> str:
    """A folder name: the CPU model, torch's capability and ``bf16`` or ``nobf16``."""
    facts = facts or describe()
    cpu = re.sub(r"[^A-Za-z0-9]+", "-", facts["cpu"]).strip("-")
    bf16 = "bf16" if facts["bfloat16_native"] else "nobf16"
    return f"{cpu}_{facts['torch_cpu_capability']}_{bf16}"


if __name__ == "__main__":
    print(json.dumps(describe(), indent=2) if "--describe" in sys.argv[1:] else machine_key())
