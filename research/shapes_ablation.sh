#!/usr/bin/env bash
# The pyramid / fusion ablation of docs/results.md: every run has the same training budget
# (the same number of optimizer steps: EPOCHS epochs of the 20k-triplet train split at batch
# 64), then is evaluated in-process on the synthetic test split. Usage:
#   research/shapes_ablation.sh DATA_DIR OUT_DIR SEED [RUN ...]
# RUN is one of: image text sum m1 m2 m3 m4 (default: all). Results: OUT_DIR/<run>-s<SEED>.json
set -euo pipefail
data=${1:?data dir}; out=${2:?out dir}; seed=${3:?seed}; shift 3
runs=("$@"); [ ${#runs[@]} -gt 0 ] || runs=(image text sum m1 m2 m3 m4)
EPOCHS=${EPOCHS:-0.9}
cir=${CIR:-.venv/bin/cir}
for run in "${runs[@]}"; do
  case $run in
    image|text|sum) args=(--fusion "$run" --num-scales 3) ;;
    m[1-4]) args=(--fusion cross --num-scales "${run#m}") ;;
    *) echo "unknown run $run" >&2; exit 2 ;;
  esac
  dir=$out/$run-s$seed
  "$cir" train --data "$data" --out "$dir" --epochs "$EPOCHS" --lr 1e-3 --warmup-steps 50 \
    --seed "$seed" "${args[@]}"
  "$cir" eval "$dir/checkpoint" --data "$data" --split test --json-out "$out/$run-s$seed.json"
done
