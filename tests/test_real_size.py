"""Exports at the real sizes of the checkpoints the README names, with random weights and the
real tokenizers (``tests/real_tokenizers.py``): what breaks at real sizes, found without the
weights. Heavy (minutes and gigabytes each), so outside ``make test``: they carry the
``realsize`` marker, which the default run deselects, and run with

    .venv/bin/python -m pytest -m realsize tests/test_real_size.py -s

Each builds the checkpoint, initialises the pyramid on it (``cir init-model``) and exports it
(``cir export``, fp32, fp16 and int8, every parity check of the export), each step in a
child process whose time, peak memory and disk it prints; the costs measured are in
docs/export-and-gpu.md.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from transformers import AutoTokenizer

from tests.real_tokenizers import build_clip

pytestmark = [pytest.mark.realsize, pytest.mark.timeout(3600)]

# The shapes of openai/clip-vit-base-patch32 and openai/clip-vit-large-patch14 (CLIPTextConfig
# and CLIPVisionConfig arguments).
CLIPS = {
    "ViT-B/32": dict(
        projection_dim=512,
        text=dict(hidden_size=512, intermediate_size=2048, num_hidden_layers=12,
                  num_attention_heads=8),
        vision=dict(hidden_size=768, intermediate_size=3072, num_hidden_layers=12,
                    num_attention_heads=12, patch_size=32),
    ),
    "ViT-L/14": dict(
        projection_dim=768,
        text=dict(hidden_size=768, intermediate_size=3072, num_hidden_layers=12,
                  num_attention_heads=12),
        vision=dict(hidden_size=1024, intermediate_size=4096, num_hidden_layers=24,
                    num_attention_heads=16, patch_size=14),
    ),
}  # fmt: skip


# A child is stopped when the machine's available memory falls below this (GiB), rather
# than let the kernel's OOM killer choose what dies.
MEMORY_FLOOR_GIB = 1.0


def _available_gib() -> float:
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemAvailable:"):
            return int(line.split()[1]) / 2**20
    return float("inf")


def _peak_gib(pid: int) -> float:
    """A live process's peak resident memory so far (its VmHWM), 0 once it is gone."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return 0.0
    line = next((x for x in status.splitlines() if x.startswith("VmHWM:")), "VmHWM: 0 kB")
    return int(line.split()[1]) / 2**20


def _run(args: list[str]) -> dict[str, float]:
    """Run a command; its wall time (s) and peak resident memory (GiB, read every half
    second). It fails, stopped, if the machine runs out of memory first."""
    start, peak = time.perf_counter(), 0.0
    child = subprocess.Popen(args)
    while child.poll() is None:
        peak = max(peak, _peak_gib(child.pid))
        if _available_gib() < MEMORY_FLOOR_GIB:
            child.kill()
            child.wait()
            pytest.fail(f"{args} stopped at {peak:.1f} GiB: under {MEMORY_FLOOR_GIB} GiB left")
        time.sleep(0.5)
    assert child.returncode == 0, args
    return {"seconds": time.perf_counter() - start, "peak_gib": peak}


def _saved_parameters(folder: Path) -> int:
    """Parameters in a folder's safetensors files, read from their headers (this process
    holds no copy of the model)."""
    from safetensors import safe_open

    total = 0
    for file in folder.glob("*.safetensors"):
        with safe_open(str(file), "pt") as weights:
            total += sum(math.prod(weights.get_slice(k).get_shape()) for k in weights.keys())  # noqa: SIM118 (no __iter__)
    return total


def _disk_gib(folder: Path, pattern: str = "*") -> float:
    return sum(p.stat().st_size for p in folder.glob(pattern) if p.is_file()) / 2**30


