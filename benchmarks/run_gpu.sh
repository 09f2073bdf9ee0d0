#!/usr/bin/env bash
# `ourvidz bench` on a lent GPU machine that has torch, transformers and accelerate but not
# diffusers: install the wheels carried in .whl/, then run the bench with the given arguments.
# Results land in $OUT/bench (copy them into benchmarks/ afterwards).
set -euo pipefail
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1
export OURVIDZ_CACHE=${OURVIDZ_CACHE:-/tmp/ourvidz-cache}
nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv,noheader
python3 -c 'import torch, diffusers, transformers; print("torch", torch.__version__, "diffusers", diffusers.__version__, "transformers", transformers.__version__)'
python3 -m ourvidz bench --out "${OUT:-benchmarks}/bench" "$@"
