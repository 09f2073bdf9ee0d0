#!/usr/bin/env bash
# `ourvidz bench` on a lent GPU machine that has torch, transformers and accelerate but not
# diffusers or the CLI's other dependencies: install the wheels carried in .whl/ (the exact list:
# benchmarks/wheels.txt, downloaded by benchmarks/fetch_wheels.sh), then run the bench with the
# given arguments (or `generate ...` / `batch ...`: that command). Results land in $OUT/bench (copy them
# into benchmarks/ afterwards).
set -euo pipefail
ls .whl/*.whl >/dev/null 2>&1 || { echo "run_gpu: no wheels in .whl/: run benchmarks/fetch_wheels.sh here and carry .whl" >&2; exit 2; }
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1
export OURVIDZ_CACHE=${OURVIDZ_CACHE:-/tmp/ourvidz-cache}
# NVLink multicast stays off on shared hosts (it can take the host's GPUs out of service).
export NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NVSHMEM_DISABLE_NVLS=1
nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv,noheader
python3 -c 'import torch, diffusers, transformers; print("torch", torch.__version__, "diffusers", diffusers.__version__, "transformers", transformers.__version__, "gpus", torch.cuda.device_count())'
case "${1:-}" in
  generate|batch)  # any other ourvidz command the same way: bash benchmarks/run_gpu.sh generate video_fast "..." --gpus 2
    python3 -m ourvidz "$@" ;;
  *)
    python3 -m ourvidz bench --out "${OUT:-benchmarks}/bench" "$@" ;;
esac
