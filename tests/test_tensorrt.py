"""TensorRT's options: one optimisation profile per exported graph from the manifest's
recorded inputs and the service's batch settings, fp16 engines, the engine and timing cache;
every TensorRT setting reaches the sessions of the first stage and of the verifier's export.

No TensorRT runs here. onnxruntime-gpu lists TensorRT among its providers whether or not its
libraries are present and falls back to the next provider; the tests below stand in for that
by listing it beside the CPU build's own provider, and read the options each session was
opened with."""

from __future__ import annotations

import json
from pathlib import Path

import onnxruntime
import pytest
import torch

from cir_module.models import create_model
from cir_module.models.tensorrt import TENSORRT, TensorRTShapes, profile_options
from cir_module.settings import ServiceSettings
from onnx_export import export_checkpoint


@pytest.fixture(scope="module")
def export(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("trt")
    torch.manual_seed(0)
    create_model("tiny-clip").save_pretrained(root / "checkpoint")
    export_checkpoint(root / "checkpoint", root / "onnx", variants=("fp32",))
    return root / "onnx"


@pytest.fixture
def tensorrt_listed(monkeypatch):
    """onnxruntime as onnxruntime-gpu presents itself: TensorRT listed first."""
    available = onnxruntime.get_available_providers()
    monkeypatch.setattr(onnxruntime, "get_available_providers", lambda: [TENSORRT, *available])


def _trt_options(providers) -> dict:
    (options,) = [p[1] for p in providers if isinstance(p, tuple) and p[0] == TENSORRT]
    return options


def test_each_graph_gets_a_profile_over_its_dynamic_axes(export):
    manifest = json.loads((export / "manifest.json").read_text())
    image_side = manifest["preprocessing"]["image_size"]
    length = manifest["text"]["max_length"]
    shapes = TensorRTShapes.for_service(opt_batch=4, max_batch=16, max_sequence=length)
    image = profile_options(manifest["graphs"]["image"]["inputs"], shapes)
    assert image == {
        f"trt_profile_{which}_shapes": f"pixel_values:{batch}x3x{image_side}x{image_side}"
        for which, batch in (("min", 1), ("opt", 4), ("max", 16))
    }
    text = profile_options(manifest["graphs"]["text"]["inputs"], shapes)
    for which, (batch, sequence) in {
        "min": (1, 1),
        "opt": (4, length),
        "max": (16, length),
    }.items():
        wanted = f"{batch}x{sequence}"
        assert text[f"trt_profile_{which}_shapes"] == f"input_ids:{wanted},attention_mask:{wanted}"
    # A graph with only static inputs needs no profile; an axis with no known range gets
    # none (the engine is then built per shape, with a warning).
    assert profile_options([{"name": "x", "shape": [2, 3]}], shapes) == {}
    assert profile_options([{"name": "kv", "shape": ["batch", "past"]}], shapes) is None
    # The opt batch never exceeds the most a forward holds.
    assert TensorRTShapes.for_service(64, 32, 77).batch == (1, 32, 32)


@pytest.mark.parametrize("fp16", [True, False])
def test_the_service_hands_tensorrt_its_settings(export, tmp_path, tensorrt_listed, fp16):
    from cir_module.service.app import _load_model

    settings = ServiceSettings(
        onnx_export=str(export),
        trt_cache_dir=str(tmp_path / "trt"),
        trt_fp16=fp16,
        trt_opt_batch=4,
        max_batch_size=16,
    )
    model = _load_model(settings)
    for graph in ("image", "text", "fusion"):
        options = _trt_options(model.session_providers[graph])
        assert options["trt_fp16_enable"] is fp16
        assert (
            options["trt_engine_cache_path"]
            == options["trt_timing_cache_path"]
            == str(tmp_path / "trt")
        )
    text = _trt_options(model.session_providers["text"])
    assert text["trt_profile_opt_shapes"].startswith("input_ids:4x")
    assert text["trt_profile_max_shapes"].startswith("input_ids:16x")
    assert (tmp_path / "trt").is_dir()
    # It still serves (on the CPU here: TensorRT is only listed).
    assert model.embed_texts(["make it red"]).shape == (1, model.dim)


def test_the_verifiers_export_takes_the_tensorrt_settings(tmp_path, tensorrt_listed):
    from cir_module.rerank.load import load_reranker
    from cir_module.rerank.tiny import build_tiny_reranker
    from onnx_export.reranker import export_reranker

    folder = build_tiny_reranker(tmp_path / "verifier", ["make it red"], seed=0)
    settings = {"image_side": 112, "verify": "changes", "differ": "fact-diff"}
    (folder / "cir_reranker.json").write_text(json.dumps(settings))
    export_reranker(folder, tmp_path / "onnx")
    for fp16 in (True, False):
        opened = load_reranker(tmp_path / "onnx", trt_cache=tmp_path / "trt", trt_fp16=fp16)
        options = _trt_options(opened._providers)
        assert options["trt_fp16_enable"] is fp16
        assert options["trt_engine_cache_path"] == str(tmp_path / "trt")
