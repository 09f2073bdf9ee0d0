#!/usr/bin/env bash
# Download every wheel the GPU bench carries (benchmarks/wheels.txt) into .whl/, for the lent
# machine's Python 3.12 on x86_64. Run here (PyPI reachable), then pass `carry: [".whl"]` to the
# device call that runs benchmarks/run_gpu.sh.
set -euo pipefail
cd "$(dirname "$0")/.."
rm -rf .whl && mkdir -p .whl
grep -v '^#' benchmarks/wheels.txt | grep . | xargs "${PYTHON:-python3}" -m pip download -q --no-deps \
  --only-binary=:all: --python-version 3.12 --implementation cp --abi cp312 \
  --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 --platform manylinux_2_28_x86_64 -d .whl
ls .whl | wc -l | xargs echo "fetch_wheels: wheels in .whl/:"
du -sh .whl
