#!/usr/bin/env bash
# The CUDA run of the suite, as one short script: records the card, runs the device tests, then the
# timing suite with --device cuda (results in benchmarks/results/suite-cuda.json; the card's name,
# memory, capability and CUDA version are in its "machine" block).
# Usage (from anywhere): benchmarks/gpu.sh [extra options for benchmarks.run]
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
mkdir -p benchmarks/results
"$PY" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 'no CUDA device: nothing to run')"
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv > benchmarks/results/gpu-card.txt 2>&1 || true
"$PY" -m pytest -q -p no:cacheprovider tests/test_cuda.py
"$PY" -W ignore -m benchmarks.run --device cuda --datasets mnist,cifar10 --repeats 3 \
    --out benchmarks/results/suite-cuda.json "$@" | tee benchmarks/results/suite-cuda.txt