@pytest.mark.parametrize("name", list(CLIPS))
def test_a_real_size_clip_pyramid_exports_in_every_variant(name, tmp_path):
    clip = build_clip(tmp_path / "clip", **CLIPS[name])
    cir = [sys.executable, "-m", "cir_module.cli"]
    init = _run([*cir, "init-model", "clip-vit-b32-pyramid3", str(tmp_path / "ckpt"),
                 "--pretrained", str(clip)])  # fmt: skip
    out = tmp_path / "onnx"
    export = _run([*cir, "export", str(tmp_path / "ckpt"), str(out),
                   "--variants", "fp32,fp16,int8"])  # fmt: skip
    manifest = json.loads((out / "manifest.json").read_text())
    params = _saved_parameters(clip)
    costs = {
        "model": name,
        "parameters_m": round(params / 1e6, 1),
        "init_model": init,
        "export": export,
        "disk_gib": {v: _disk_gib(out, f"*.{v}.onnx*") for v in ("fp16", "int8")}
        | {"fp32": _disk_gib(out, "image.onnx*") + _disk_gib(out, "text.onnx*")
           + _disk_gib(out, "fusion.onnx*")},
        "external_data": sorted(p.name for p in out.glob("*.data")),
    }  # fmt: skip
    print(json.dumps(costs, indent=1))
    assert manifest["parity"]["fp16"] and manifest["parity"]["int8"]


# The shape of Qwen/Qwen2-VL-2B-Instruct (its config.json).
QWEN2_VL_2B = dict(
    text=dict(
        hidden_size=1536, intermediate_size=8960, num_hidden_layers=28, num_attention_heads=12,
        num_key_value_heads=2, max_position_embeddings=32768, rope_theta=1000000.0,
        rope_scaling={"type": "mrope", "mrope_section": [16, 24, 24]}, tie_word_embeddings=True,
    ),
    vision=dict(
        depth=32, embed_dim=1280, hidden_size=1536, num_heads=16, mlp_ratio=4, patch_size=14,
        spatial_merge_size=2, temporal_patch_size=2,
    ),
)  # fmt: skip


def build_qwen2_vl_2b(folder: Path) -> None:
    """Qwen2-VL-2B's shape with random weights, Qwen2-VL's tokenizer and image processor, set
    up as a change verifier, in ``folder``. Run in a child process
    (``python -m tests.test_real_size FOLDER``), so that its 9 GB are freed before the export."""
    from transformers import Qwen2VLConfig, Qwen2VLForConditionalGeneration, Qwen2VLImageProcessor

    from cir_module.vlm.folder import VLM_SETTINGS
    from tests.real_tokenizers import qwen2_vl_tokenizer_folder

    tokenizer = AutoTokenizer.from_pretrained(qwen2_vl_tokenizer_folder())
    ids = tokenizer.convert_tokens_to_ids
    config = Qwen2VLConfig(
        text_config=dict(vocab_size=151936, **QWEN2_VL_2B["text"]),
        vision_config=QWEN2_VL_2B["vision"],
        image_token_id=ids("<|image_pad|>"),
        video_token_id=ids("<|video_pad|>"),
        vision_start_token_id=ids("<|vision_start|>"),
        vision_end_token_id=ids("<|vision_end|>"),
    )
    torch.manual_seed(0)
    model = Qwen2VLForConditionalGeneration(config)
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    Qwen2VLImageProcessor().save_pretrained(folder)
    # Captions of 24 tokens: random weights never end one, and the parity check writes each
    # twice (torch, onnxruntime) at about a second a token on 2 cores.
    settings = {
        "image_side": 224,
        "verify": "changes",
        "differ": "fact-diff",
        "describe_tokens": 24,
    }
    (folder / VLM_SETTINGS).write_text(json.dumps(settings))


def test_a_real_size_qwen2_vl_change_verifier_exports(tmp_path):
    """Qwen2-VL-2B's shape with random weights as a change verifier: `cir rerank export`
    (vision and decoder graphs, their weights beside them, the int8 verify graph, every parity
    check against torch)."""
    folder, out = tmp_path / "qwen2-vl-2b", tmp_path / "onnx"
    build = _run([sys.executable, "-m", "tests.test_real_size", str(folder)])
    export = _run(
        [sys.executable, "-m", "cir_module.cli", "rerank", "export", str(folder), str(out)]
    )
    costs = {
        "model": "Qwen2-VL-2B",
        "parameters_m": round(_saved_parameters(folder) / 1e6, 1),
        "build_and_save": build,
        "export": export,
        "disk_gib": _disk_gib(out),
        "external_data": sorted(p.name for p in out.glob("*.data")),
    }
    print(json.dumps(costs, indent=1))
    manifest = json.loads((out / "reranker_manifest.json").read_text())
    assert manifest["kind"] == "changes" and manifest["parity"]["captions_equal"] == 1.0


if __name__ == "__main__":
    build_qwen2_vl_2b(Path(sys.argv[1]))
