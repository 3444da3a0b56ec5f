#!/usr/bin/env bash
# Remake the shipped checkpoint (cir_module/checkpoints/shapes-minilm-conv) in five stages
# (docs/results.md, "The shipped model"):
#   1. base:    from scratch, in-batch negatives only (40 min);
#   2. hard:    + 2 hard negatives per triplet and the auxiliary scene loss, 234 steps;
#   3. final:   the same recipe continued for 624 steps at a higher learning rate;
#   4. more:    the same recipe continued for 936 steps, then precise BatchNorm statistics;
#   5. shape:   + the scene loss read cell by cell from the image tokens, 2496 steps.
# Usage: scripts/train_shipped.sh DATA OUT   (DATA from `cir data shapes DATA --seed 0`)
# Stages already finished in OUT are skipped; the last one is copied into the package.
set -euo pipefail
DATA=${1:?benchmark folder}
OUT=${2:?output folder}
CIR=${CIR:-.venv/bin/cir}
COMMON=(--data "$DATA" --batch-size 64)
mkdir -p "$OUT"

[ -d "$OUT/base/checkpoint" ] || "$CIR" train "${COMMON[@]}" --out "$OUT/base" \
  --model shapes-minilm-conv --epochs 4.5 --max-minutes 40 --hard-negatives 0 \
  --lr 1e-3 --warmup-steps 50 --seed 0
[ -d "$OUT/hard/checkpoint" ] || "$CIR" train "${COMMON[@]}" --out "$OUT/hard" \
  --init-from "$OUT/base/checkpoint" --epochs 0.75 --hard-negatives 2 --scene-loss 0.5 \
  --lr 3e-4 --warmup-steps 20 --seed 0
[ -d "$OUT/final/checkpoint" ] || "$CIR" train "${COMMON[@]}" --out "$OUT/final" \
  --init-from "$OUT/hard/checkpoint" --epochs 2 --max-minutes 42 --hard-negatives 2 \
  --scene-loss 0.5 --lr 5e-4 --warmup-steps 20 --seed 1
[ -d "$OUT/more/checkpoint" ] || "$CIR" train "${COMMON[@]}" --out "$OUT/more" \
  --init-from "$OUT/final/checkpoint" --epochs 3 --max-minutes 70 --hard-negatives 2 \
  --scene-loss 0.5 --lr 3e-4 --warmup-steps 20 --seed 2 --precise-bn 4096
[ -d "$OUT/shape/checkpoint" ] || "$CIR" train "${COMMON[@]}" --out "$OUT/shape" \
  --init-from "$OUT/more/checkpoint" --epochs 8 --max-minutes 80 --hard-negatives 2 \
  --scene-loss 0.5 --token-scene-loss 2.0 --lr 5e-4 --warmup-steps 20 --seed 3 --precise-bn 4096

rm -rf cir_module/checkpoints/shapes-minilm-conv
cp -r "$OUT/shape/checkpoint" cir_module/checkpoints/shapes-minilm-conv
echo "shipped: cir_module/checkpoints/shapes-minilm-conv (from $OUT/shape)"
