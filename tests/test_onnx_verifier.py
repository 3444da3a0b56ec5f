"""The change verifier exported to ONNX (``cir rerank export`` of a verify folder): its
captioner and its verdicts agree with torch, and the CPU service, where torch cannot be
imported, reranks with it over HTTP: image documents (captioned by the export) and stored
captions alike."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import httpx
import numpy as np
import pytest
import torch

from cir_module import compose_query
from cir_module.models import create_model
from cir_module.models.onnx_model import OnnxCIRModel
from cir_module.rerank.load import load_reranker
from cir_module.rerank.onnx_verifier import INT8_DECODER, OnnxChangeVerifier
from cir_module.rerank.tiny import build_tiny_reranker
from cir_module.rerank.verify import ChangeVerifyingReranker
from cir_module.vlm.folder import SERVED_WITH, VLM_SETTINGS
from integration.service_process import ServiceProcess
from onnx_export import export_checkpoint
from onnx_export.reranker import RERANK_ATOL, export_reranker
from onnx_export.verifier import INT8_ATOL
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
    # Stored captions taken as its own (the enrichment job's): nothing is captioned for them.
    stored = scene_images(2, seed=5)
    ours.remember_captions(stored, ["large solid red circle at row 1, column 1", " x "])
    assert ours.captions(stored) == ["large solid red circle at row 1, column 1", "x"]
    assert ours.captioned == 4
    np.testing.assert_allclose(
        ours.score(images[0], TEXT, images[1:]),
        torch_verifier.score(images[0], TEXT, images[1:]),
        atol=RERANK_ATOL,
    )


def test_the_int8_verify_graph_scores_near_torch_and_captions_in_fp32(verifier, exports, tmp_path):
    _, folder, manifest = exports
    parity = manifest["parity"]
    assert 0 < max(parity["int8_p_yes_captions"], parity["int8_p_yes_descriptions"]) <= INT8_ATOL
    fp32, int8 = load_reranker(folder), load_reranker(folder, precision="int8")
    assert fp32.describe()["precision"] == "fp32" and int8.describe()["precision"] == "int8"
    images = scene_images(4, seed=3)
    assert int8.captions(images) == fp32.captions(images)  # captions stay the fp32 graph's
    got, want = int8.score(images[0], TEXT, images[1:]), fp32.score(images[0], TEXT, images[1:])
    assert np.abs(got - want).max() <= INT8_ATOL and not np.array_equal(got, want)
    # An export made before int8 verify graphs is refused at int8, by name, and serves fp32.
    old = tmp_path / "old-export"
    shutil.copytree(folder, old)
    (old / INT8_DECODER).unlink()
    with pytest.raises(FileNotFoundError, match="export it again"):
        load_reranker(old, precision="int8")
    assert load_reranker(old).precision == "fp32"
    # torch runs a verifier's checkpoint in fp32 only: asking it for int8 is an error.
    with pytest.raises(ValueError, match="ONNX export"):
        load_reranker(verifier, precision="int8")


def test_the_folder_records_the_precision_its_lambda_was_calibrated_with(exports, tmp_path):
    _, folder, _ = exports
    recorded = tmp_path / "recorded"
    shutil.copytree(folder, recorded)
    settings = json.loads((recorded / VLM_SETTINGS).read_text())
    settings[SERVED_WITH]["precision"] = "int8"
    (recorded / VLM_SETTINGS).write_text(json.dumps(settings))
    assert load_reranker(recorded).precision == "int8"
    assert load_reranker(recorded, precision="fp32").precision == "fp32"  # the setting wins


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


def _texts_embedded(url: str) -> int:
    return httpx.get(f"{url}/meta").json()["batching"]["stats"]["text"]["items"]


@pytest.mark.integration
def test_a_caption_vectorised_with_its_object_is_not_embedded_again_by_rerank(exports, tmp_path):
    """Weaviate sends a stored caption to /vectorize with its image when the object is written
    (its recipe names the caption, at weight 0 or RAR's); /rerank on the caption property then
    takes the first-stage term from there: the text tower runs for none of the candidates."""
    first_stage, folder, _ = exports
    images = scene_images(5, seed=4)
    b64 = [png_b64(im) for im in images]
    env = {"CIR_ONNX_EXPORT": str(first_stage), "CIR_RERANKER_MODEL": str(folder)}
    ours = load_reranker(folder)
    captions = ours.captions(images)
    with ServiceProcess(first_stage, env=env) as service:
        for image, caption in zip(b64[1:], captions[1:], strict=True):  # as Weaviate writes
            reply = httpx.post(
                f"{service.url}/vectorize", json={"texts": [caption], "images": [image]}
            )
            assert reply.status_code == 200
        before = _texts_embedded(service.url)
        query = compose_query(b64[0], TEXT, caption=captions[0])
        scores = httpx.post(
            f"{service.url}/rerank", json={"query": query, "documents": captions[1:]}, timeout=60
        ).json()["scores"]
        assert _texts_embedded(service.url) == before
        # A caption never sent to /vectorize is embedded on the query's path, once.
        unseen = "small solid red circle at row 1, column 1"
        httpx.post(f"{service.url}/rerank", json={"query": query, "documents": [unseen]})
        assert _texts_embedded(service.url) == before + 1
    local = OnnxCIRModel(first_stage, "fp32", providers=["CPUExecutionProvider"])
    cosine = local.embed_texts(captions[1:]) @ local.embed_composed(images[:1], [TEXT])[0]
    judged = ours.score_captions(ours.prefix_from_caption(captions[0], TEXT), captions[1:])
    np.testing.assert_allclose(
        [s["score"] for s in scores], cosine + 1.5 * judged, atol=2 * RERANK_ATOL
    )
