#!/bin/bash
# DP-SGD search at epsilon = 3 (delta 1e-5) for CIFAR-10 on 3072-800-10 around the recipe of
# docs/privacy.md section 8 (BP), selected on a 10 000-example validation split taken from the
# training file (removed before training; test error only read after).
# Usage: bash scripts/dp_tune_cifar10.sh [OUT_DIR]   (each run ~3-6 min on one core; finished runs are skipped)
# CIFAR-10 is looked up as usual: --data-dir is not passed, so set BIOPLAUSIBLE_DATA or have it in the cache.
set -u
OUT=${1:-runs/dptune-cifar10}
mkdir -p "$OUT"
B="--preset tuned --dataset cifar10 --augment-shift 0 --no-augment-flip --no-standardize --optimizer sgd+momentum --schedule cosine --clip-norm 1 --target-epsilon 3 --delta 1e-5 --validation 10000 --threads 1 --json"
source "$(dirname "$0")/dp_run.sh"
run base15   --rule bp --lr 1.0 --batch-size 2000 --epochs 15
run lr05     --rule bp --lr 0.5 --batch-size 2000 --epochs 15
run lr2      --rule bp --lr 2.0 --batch-size 2000 --epochs 15
run e10      --rule bp --lr 1.0 --batch-size 2000 --epochs 10
run b1000    --rule bp --lr 0.7 --batch-size 1000 --epochs 15
# the selected setting (lowest validation error above: base15) on all 50 000 training examples,
# BP and DFA; test error reported
run final-bp  --rule bp  --lr 1.0 --batch-size 2000 --epochs 15 --validation 0
run final-dfa --rule dfa --lr 1.0 --batch-size 2000 --epochs 15 --validation 0
# the same BP run with another seed (model init, feedback, sampling and noise all change)
run final-bp-seed1 --rule bp --lr 1.0 --batch-size 2000 --epochs 15 --validation 0 --seed 1
