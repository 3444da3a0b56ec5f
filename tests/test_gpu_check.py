"""The prepared GPU check (``scripts/gpu_check.sh``) where there is no GPU: the one path that
runs here. It must skip every GPU step with a reason, record torch and end on its verdict."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]


def test_without_a_gpu_every_gpu_step_is_skipped_and_the_verdict_says_so(tmp_path):
    env = {**os.environ, "PYTHON": sys.executable, "CUDA_VISIBLE_DEVICES": ""}
    run = subprocess.run(
        ["bash", str(ROOT / "scripts/gpu_check.sh"), str(tmp_path)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert run.returncode == 0, run.stdout + run.stderr
    last = run.stdout.strip().splitlines()[-1]
    assert last == (
        f"verdict: no GPU (torch.cuda.is_available() is False; torch {torch.__version__})"
    )
    report = json.loads((tmp_path / "gpu_check.json").read_text())
    steps = report["steps"]
    assert steps["environment"]["status"] == "ok"
    assert steps["environment"]["torch"] == torch.__version__
    assert steps["environment"]["cuda_available"] is False
    others = {name: record for name, record in steps.items() if name != "environment"}
    assert {"first_stage", "verifier", "service", "training"} <= set(others)
    for name, record in others.items():
        assert record["status"] == "skipped", (name, record)
        assert record["why"], name
    assert report["verdict"] == last
