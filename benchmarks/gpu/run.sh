#!/usr/bin/env bash
# Run on the GPU machine, in the repository root, with .whl/ carried there (see README.md here):
# installs the carried wheels beside the machine's own torch, transformers and peft, then runs the
# check; its JSON and Markdown land in $OUT (or the current folder).
set -euo pipefail
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 KOKOROZOO_CACHE=${KOKOROZOO_CACHE:-/tmp/kokorozoo-cache}
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
python3 -c "import torch, transformers, peft, bitsandbytes; print('torch', torch.__version__, 'cuda', torch.version.cuda, 'transformers', transformers.__version__, 'peft', peft.__version__, 'bitsandbytes', bitsandbytes.__version__)"
python3 benchmarks/gpu/qlora_check.py --out "${OUT:-.}" "$@"
