"""A bitsandbytes wheel with only the native libraries one machine needs.

The PyPI wheel carries a CUDA library for every CUDA version it supports (11.8 to 13.2), ROCm and
XPU builds: about 43 MB compressed, most of what may travel to a GPU machine with the working tree.
bitsandbytes loads ``libbitsandbytes_cuda<NNN>.so`` for the CUDA runtime torch was built with
(13.0 -> cuda130) and the CPU library always, so a wheel with just those behaves the same there.

    python benchmarks/gpu/slim_wheel.py bitsandbytes-0.50.2-py3-none-manylinux_2_24_x86_64.whl \\
        --keep cpu --keep cuda130 --keep cuda132 --out .whl

The RECORD file is rewritten (hashes and sizes of what is kept), so pip installs it as usual.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import re
import sys
import zipfile
from pathlib import Path

NATIVE = re.compile(r"libbitsandbytes_([a-z]+[0-9]*)\.(so|dll|dylib)$")


def _record_line(name: str, data: bytes) -> str:
    digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
    return f"{name},sha256={digest},{len(data)}"


def slim(wheel: Path, keep: set[str], out_dir: Path) -> tuple[Path, list[str]]:
    """Write ``out_dir/<same name>`` without the native libraries not in ``keep``; returns the
    new wheel and the dropped members."""
    out_dir.mkdir(parents=True, exist_ok=True)
    target = out_dir / wheel.name
    if target.resolve() == wheel.resolve():
        raise SystemExit(f"slim_wheel: {target} would overwrite its input: choose another --out")
    dropped, records, record_name = [], [], None
    with zipfile.ZipFile(wheel) as src, zipfile.ZipFile(target, "w", zipfile.ZIP_DEFLATED) as dst:
        for info in src.infolist():
            name = info.filename
            match = NATIVE.search(name)
            if match and match.group(1) not in keep:
                dropped.append(name)
                continue
            if name.endswith(".dist-info/RECORD"):
                record_name = name
                continue
            data = src.read(name)
            dst.writestr(info, data)
            records.append(_record_line(name, data))
        if record_name is None:
            raise SystemExit(f"slim_wheel: {wheel} has no RECORD: not a wheel")
        dst.writestr(record_name, "\n".join([*records, f"{record_name},,"]) + "\n")
    kept = [n for n in zipfile.ZipFile(target).namelist() if NATIVE.search(n)]
    missing = keep - {NATIVE.search(n).group(1) for n in kept}
    if missing:
        raise SystemExit(f"slim_wheel: {wheel.name} has no library for {', '.join(sorted(missing))}")
    return target, dropped


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("wheel", type=Path)
    parser.add_argument(
        "--keep", action="append", required=True, help="a native library to keep, e.g. cpu, cuda130 (repeat)"
    )
    parser.add_argument("--out", type=Path, required=True, help="folder for the slim wheel")
    args = parser.parse_args(argv)
    target, dropped = slim(args.wheel, set(args.keep), args.out)
    print(
        f"{target}: {target.stat().st_size / 1e6:.1f} MB (was {args.wheel.stat().st_size / 1e6:.1f} MB),"
        f" {len(dropped)} native libraries dropped"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
