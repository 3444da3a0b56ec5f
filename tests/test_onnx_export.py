"""ONNX export of tiny random models: checker, parity with torch, variants, manifest, and the
service running the export on onnxruntime over HTTP."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import httpx
import numpy as np
import pytest
import torch

from cir_module import compose_query
from cir_module.models import CIRModel, create_model, load_model
from cir_module.models.onnx_model import OnnxCIRModel, choose_providers
from integration.service_process import ServiceProcess
from onnx_export import ParityError, export_checkpoint
from onnx_export.validate import FP32_ATOL, VARIANT_MIN_COSINE, parity_inputs
from tests.conftest import cross_fusion_conv_stem, png_b64, scene_images

pytest.importorskip("onnx", reason="the export extra is not installed")


MODELS = {
    "tiny-clip": lambda: create_model("tiny-clip"),
    "tiny-siglip": lambda: create_model("tiny-siglip"),
    "tiny-clip-cross-conv": cross_fusion_conv_stem,
}


@pytest.fixture(scope="module", params=sorted(MODELS))
def exported(request, tmp_path_factory) -> tuple[CIRModel, Path, dict]:
    root = tmp_path_factory.mktemp(request.param)
    torch.manual_seed(0)  # the same random weights whichever tests ran before
    model = MODELS[request.param]()
    model.save_pretrained(root / "ckpt")
    manifest = export_checkpoint(root / "ckpt", root / "onnx", variants=("fp32", "fp16", "int8"))
    return load_model(root / "ckpt"), root / "onnx", manifest


def _min_cosine(a: np.ndarray, b: np.ndarray) -> float:
    return float(((a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)).min())


def test_fp32_graphs_match_torch(exported):
    _, folder, manifest = exported
    graph_parity = manifest["parity"]["graphs"]
    for graph in ("image", "text", "fusion"):
        assert set(graph_parity[graph]) == {"trace", "random", "real"}
        assert max(graph_parity[graph].values()) <= FP32_ATOL
    on_disk = json.loads((folder / "manifest.json").read_text())
    assert on_disk["parity"] == json.loads(json.dumps(manifest["parity"]))


def test_served_vectors_match_torch_for_every_variant(exported):
    model, folder, _ = exported
    for variant in ("fp32", "fp16", "int8"):
        served = OnnxCIRModel(folder, variant, providers=["CPUExecutionProvider"])
        assert served.provider == "CPUExecutionProvider"
        for images, texts in parity_inputs(seed=5).values():  # not the export's own inputs
            for ours, theirs in [
                (served.embed_images(images), model.embed_images(images)),
                (served.embed_texts(texts), model.embed_texts(texts)),
                (served.embed_composed(images, texts), model.embed_composed(images, texts)),
            ]:
                assert ours.shape == theirs.shape and ours.dtype == np.float32
                if variant == "fp32":
                    np.testing.assert_allclose(ours, theirs, atol=FP32_ATOL)
                # The export's own check guarantees this on its inputs; seed 5 is a fresh draw,
                # so allow a hair below the shipping threshold.
                assert _min_cosine(ours, theirs) >= VARIANT_MIN_COSINE - 5e-4, variant


def test_manifest_describes_files_and_preprocessing(exported):
    model, folder, manifest = exported
    assert manifest["model"]["name"] == model.config.name
    assert manifest["opset"] == 18
    assert manifest["preprocessing"]["image_size"] == model.preprocess.image_size
    image_io = manifest["graphs"]["image"]
    assert image_io["inputs"][0]["name"] == "pixel_values"
    assert image_io["inputs"][0]["shape"][0] == "batch"  # dynamic batch axis
    for variant, entry in manifest["variants"].items():
        for graph, name in entry["files"].items():
            digest = hashlib.sha256((folder / name).read_bytes()).hexdigest()
            assert entry["sha256"][graph] == digest, (variant, graph)
    # An int8 graph that missed the tolerance is served in fp32, and the manifest says why.
    kept = manifest["parity"]["int8"].get("kept_fp32", {})
    for graph, name in manifest["variants"]["int8"]["files"].items():
        assert name.endswith(".int8.onnx") != (graph in kept)
        if graph in kept:
            assert "cosine" in kept[graph]


def test_graphs_too_large_for_one_protobuf_keep_their_weights_beside_them(tmp_path, monkeypatch):
    """A graph whose weights pass the protobuf's limit (here: any weights at all) is written,
    in every variant, with its weights in ``<graph>.onnx.data``; the export's parity checks
    pass on onnxruntime reading them from there, the graph files hold no weights, and the
    manifest's digest covers the weights."""
    import onnx

    import onnx_export.graph_files as graph_files

    monkeypatch.setattr(graph_files, "EXTERNAL_DATA_ABOVE", 0)
    torch.manual_seed(0)
    model = create_model("tiny-clip")
    model.save_pretrained(tmp_path / "ckpt")
    out = tmp_path / "onnx"
    manifest = export_checkpoint(tmp_path / "ckpt", out, variants=("fp32", "fp16", "int8"))
    assert not manifest["parity"]["int8"].get("kept_fp32")
    for variant, entry in manifest["variants"].items():
        for graph, name in entry["files"].items():
            bare = onnx.load(str(out / name), load_external_data=False)
            inline = [t for t in bare.graph.initializer if t.data_location != 1]
            assert len(inline) < len(bare.graph.initializer), (variant, graph)
            assert all(len(t.raw_data) < 1024 for t in inline)  # only small tensors stay
            assert (out / f"{name}.data").is_file()
            together = (out / name).read_bytes() + (out / f"{name}.data").read_bytes()
            assert entry["sha256"][graph] == hashlib.sha256(together).hexdigest()
    served = OnnxCIRModel(out, "fp16", providers=["CPUExecutionProvider"])
    images, texts = parity_inputs(seed=5)["real"]
    assert (
        _min_cosine(served.embed_composed(images, texts), model.embed_composed(images, texts))
        > 0.99
    )
    # Nothing left over from the tracer's one-file-per-tensor form.
    assert {p.suffix for p in out.iterdir()} <= {".onnx", ".data", ".json", ".txt"}


