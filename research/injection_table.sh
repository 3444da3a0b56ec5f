#!/usr/bin/env bash
# PMTFR's training-free injection, measured (docs/results.md, issue 19): RAug-Rep extracted
# from template reasoning paths of the training split (mean and pca; read in the judge's own
# prompt, and in the paper's text-only turn), injected into a P(YES) judge (`cir vlm train
# --stage judge`) at every alpha on all layers and at alpha 0.6 on the first, middle and last
# layer, each fused at every lambda over the first stage's top 10. Each sweep also runs both
# controls (the reasoning path written in the prompt; a random vector of the same norms at
# each setting). Every row is read against no injection (dR@1 with a paired bootstrap
# interval, mean |dP|) and its change of P(YES) correlated with the written path's.
# Each step is skipped when its output exists, so the same command resumes.
# Usage: research/injection_table.sh DATA JUDGE OUT [QUERIES] [FORMS...]
set -euo pipefail
DATA=${1:?benchmark folder}
JUDGE=${2:?judge checkpoint folder}
OUT=${3:?output folder}
QUERIES=${4:-1000}
shift $(( $# < 4 ? $# : 4 ))
FORMS=("${@:-prompt}")
CIR=${CIR:-.venv/bin/cir}
FIRST=${FIRST:-cir_module/checkpoints/shapes-hard-conv}
mkdir -p "$OUT"
[ -f "$OUT/cot.jsonl" ] || "$CIR" rerank cot --data "$DATA" --out "$OUT/cot.jsonl" --limit 256
for form in "${FORMS[@]}"; do
  for method in mean pca; do
    name=$form-$method
    [ -f "$OUT/raug-$name.safetensors" ] || "$CIR" raug extract --reranker "$JUDGE" \
      --data "$OUT/cot.jsonl" --out "$OUT/raug-$name.safetensors" --method "$method" --form "$form"
    [ -f "$OUT/table-$name.json" ] || "$CIR" rerank eval --first-stage "$FIRST" \
      --reranker "$JUDGE" --raug "$OUT/raug-$name.safetensors" --data "$DATA" --split test \
      --limit "$QUERIES" --k 10 --alphas 0.3 0.6 1 2 --layer-alpha 0.6 \
      --lambdas 0.03 0.06 0.1 0.3 1 100 --controls --json-out "$OUT/table-$name.json" \
      | tee "$OUT/table-$name.txt"
  done
done
