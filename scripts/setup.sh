#!/usr/bin/env bash
# Sets up ourvidz in ./.venv on a fresh machine. With --tests it also installs what the test
# suite needs: the test extras and Debian's redis-server (the queue tests start their own).
#   torch: kept if the venv has one; else $OURVIDZ_TORCH (default torch==2.13.0, which pip takes
#   as a CPU build on a machine without CUDA wheels cached, a CUDA build on a GPU machine).
set -euo pipefail
cd "$(dirname "$0")/.."
tests=0
[ "${1:-}" = "--tests" ] && tests=1

[ -x .venv/bin/python ] || "${PYTHON:-python3}" -m venv .venv
. .venv/bin/activate
python -m pip install -q --upgrade pip 2>&1 | grep -v "^WARNING: Location" || true
pipq() { python -m pip install -q "$@" 2>&1 | grep -v "^WARNING: Location" || true; }
python -c "import torch" 2>/dev/null || pipq "${OURVIDZ_TORCH:-torch==2.13.0}"
pipq -e ".[dev,bench]"
# The CLIP BPE vocabulary (for exact token counts and the demo models); read as a file, never
# imported, so its dependencies (torchvision among them) are not wanted.
pipq --no-deps "clip-anytorch==2.6.0"
python -c "import ourvidz, diffusers, transformers, torch" || { echo "setup: install failed" >&2; exit 1; }

if [ "$tests" = 1 ] && ! command -v redis-server >/dev/null; then
  if [ "$(id -u)" = 0 ]; then
    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq redis-server) >/dev/null
  else
    echo "setup: the queue tests need redis-server (apt-get install redis-server)" >&2
  fi
fi
echo "setup: ready (.venv: $(python -c 'import torch, diffusers; print("torch", torch.__version__, "diffusers", diffusers.__version__)'))"
