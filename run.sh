#!/usr/bin/env bash
# Set up (a .venv with pinned torch) and run one of:
#   bash run.sh demo [extra compare options]   -> short comparison of all five rules on MNIST, results table
#   bash run.sh test [extra pytest options]    -> the test suite
set -euo pipefail
cd "$(dirname "$0")"
what="${1:-}"
case "$what" in demo|test) shift ;; *) echo "usage: bash run.sh demo|test [options]" >&2; exit 2 ;; esac
if [ ! -x .venv/bin/python ]; then "${PYTHON:-python3}" -m venv .venv; fi
extras="test"
[ "$what" = test ] && extras="test,ray"
.venv/bin/python -m pip install -q --disable-pip-version-check -c constraints.txt -e ".[$extras]"
# Offline copies of the datasets, when this checkout sits beside them (our machines and CI).
if [ -z "${BIOPLAUSIBLE_DATA:-}" ] && [ -d ../shared/datasets ]; then
  BIOPLAUSIBLE_DATA="$(cd ../shared/datasets && pwd)"
  export BIOPLAUSIBLE_DATA
fi
if [ "$what" = demo ]; then
  exec .venv/bin/bioplausible compare --dataset mnist --preset tuned --epochs 3 --out runs/demo "$@"
fi
exec .venv/bin/python -m pytest -q "$@"