def test_failed_parity_raises_and_leaves_no_manifest(tmp_path, monkeypatch):
    import onnx_export.validate as validate

    create_model("tiny-clip").save_pretrained(tmp_path / "ckpt")
    monkeypatch.setattr(validate, "FP32_ATOL", 0.0)  # no export is bit-exact
    with pytest.raises(ParityError, match="differs from torch"):
        export_checkpoint(tmp_path / "ckpt", tmp_path / "onnx", variants=("fp32",))
    assert not (tmp_path / "onnx" / "manifest.json").exists()


def test_bad_requests_to_the_runtime(exported, tmp_path):
    _, folder, _ = exported
    with pytest.raises(ValueError, match="no 'int4' variant"):
        OnnxCIRModel(folder, "int4")
    with pytest.raises(FileNotFoundError, match="not an ONNX export"):
        OnnxCIRModel(tmp_path)
    with pytest.raises(ValueError, match="must include fp32"):
        export_checkpoint(folder, tmp_path / "x", variants=("int8",))


def test_provider_choice_falls_back_to_cpu(caplog):
    chosen = choose_providers(["CUDAExecutionProvider"])
    names = [c if isinstance(c, str) else c[0] for c in chosen]
    assert names[-1] == "CPUExecutionProvider"
    import onnxruntime

    if "CUDAExecutionProvider" not in onnxruntime.get_available_providers():
        assert names == ["CPUExecutionProvider"]
        assert "CUDAExecutionProvider is not in this onnxruntime" in caplog.text
    assert [c if isinstance(c, str) else c[0] for c in choose_providers()][-1] == (
        "CPUExecutionProvider"
    )


def _without_torch(folder: Path) -> dict[str, str]:
    """The environment of a child Python in which ``import torch`` fails, as on a host where
    torch is not installed (a ``sitecustomize`` that blocks it, first on the path)."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "sitecustomize.py").write_text("import sys\n\nsys.modules['torch'] = None\n")
    path = [str(folder), *filter(None, [os.environ.get("PYTHONPATH")])]
    env = {"PYTHONPATH": os.pathsep.join(path)}
    probe = subprocess.run(
        [sys.executable, "-c", "import torch"], env={**os.environ, **env}, capture_output=True
    )
    assert b"import of torch halted" in probe.stderr, "torch is not blocked"
    return env


@pytest.mark.integration
def test_service_runs_the_export_over_http_without_torch(exported, tmp_path):
    """``cir serve`` with an export needs no torch: started where ``import torch`` fails, it
    answers as the export does in a process with torch, and as the torch model within the
    export's tolerance."""
    model, folder, _ = exported
    images = scene_images(3, seed=3)
    b64 = [png_b64(img) for img in images]
    texts = ["make the circle red", "remove the square", "add a large star"]
    query = compose_query(b64[0], texts[0])
    env = {
        "CIR_ONNX_EXPORT": str(folder),
        "CIR_ONNX_VARIANT": "fp32",
        **_without_torch(tmp_path / "no-torch"),
    }
    with ServiceProcess(folder, env=env) as service:
        meta = httpx.get(f"{service.url}/meta").json()
        assert meta["backend"] == "onnxruntime"
        assert meta["model"]["provider"] == "CPUExecutionProvider"
        assert meta["model"]["variant"] == "fp32"
        body = {"texts": [*texts, query], "images": b64}
        answer = httpx.post(f"{service.url}/vectorize", json=body, timeout=60).json()
        body = {"query": query, "documents": [*b64, texts[1]]}
        reranked = httpx.post(f"{service.url}/rerank", json=body, timeout=60).json()
    text_vecs, image_vecs = np.array(answer["textVectors"]), np.array(answer["imageVectors"])
    scores = np.array([s["score"] for s in reranked["scores"]])

    # The same export in this process, where torch is loaded: the same vectors and scores.
    local = OnnxCIRModel(folder, "fp32", providers=["CPUExecutionProvider"])
    composed = local.embed_composed(images[:1], texts[:1])
    np.testing.assert_allclose(image_vecs, local.embed_images(images), atol=1e-6)
    np.testing.assert_allclose(text_vecs[:3], local.embed_texts(texts), atol=1e-6)
    np.testing.assert_allclose(text_vecs[3], composed[0], atol=1e-6)
    # Image documents score against the composed vector, a text one against the modification.
    image_scores = local.embed_images(images) @ composed[0]
    text_score = local.embed_texts(texts[1:2])[0] @ local.embed_texts(texts[:1])[0]
    np.testing.assert_allclose(scores, [*image_scores, text_score], atol=1e-5)

    # And the torch model's vectors, within the export's fp32 tolerance.
    np.testing.assert_allclose(image_vecs, model.embed_images(images), atol=FP32_ATOL)
    np.testing.assert_allclose(text_vecs[:3], model.embed_texts(texts), atol=FP32_ATOL)
    np.testing.assert_allclose(
        text_vecs[3], model.embed_composed(images[:1], texts[:1])[0], atol=FP32_ATOL
    )
