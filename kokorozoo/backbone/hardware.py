"""What the machine computes natively: ``compute_dtype: auto`` picks bfloat16 only where the
device has bfloat16 instructions, because elsewhere it is emulated and several times slower than
float32 (on an AVX2-only CPU a bfloat16 matmul measured ~8x slower than the same in float32).

The CPU answer follows what torch will really run: its kernel capability
(``torch.backends.cpu.get_cpu_capability()``, which ``ATEN_CPU_CAPABILITY`` can lower), the CPU's
AVX512-BF16 or AMX flags, and oneDNN's ISA limit (``ONEDNN_MAX_CPU_ISA``), which decides the
bfloat16 matmul kernels. So an AVX2 machine can be reproduced on a newer one by lowering both.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass

import torch

log = logging.getLogger(__name__)

AUTO = "auto"

#: oneDNN ISA limits (``ONEDNN_MAX_CPU_ISA``) that still include bfloat16 instructions.
_ONEDNN_BF16_ISAS = (
    "AVX512_CORE_BF16",
    "AVX512_CORE_FP16",
    "AVX512_CORE_AMX",
    "AVX512_CORE_AMX_FP16",
    "AVX10_1_512",
    "AVX10_1_512_AMX",
    "AVX10_1_512_AMX_FP16",
    "AVX10_2_512",
    "AVX10_2_512_AMX_2",
    "ALL",
)


@dataclass(frozen=True)
class DtypeChoice:
    """The compute dtype ``auto`` resolved to, and why (the one log line a run prints)."""

    name: str
    reason: str


def cpu_has_native_bfloat16() -> tuple[bool, str]:
    """Whether this CPU computes bfloat16 in hardware under the kernels torch will use, and what
    was seen."""
    capability = torch.backends.cpu.get_cpu_capability()
    flags = [
        name
        for name, check in (("AVX512-BF16", "_is_avx512_bf16_supported"), ("AMX", "_is_amx_tile_supported"))
        if getattr(torch.cpu, check, lambda: False)()
    ]
    limit = os.environ.get("ONEDNN_MAX_CPU_ISA", "").strip().upper()
    seen = f"CPU capability {capability}, bfloat16 instructions: {', '.join(flags) or 'none'}"
    if limit:
        seen += f", ONEDNN_MAX_CPU_ISA={limit}"
    native = bool(flags) and capability.startswith("AVX512") and (not limit or limit in _ONEDNN_BF16_ISAS)
    return native, seen


def resolve_compute_dtype(name: str, device: str) -> DtypeChoice:
    """``name`` unless it is ``auto``: then bfloat16 where ``device`` computes it natively (a CUDA
    device with bfloat16 support, a CPU with AVX512-BF16 or AMX in use), float32 elsewhere."""
    if name != AUTO:
        return DtypeChoice(name, "set explicitly")
    if device.startswith("cuda"):
        if torch.cuda.is_bf16_supported():
            return DtypeChoice("bfloat16", f"{torch.cuda.get_device_name(torch.device(device))} computes bfloat16")
        return DtypeChoice("float32", f"{torch.cuda.get_device_name(torch.device(device))} lacks bfloat16")
    native, seen = cpu_has_native_bfloat16()
    if native:
        return DtypeChoice("bfloat16", f"{seen}: bfloat16 is native")
    return DtypeChoice("float32", f"{seen}: bfloat16 would be emulated, several times slower than float32")
