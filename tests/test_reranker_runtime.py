"""``CIR_RERANKER_RUNTIME``: ``cir serve`` runs a change verifier's checkpoint on onnxruntime
through an export it makes once into ``CIR_EXPORT_CACHE_DIR`` (parity-checked) and reuses;
``torch`` keeps torch; a kind that is not exported on start is refused under ``onnx`` and left
to torch under ``auto``. Over HTTP, the two runtimes answer ``/rerank`` alike."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import numpy as np
import pytest

from cir_module import compose_query
from cir_module.cli.serve import verifier_export_wanted, with_reranker_runtime
from cir_module.rerank.load import load_reranker
from cir_module.rerank.onnx_vlm import RERANKER_MANIFEST
from cir_module.rerank.tiny import build_tiny_reranker
from cir_module.settings import ServiceSettings
from cir_module.vlm.folder import SERVED_WITH, VLM_SETTINGS
from integration.service_process import ServiceProcess
from onnx_export.reranker import RERANK_ATOL
from onnx_export.served import cached_verifier_export
from tests.conftest import png_b64, scene_images

pytest.importorskip("onnx", reason="the export extra is not installed")

TEXT = "make the large circle red"


@pytest.fixture(scope="module")
def verifier(tmp_path_factory) -> Path:
    """A random-weight change verifier folder recording a lambda."""
    folder = build_tiny_reranker(tmp_path_factory.mktemp("verifier"), [TEXT], seed=0)
    settings = {"image_side": 112, "verify": "changes", SERVED_WITH: {"lambda": 2.0, "k": 10}}
    (folder / VLM_SETTINGS).write_text(json.dumps(settings))
    return folder


@pytest.fixture(scope="module")
def judge(tmp_path_factory) -> Path:
    """A random-weight P(YES) image judge folder (its kind is not exported on start)."""
    return build_tiny_reranker(tmp_path_factory.mktemp("judge"), [TEXT], seed=4)


def _settings(tmp_path: Path, reranker: Path, **extra) -> ServiceSettings:
    return ServiceSettings(
        reranker_model=str(reranker), export_cache_dir=str(tmp_path / "cache"), **extra
    )


def test_which_folders_are_exported_on_start(verifier, judge, tmp_path):
    assert verifier_export_wanted(_settings(tmp_path, verifier))  # auto, on the CPU
    assert verifier_export_wanted(_settings(tmp_path, verifier, reranker_runtime="onnx"))
    assert not verifier_export_wanted(_settings(tmp_path, verifier, reranker_runtime="torch"))
    assert not verifier_export_wanted(_settings(tmp_path, verifier, device="cuda"))
    # RAug-Rep to inject: auto keeps torch (the export takes no injection).
    injected = _settings(tmp_path, verifier, reranker_raug=str(tmp_path / "raug.safetensors"))
    assert not verifier_export_wanted(injected)
    assert not verifier_export_wanted(_settings(tmp_path, judge))
    with pytest.raises(ValueError, match="not one"):
        verifier_export_wanted(_settings(tmp_path, judge, reranker_runtime="onnx"))
    assert not verifier_export_wanted(ServiceSettings(reranker_model="none"))


def test_the_export_is_made_once_per_checkpoint_contents(verifier, tmp_path):
    settings = _settings(tmp_path, verifier)
    served = with_reranker_runtime(settings)
    export = Path(served.reranker_model)
    assert export.parent == tmp_path / "cache" and (export / RERANKER_MANIFEST).is_file()
    manifest = json.loads((export / RERANKER_MANIFEST).read_text())
    assert manifest["kind"] == "changes" and manifest["parity"]["captions_equal"] == 1.0
    written = (export / "decoder.onnx").stat().st_mtime_ns
    assert with_reranker_runtime(settings).reranker_model == str(export)  # reused, not redone
    assert (export / "decoder.onnx").stat().st_mtime_ns == written
    assert sorted(p.name for p in (tmp_path / "cache").iterdir()) == [export.name]  # no debris
    # An export of the served lambda's folder records it (the service reads it from there).
    assert json.loads((export / VLM_SETTINGS).read_text())[SERVED_WITH]["lambda"] == 2.0
    changed = tmp_path / "changed"
    changed.mkdir()
    for path in verifier.iterdir():
        (changed / path.name).write_bytes(path.read_bytes())
    settings_file = json.loads((changed / VLM_SETTINGS).read_text())
    settings_file[SERVED_WITH]["lambda"] = 3.0
    (changed / VLM_SETTINGS).write_text(json.dumps(settings_file))
    other = cached_verifier_export(changed, tmp_path / "cache")
    assert other != export and other.name.startswith("changed-")


def test_an_export_that_misses_parity_leaves_auto_on_torch_and_stops_onnx(
    verifier, tmp_path, monkeypatch
):
    from onnx_export import served
    from onnx_export.validate import ParityError

    def missed(folder, cache_dir, opset=None):
        raise ParityError("exported captions differ from torch's")

    monkeypatch.setattr(served, "cached_verifier_export", missed)
    auto = _settings(tmp_path, verifier)
    assert with_reranker_runtime(auto).reranker_model == str(verifier)  # torch serves it
    with pytest.raises(ParityError):
        with_reranker_runtime(_settings(tmp_path, verifier, reranker_runtime="onnx"))


def test_the_exported_verifier_opens_with_the_providers_and_threads_it_is_given(verifier, tmp_path):
    export = cached_verifier_export(verifier, tmp_path / "cache")
    opened = load_reranker(
        export, providers=["CPUExecutionProvider"], threads=1, trt_cache=tmp_path / "trt"
    )
    assert opened.describe()["provider"] == "CPUExecutionProvider"
    for session in opened.sessions.values():
        assert session.get_providers() == ["CPUExecutionProvider"]
        assert session.get_session_options().intra_op_num_threads == 1
    assert (
        load_reranker(export, threads=2)
        .sessions["decoder"]
        .get_session_options()
        .intra_op_num_threads
        == 2
    )


@pytest.mark.integration
def test_both_runtimes_answer_rerank_alike_over_http(verifier, tiny_checkpoint, tmp_path):
    images = scene_images(5, seed=6)
    b64 = [png_b64(im) for im in images]
    answers = {}
    for runtime in ("auto", "torch"):
        env = {"CIR_RERANKER_MODEL": str(verifier), "CIR_RERANKER_RUNTIME": runtime}
        with ServiceProcess(tiny_checkpoint, env=env) as service:
            meta = httpx.get(f"{service.url}/meta").json()["reranker"]
            body = {"query": compose_query(b64[0], TEXT), "documents": b64[1:]}
            reply = httpx.post(f"{service.url}/rerank", json=body, timeout=60)
        assert reply.status_code == 200, reply.text
        assert meta["lambda"] == 2.0  # the folder's, through the export too
        answers[meta["runtime"]] = np.array([s["score"] for s in reply.json()["scores"]])
    assert sorted(answers) == ["onnxruntime", "torch"]
    np.testing.assert_allclose(answers["onnxruntime"], answers["torch"], atol=3 * RERANK_ATOL)
