#!/usr/bin/env bash
# The trained VLM captions a stored collection (docs/results.md, issue 20): `cir ingest --enrich`
# in two runs (the second skips what the first captioned), `cir enrich` over the collection,
# then the same on Ray Data, and the stored captions against the scene graphs.
# Usage: scripts/vlm_enrich.sh [N_IMAGES]   (needs runs/vlm/caption/model and .cache/data/hard-s0)
set -euo pipefail
N=${1:-120}
CIR=${CIR:-.venv/bin/cir}
PY=${PY:-.venv/bin/python}
MODEL=${MODEL:-runs/vlm/caption/model}
DATA=${DATA:-.cache/data/hard-s0}
OUT=${OUT:-runs/rar-vlm}
W=(--weaviate http://127.0.0.1:8095 --grpc-port 50065)
E=(--port 8095 --grpc-port 50065)
VLM=(--captioner vlm --model "$MODEL")
IMAGES=$(mktemp -d)
for i in $(seq 0 $((N - 1))); do ln -s "$PWD/$DATA/images/test/shapes-test-$i.png" "$IMAGES/"; done
mkdir -p "$OUT"
"$CIR" up --checkpoint cir_module/checkpoints/shapes-hard-conv --weaviate-port 8095 \
  --grpc-port 50065 > "$OUT/vlm-enrich-up.log" 2>&1 &
UP=$!
trap 'kill $UP; wait $UP; rm -rf "$IMAGES"' EXIT
for _ in $(seq 120); do curl -sf 127.0.0.1:8095/v1/.well-known/ready > /dev/null && break; sleep 2; done
"$CIR" ingest "$IMAGES" --collection HardVlm "${W[@]}" --limit $((N / 2)) --enrich "${VLM[@]}"
"$CIR" ingest "$IMAGES" --collection HardVlm "${W[@]}" --enrich "${VLM[@]}"
"$CIR" enrich --collection HardVlm "${E[@]}" "${VLM[@]}"
"$CIR" ingest "$IMAGES" --collection HardVlmRay "${W[@]}" --limit 1 --enrich "${VLM[@]}"
"$CIR" ingest "$IMAGES" --collection HardVlmRay "${W[@]}"
"$CIR" enrich --collection HardVlmRay "${E[@]}" "${VLM[@]}" --ray --ray-actors 2
for c in HardVlm HardVlmRay; do
  "$PY" scripts/stored_captions.py --collection $c "${E[@]}" --out "$OUT/weaviate-$c.json"
  "$CIR" rar faithfulness "$OUT/weaviate-$c.json" --data "$DATA"
done
"$PY" - "$OUT/weaviate-HardVlm.json" "$OUT/weaviate-HardVlmRay.json" <<'PY'
import json, sys
one, ray = (json.load(open(p)) for p in sys.argv[1:])
same = sum(one.get(k) == c for k, c in ray.items())
print(f"single process and Ray: {same} of {len(ray)} captions identical")
PY
