"""compute_dtype ``auto``: bfloat16 only where the device has bfloat16 instructions in use."""

from __future__ import annotations

import logging

import pytest
import torch

from kokorozoo.backbone import BackboneError, hardware, load_backbone
from kokorozoo.backbone.hardware import cpu_has_native_bfloat16, resolve_compute_dtype


def _cpu(monkeypatch, capability: str, avx512_bf16: bool, amx: bool = False, onednn: str | None = None) -> None:
    monkeypatch.setattr(torch.backends.cpu, "get_cpu_capability", lambda: capability)
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: avx512_bf16)
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: amx)
    if onednn is None:
        monkeypatch.delenv("ONEDNN_MAX_CPU_ISA", raising=False)
    else:
        monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", onednn)


@pytest.mark.parametrize(
    ("capability", "avx512_bf16", "amx", "onednn", "expected"),
    [
        ("AVX2", False, False, None, "float32"),  # an AVX2-only CPU
        ("AVX512", False, False, None, "float32"),  # AVX-512 without its bfloat16 extension
        ("AVX512", True, False, None, "bfloat16"),  # AVX512-BF16 (Zen 4, Cooper Lake)
        ("AVX512", False, True, None, "bfloat16"),  # AMX (Sapphire Rapids)
        ("AVX2", True, True, None, "float32"),  # ATEN_CPU_CAPABILITY lowered to avx2
        ("AVX512", True, False, "AVX2", "float32"),  # oneDNN's matmuls limited to AVX2
        ("AVX512", True, False, "avx512_core_bf16", "bfloat16"),
    ],
)
def test_auto_on_a_cpu_follows_the_instructions_in_use(monkeypatch, capability, avx512_bf16, amx, onednn, expected):
    _cpu(monkeypatch, capability, avx512_bf16, amx, onednn)
    choice = resolve_compute_dtype("auto", "cpu")
    assert choice.name == expected
    assert capability in choice.reason  # the log line names what it saw


@pytest.mark.parametrize("explicit", ["bfloat16", "float16", "float32"])
def test_an_explicit_setting_always_wins(monkeypatch, explicit):
    _cpu(monkeypatch, "AVX2", False)
    assert resolve_compute_dtype(explicit, "cpu").name == explicit


def test_auto_on_cuda_asks_the_device(monkeypatch):
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: "NVIDIA H100")
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)
    assert resolve_compute_dtype("auto", "cuda:0").name == "bfloat16"  # the paper's setting on its GPUs
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: False)
    assert resolve_compute_dtype("auto", "cuda:0").name == "float32"


def test_this_machine_is_described_without_guessing():
    native, seen = cpu_has_native_bfloat16()
    assert torch.backends.cpu.get_cpu_capability() in seen
    assert isinstance(native, bool)


class _Lines(logging.Handler):
    def __init__(self):
        super().__init__(logging.INFO)
        self.lines: list[str] = []

    def emit(self, record):
        self.lines.append(record.getMessage())


def test_load_backbone_logs_the_choice_once_and_uses_it(monkeypatch, small_tiny, tiny_cache):
    _cpu(monkeypatch, "AVX2", False)
    seen = _Lines()
    lightning_log = logging.getLogger("lightning.pytorch")  # where Lightning's start-up lines go
    lightning_log.addHandler(seen)
    try:
        loaded = load_backbone("tiny", tiny=small_tiny, cache_dir=tiny_cache, lora=None)
    finally:
        lightning_log.removeHandler(seen)
    lines = [line for line in seen.lines if "compute_dtype auto" in line]
    assert len(lines) == 1 and "float32" in lines[0] and "AVX2" in lines[0]
    linear = next(m for m in loaded.model.modules() if type(m).__name__ == "Linear4bit")
    assert linear.compute_dtype == torch.float32


def test_an_unknown_dtype_names_the_choices():
    with pytest.raises(BackboneError, match="compute_dtype must be one of auto, bfloat16, float16, float32"):
        load_backbone("no-such-org/never-reached", compute_dtype="fp8")


def test_onednn_limits_that_keep_bfloat16_are_known():
    assert "AVX512_CORE_BF16" in hardware._ONEDNN_BF16_ISAS and "AVX2" not in hardware._ONEDNN_BF16_ISAS
