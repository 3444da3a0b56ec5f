"""The change verifier exported to ONNX (``cir rerank export`` of a verify folder): its
captioner and its verdicts agree with torch, and the CPU service, where torch cannot be
imported, reranks with it over HTTP: image documents (captioned by the export) and stored
captions alike."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import numpy as np
import pytest
import torch

from cir_module import compose_query
from cir_module.models import create_model
from cir_module.models.onnx_model import OnnxCIRModel
from cir_module.rerank.load import load_reranker
from cir_module.rerank.onnx_verifier import OnnxChangeVerifier
from cir_module.rerank.tiny import build_tiny_reranker
from cir_module.rerank.verify import ChangeVerifyingReranker
from cir_module.vlm.folder import SERVED_WITH, VLM_SETTINGS
from integration.service_process import ServiceProcess
from onnx_export import export_checkpoint
from onnx_export.reranker import RERANK_ATOL, export_reranker
from tests.conftest import png_b64, scene_images
from tests.test_onnx_export import _without_torch

pytest.importorskip("onnx", reason="the export extra is not installed")

TEXT = "make the large circle red"


@pytest.fixture(scope="module")
def verifier(tmp_path_factory) -> Path:
    """A random-weight change verifier of the hard tier's side, recording its differ, the
    per-change read-out and a lambda (as a recipe's folder does)."""
    folder = build_tiny_reranker(tmp_path_factory.mktemp("verifier"), [TEXT], seed=0)
    settings = {
        "image_side": 112,
        "verify": "changes",
        "differ": "fact-diff",
        "asked_readout": True,
        SERVED_WITH: {"lambda": 1.5, "k": 10},
    }
    (folder / VLM_SETTINGS).write_text(json.dumps(settings))
    return folder


@pytest.fixture(scope="module")
def exports(verifier, tmp_path_factory) -> tuple[Path, Path, dict]:
    root = tmp_path_factory.mktemp("exports")
    torch.manual_seed(0)
    create_model("tiny-clip").save_pretrained(root / "first-stage")
    export_checkpoint(root / "first-stage", root / "first-stage-onnx", variants=("fp32",))
    manifest = export_reranker(verifier, root / "verifier-onnx")
    return root / "first-stage-onnx", root / "verifier-onnx", manifest


def test_the_export_writes_torchs_captions_and_verdicts(verifier, exports):
    _, folder, manifest = exports
    assert manifest["kind"] == "changes" and manifest["parity"]["captions_equal"] == 1.0
    assert max(manifest["parity"]["p_yes_captions"], manifest["parity"]["p_yes_descriptions"]) <= (
        RERANK_ATOL
    )
    ours, torch_verifier = load_reranker(folder), load_reranker(verifier)
    assert isinstance(ours, OnnxChangeVerifier)
    assert isinstance(torch_verifier, ChangeVerifyingReranker)
    assert ours.describe()[SERVED_WITH]["lambda"] == 1.5 and ours.differ == "fact-diff"
    images = scene_images(4, seed=1)
    assert ours.captions(images) == torch_verifier.captions(images)
    assert ours.captioned == 4 and ours.captions(images[:2]) and ours.captioned == 4  # cached
    np.testing.assert_allclose(
        ours.score(images[0], TEXT, images[1:]),
        torch_verifier.score(images[0], TEXT, images[1:]),
        atol=RERANK_ATOL,
    )


@pytest.mark.integration
def test_the_cpu_service_reranks_with_the_exported_verifier_without_torch(
    verifier, exports, tmp_path
):
    first_stage, folder, _ = exports
    images = scene_images(4, seed=2)
    b64 = [png_b64(im) for im in images]
    torch_verifier = load_reranker(verifier)
    captions = torch_verifier.captions(images)
    env = {
        "CIR_ONNX_EXPORT": str(first_stage),
        "CIR_ONNX_VARIANT": "fp32",
        "CIR_RERANKER_MODEL": str(folder),  # no CIR_RERANKER_LAMBDA: the folder's 1.5
        **_without_torch(tmp_path / "no-torch"),
    }
    with ServiceProcess(first_stage, env=env) as service:
        meta = httpx.get(f"{service.url}/meta").json()
        assert meta["reranker"]["runtime"] == "onnxruntime" and meta["reranker"]["lambda"] == 1.5
        query = compose_query(b64[0], TEXT)
        by_image = httpx.post(
            f"{service.url}/rerank", json={"query": query, "documents": b64[1:]}, timeout=60
        ).json()
        query = compose_query(b64[0], TEXT, caption=captions[0])
        by_caption = httpx.post(
            f"{service.url}/rerank", json={"query": query, "documents": captions[1:]}, timeout=60
        ).json()
    local = OnnxCIRModel(first_stage, "fp32", providers=["CPUExecutionProvider"])
    composed = local.embed_composed(images[:1], [TEXT])[0]
    judged = torch_verifier.score(images[0], TEXT, images[1:])
    caption_scores = np.array([s["score"] for s in by_caption["scores"]])
    cosine = local.embed_texts(captions[1:]) @ composed
    np.testing.assert_allclose(caption_scores - cosine, 1.5 * judged, atol=2 * RERANK_ATOL)
    # An image document is scored as its caption would be (the export captions it as torch).
    image_scores = np.array([s["score"] for s in by_image["scores"]])
    np.testing.assert_allclose(image_scores, caption_scores, atol=2 * RERANK_ATOL)
