"""Liveness, readiness and ``/meta``: what Weaviate polls before it starts."""

from __future__ import annotations

import platform
import sys
from importlib import metadata
from pathlib import Path

from fastapi import APIRouter, Request, Response

__all__ = ["router"]

router = APIRouter(tags=["health"])


@router.get("/.well-known/live", status_code=204)
async def live() -> Response:
    """The process is up."""
    return Response(status_code=204)


@router.get(
    "/.well-known/ready",
    status_code=204,
    responses={503: {"description": "The model is still loading."}},
)
async def ready(request: Request) -> Response:
    """204 once the model is loaded; 503 before (Weaviate keeps polling until then)."""
    if getattr(request.app.state, "encoder", None) is None:
        return Response(status_code=503)
    return Response(status_code=204)


# What /meta reports the versions of, and the distributions that may provide each.
_VERSIONED = {
    "torch": ("torch",),
    "transformers": ("transformers",),
    "onnxruntime": ("onnxruntime", "onnxruntime-gpu"),
    "fastapi": ("fastapi",),
}


def _installed(*distributions: str) -> str | None:
    """The version of the first of ``distributions`` that is installed (None if none is),
    read from its metadata: /meta does not import torch to learn its version."""
    for name in distributions:
        try:
            return metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return None


def _public_name(location: str | None) -> str | None:
    """A model's name without the server's folder layout: a local folder by its last part,
    a hub id as it is."""
    if location is None:
        return None
    path = Path(location)
    return path.name if path.is_absolute() or path.exists() else location


def _public_facts(facts: dict) -> dict:
    """A model's facts with the locations it was loaded from shown by name only."""
    return {k: _public_name(v) if k in ("backbone", "export") else v for k, v in facts.items()}


@router.get("/meta")
async def meta(request: Request) -> dict:
    """Model and runtime facts; Weaviate merges this object into its own ``/v1/meta``."""
    from cir_module import __version__

    state = request.app.state
    encoder = getattr(state, "encoder", None)
    return {
        "service": "weaviate-cir",
        "version": __version__,
        "ready": encoder is not None,
        "checkpoint": _public_name(state.settings.checkpoint),
        "onnx_export": _public_name(state.settings.onnx_export),
        "backend": "onnxruntime" if state.settings.onnx_export else "torch",
        "device": state.settings.device,
        "model": _public_facts(encoder.model.describe()) if encoder is not None else None,
        "batching": {
            "cross_request": state.settings.cross_request_batching,
            "max_batch_size": state.settings.max_batch_size,
            "max_wait_ms": state.settings.batch_wait_ms,
            "model_workers": state.settings.model_workers,
            **({"stats": encoder.stats()} if encoder is not None else {}),
        },
        # What the process runs with, read back from Python rather than from the settings.
        "gil_switch_interval_ms": round(sys.getswitchinterval() * 1000, 6),
        "reranker": (
            {**encoder.reranker.describe(), "lambda": encoder.fusion_lambda}
            if encoder is not None and encoder.reranker is not None
            else None
        ),
        "query_enhancement": (
            state.enhancer.describe() if getattr(state, "enhancer", None) else None
        ),
        "text_reranker": _public_name(state.settings.text_reranker_model),
        "admission": encoder.admission_stats() if encoder is not None else None,
        "chat_model": state.chat.id if getattr(state, "chat", None) else None,
        "versions": {
            "python": platform.python_version(),
            **{name: _installed(*dists) for name, dists in _VERSIONED.items()},
        },
    }
