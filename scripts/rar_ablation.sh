#!/usr/bin/env bash
# The RAR four-way ablation on the synthetic benchmark (docs/results.md): the shipped model
# fine-tuned under one budget on plain, corpus-enriched, query-enhanced and both data, each
# evaluated through Weaviate on matching data, plus enrichment at inference only.
# Usage: scripts/rar_ablation.sh DATA OUT [EPOCHS]   (DATA from `cir data shapes`)
#   VLM=runs/vlm/caption/model scripts/rar_ablation.sh ...   captions by the VLM trained here
#   (training: the train split's triplet targets; evaluation: every gallery image) instead of
#   the scene-graph captioner with injected noise.
# A step budget, not a time budget, so that a busy machine does not favour one row.
set -euo pipefail
DATA=${1:?benchmark folder}
OUT=${2:?output folder}
EPOCHS=${3:-0.75}
CIR=${CIR:-.venv/bin/cir}
BASE=${BASE:-cir_module/checkpoints/shapes-minilm-conv}
SEED=${SEED:-0}
if [ -n "${VLM:-}" ]; then
  CAPTIONER=(--captioner vlm --model "$VLM")
  TRAIN_CAPTIONS=(--split train --targets-only)   # resumable: a rerun continues the file
else
  CAPTIONER=(--drop 0.1 --wrong 0.1)   # the scene-graph captioner's stand-in for VLM mistakes
  TRAIN_CAPTIONS=()
fi
mkdir -p "$OUT"
if [ -n "${VLM:-}" ] || [ ! -f "$OUT/captions.json" ]; then
  "$CIR" rar captions --data "$DATA" "${CAPTIONER[@]}" "${TRAIN_CAPTIONS[@]}" --out "$OUT/captions.json"
fi

train() {  # name, extra train flags...
  local name=$1; shift
  [ -d "$OUT/$name/checkpoint" ] || "$CIR" train --data "$DATA" --out "$OUT/$name" \
    --init-from "$BASE" --epochs "$EPOCHS" --batch-size 64 \
    --hard-negatives 0 --lr 3e-4 --warmup-steps 20 --seed "$SEED" "$@"
}
train none
train corpus --captions "$OUT/captions.json"
train query --enhance keywords
train both --captions "$OUT/captions.json" --enhance keywords

evaluate() {  # row name, checkpoint, eval flags...
  local row=$1 ckpt=$2; shift 2
  [ -f "$OUT/eval-$row.json" ] || "$CIR" rar eval "$OUT/$ckpt/checkpoint" --data "$DATA" \
    --split test "${CAPTIONER[@]}" --json-out "$OUT/eval-$row.json" "$@"
}
evaluate none none
evaluate corpus corpus --enrich-corpus
evaluate query query --enhance keywords
evaluate both both --enrich-corpus --enhance keywords
evaluate inference-only-corpus none --enrich-corpus
evaluate inference-only-both none --enrich-corpus --enhance keywords
cat "$OUT"/eval-*.json
