"""The GPU check (benchmarks/gpu/) runs dry on the CPU, and its slim bitsandbytes wheel installs:
a session lent a GPU runs it as it is, so it must not have rotted."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
import zipfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def _module(name: str):
    spec = importlib.util.spec_from_file_location(name, REPO / "benchmarks" / "gpu" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


def test_dry_run_measures_every_part(tiny_cache, tmp_path):
    check = _module("qlora_check")
    assert check.main(["--dry-run", "--out", str(tmp_path)]) == 0
    report = json.loads((tmp_path / "qlora_check.json").read_text())
    assert report["dry_run"] and report["device"] == "CPU"
    assert [t["layout"] for t in report["training"]] == ["padded", "packed"]
    padded, packed = report["training"]
    assert padded["real_tokens"] == packed["real_tokens"] == packed["tokens_through_model"]
    assert padded["tokens_through_model"] == 2 * max(check.DRY_PLAN.lengths)  # padding counted
    assert all(t["tokens_per_s"] > 0 and t["model_tflop_per_step"] > 0 for t in report["training"])
    assert [d["way"] for d in report["decoding"]] == ["generate", "shared_prefix"]
    assert "| packed |" in (tmp_path / "qlora_check.md").read_text()


def test_formula_is_the_one_in_results():
    check = _module("qlora_check")
    results = (REPO / "benchmarks" / "RESULTS.md").read_text()
    assert "8.34 GB + 1.19 MB x T + T^2 B" in results
    assert (check.FORMULA_FIXED, check.FORMULA_PER_TOKEN) == (8.34e9, 1.19e6)


def _fake_wheel(path: Path) -> Path:
    wheel = path / "bitsandbytes-0.0.1-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as z:
        z.writestr("bitsandbytes/__init__.py", "VERSION = 1\n")
        for lib in ("cpu", "cuda118", "cuda130", "rocm64"):
            z.writestr(f"bitsandbytes/libbitsandbytes_{lib}.so", lib * 1000)
        z.writestr(
            "bitsandbytes-0.0.1.dist-info/METADATA", "Metadata-Version: 2.1\nName: bitsandbytes\nVersion: 0.0.1\n"
        )
        z.writestr(
            "bitsandbytes-0.0.1.dist-info/WHEEL", "Wheel-Version: 1.0\nRoot-Is-Purelib: true\nTag: py3-none-any\n"
        )
        z.writestr("bitsandbytes-0.0.1.dist-info/RECORD", "stale\n")
    return wheel


def test_slim_wheel_keeps_only_the_named_libraries_and_installs(tmp_path):
    slim = _module("slim_wheel")
    target, dropped = slim.slim(_fake_wheel(tmp_path), {"cpu", "cuda130"}, tmp_path / "out")
    names = zipfile.ZipFile(target).namelist()
    assert sorted(n for n in names if n.endswith(".so")) == [
        "bitsandbytes/libbitsandbytes_cpu.so",
        "bitsandbytes/libbitsandbytes_cuda130.so",
    ]
    assert sorted(dropped) == ["bitsandbytes/libbitsandbytes_cuda118.so", "bitsandbytes/libbitsandbytes_rocm64.so"]
    site = tmp_path / "site"
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "-q", "--no-index", "--no-deps", "--target", str(site), str(target)],
        check=True,
    )  # pip checks every hash in RECORD
    assert (site / "bitsandbytes" / "libbitsandbytes_cuda130.so").read_text() == "cuda130" * 1000


def test_slim_wheel_refuses_a_library_the_wheel_lacks(tmp_path):
    slim = _module("slim_wheel")
    try:
        slim.slim(_fake_wheel(tmp_path), {"cpu", "cuda999"}, tmp_path / "out")
    except SystemExit as e:
        assert "cuda999" in str(e)
    else:
        raise AssertionError("a missing library was not refused")
