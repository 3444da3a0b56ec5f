#!/usr/bin/env bash
# The CIR-LVLM ablation of docs/results.md (issue 21): the lvlm family on the hard tier, one
# component changed per row, every row the same budget (STEPS optimizer steps at batch 32),
# then evaluated in-process on the test split. VLM is the vision-language model it starts
# from (e.g. `cir vlm train --stage caption`'s runs/vlm/caption/model). Usage:
#   scripts/lvlm_ablation.sh DATA_DIR OUT_DIR SEED VLM [RUN ...]
# RUN is one of: lvlm notask nopool pool4 pool32 last mean m1 dual (default: all).
# Results: OUT_DIR/<run>-s<SEED>.json; the configs it trained: OUT_DIR/<run>.json.
set -euo pipefail
data=${1:?data dir}; out=${2:?out dir}; seed=${3:?seed}; vlm=${4:?vlm folder}; shift 4
runs=("$@"); [ ${#runs[@]} -gt 0 ] || runs=(lvlm notask nopool pool4 pool32 last mean m1 dual)
STEPS=${STEPS:-150}
cir=${CIR:-.venv/bin/cir}; python=${PYTHON:-.venv/bin/python}
mkdir -p "$out"
epochs=$("$python" -c "print($STEPS * 32 / 20000)")
for run in "${runs[@]}"; do
  # One override of the registered lvlm config per row (architectures as data).
  case $run in
    lvlm) change='{}' ;;
    notask) change='{"lvlm": {"task_prompt": false}}' ;;
    nopool) change='{"lvlm": {"pool_size": 0}}' ;;
    pool4) change='{"lvlm": {"pool_size": 4}}' ;;
    pool32) change='{"lvlm": {"pool_size": 32}}' ;;
    last) change='{"lvlm": {"pooling": "last"}}' ;;
    mean) change='{"lvlm": {"pooling": "mean"}}' ;;
    m1) change='{"pyramid": {"num_scales": 1}}' ;;
    dual) change='' ;;
    *) echo "unknown run $run" >&2; exit 2 ;;
  esac
  dir=$out/$run-s$seed
  if [ "$run" = dual ]; then  # the dual encoder, from scratch, as the shipped first stage
    args=(--model shapes-minilm-conv --lr 1e-3 --hard-negatives 2)
  else
    "$python" - "$change" "$out/$run.json" <<'PY'
import json, sys
from cir_module.models import get_model_config
config = get_model_config("lvlm").to_dict()
for part, values in json.loads(sys.argv[1]).items():
    config[part].update(values)
config["name"] = "lvlm-" + sys.argv[2].rsplit("/", 1)[-1].removesuffix(".json")
json.dump(config, open(sys.argv[2], "w"), indent=2)
PY
    args=(--model "$out/$run.json" --pretrained "$vlm" --lr 2e-4 --hard-negatives 2)
  fi
  "$cir" train --data "$data" --out "$dir" --epochs "$epochs" --batch-size 32 \
    --warmup-steps 15 --seed "$seed" --save-every 100000 "${args[@]}"
  "$cir" eval "$dir/checkpoint" --data "$data" --split test --json-out "$out/$run-s$seed.json"
done
