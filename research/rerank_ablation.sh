#!/usr/bin/env bash
# The reranker ablation of docs/results.md: train the small Qwen2-VL-type reranker from
# scratch, extract RAug-Rep from template reasoning paths, export it to ONNX, then sweep
# injection settings and lambda over Weaviate's first stage, with one setting run through
# Weaviate's rerank (served by onnxruntime).
# Usage: research/rerank_ablation.sh DATA OUT [STEPS] [MINUTES] [QUERIES]
set -euo pipefail
DATA=${1:?benchmark folder}
OUT=${2:?output folder}
STEPS=${3:-3000}
MINUTES=${4:-32}
QUERIES=${5:-500}
CIR=${CIR:-.venv/bin/cir}
FIRST=${FIRST:-cir_module/checkpoints/shapes-minilm-conv}
mkdir -p "$OUT"
[ -f "$OUT/model/cir_reranker.json" ] || "$CIR" rerank train --data "$DATA" --out "$OUT" --steps "$STEPS" \
  --max-minutes "$MINUTES" --group 4 --easy-negatives 0.34
[ -f "$OUT/cot.jsonl" ] || "$CIR" rerank cot --data "$DATA" --out "$OUT/cot.jsonl" --limit 256
[ -f "$OUT/raug.safetensors" ] || "$CIR" raug extract --reranker "$OUT/model" \
  --data "$OUT/cot.jsonl" --out "$OUT/raug.safetensors"
[ -f "$OUT/onnx/reranker_manifest.json" ] || "$CIR" rerank export "$OUT/model" "$OUT/onnx"
"$CIR" rerank eval --weaviate --first-stage "$FIRST" --reranker "$OUT/model" \
  --raug "$OUT/raug.safetensors" --serve "$OUT/onnx" --data "$DATA" --split test \
  --limit "$QUERIES" --k 10 --json-out "$OUT/ablation.json"
