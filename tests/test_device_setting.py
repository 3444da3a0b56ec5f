"""One device setting for every torch path: ``CIR_DEVICE`` decides where the service puts
the second stage (the reranker) and the local chat model, not the presence of CUDA. The
``meta`` device stands in for a device this machine lacks: a model put there has no data,
so a path that ignored the setting would leave its weights on the CPU."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from cir_module.rerank.tiny import build_tiny_reranker
from cir_module.settings import ServiceSettings
from cir_module.vlm.folder import VLM_SETTINGS


@pytest.fixture(scope="module")
def verifier(tmp_path_factory) -> Path:
    folder = build_tiny_reranker(tmp_path_factory.mktemp("verifier"), ["make it red"], seed=0)
    settings = {"image_side": 112, "verify": "changes", "differ": "fact-diff"}
    (folder / VLM_SETTINGS).write_text(json.dumps(settings))
    return folder


def _devices(model) -> set[str]:
    return {p.device.type for p in model.parameters()}


@pytest.mark.parametrize("device", ["cpu", "meta"])
def test_the_service_puts_the_reranker_on_cir_device(verifier, device):
    from cir_module.service.app import _load_reranker

    reranker = _load_reranker(ServiceSettings(reranker_model=str(verifier), device=device))
    assert _devices(reranker.model) == {device}


@pytest.mark.parametrize("device", ["cpu", "meta"])
def test_the_service_puts_the_chat_model_on_cir_device(verifier, device):
    from cir_module.service.app import _load_chat

    chat, _ = _load_chat(
        ServiceSettings(chat_model=str(verifier), device=device, query_enhancement="off")
    )
    assert chat.device == device and _devices(chat.model) == {device}
