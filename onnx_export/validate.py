"""Parity of an export against the torch model it came from, on random and real inputs.

fp32 graphs must reproduce torch within ``FP32_ATOL`` (max abs difference, every output);
reduced-precision variants (fp16, int8) must keep every unit vector within cosine
``VARIANT_MIN_COSINE`` of torch's, end to end through :class:`OnnxCIRModel`.
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from cir_module.data.shapes import random_scene, render
from cir_module.models import CIRModel
from cir_module.models.onnx_model import load_onnx_model
from onnx_export.graphs import graph_feeds, graphs_of

__all__ = [
    "FP32_ATOL",
    "VARIANT_MIN_COSINE",
    "ParityError",
    "check_graph_parity",
    "parity_inputs",
    "variant_parity",
]

FP32_ATOL = 1e-4
VARIANT_MIN_COSINE = 0.999

_TEXTS = [
    "make the large circle red",
    "remove the small green square at the top left and add a yellow triangle in the centre",
    "",
]


class ParityError(AssertionError):
    """An exported graph or variant disagrees with torch beyond the tolerance."""


def parity_inputs(seed: int = 0) -> dict[str, tuple[list[Image.Image], list[str]]]:
    """``random``: noise images and shuffled words; ``real``: rendered scenes and edit texts.
    Three of each (a batch size the export was not traced with)."""
    rng = random.Random(seed)
    noise = np.random.default_rng(seed).integers(0, 256, size=(3, 96, 80, 3), dtype=np.uint8)
    words = " ".join(_TEXTS).split()
    random_texts = [" ".join(rng.choices(words, k=n)) for n in (1, 7, 30)]
    return {
        "random": ([Image.fromarray(a) for a in noise], random_texts),
        "real": ([render(random_scene(rng), rng) for _ in range(3)], list(_TEXTS)),
    }


def _session(path: Path) -> Any:
    import onnxruntime

    return onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])


def check_graph_parity(
    model: CIRModel, folder: Path, examples: dict[str, tuple[torch.Tensor, ...]]
) -> dict[str, dict[str, float]]:
    """Max abs difference torch vs onnxruntime of every fp32 graph output, per input kind."""
    kinds = {"trace": examples}
    for kind, (images, texts) in parity_inputs().items():
        kinds[kind] = graph_feeds(model, images, texts)
    report: dict[str, dict[str, float]] = {}
    for spec in graphs_of(model):
        session = _session(folder / f"{spec.name}.onnx")
        wanted = {i.name for i in session.get_inputs()}
        wrapper = spec.wrapper(model).eval()
        for kind, feeds in kinds.items():
            args = feeds[spec.name]
            with torch.no_grad():
                expected = wrapper(*args)
            expected = expected if isinstance(expected, tuple) else (expected,)
            named = dict(zip(spec.inputs, args, strict=True))
            got = session.run(None, {k: v.cpu().numpy() for k, v in named.items() if k in wanted})
            diff = max(
                float(np.abs(g - e.cpu().numpy()).max()) for g, e in zip(got, expected, strict=True)
            )
            report.setdefault(spec.name, {})[kind] = diff
            if diff > FP32_ATOL:
                raise ParityError(
                    f"{spec.name} graph differs from torch by {diff:.2e} on {kind} inputs "
                    f"(tolerance {FP32_ATOL:.0e})"
                )
    return report


def variant_parity(
    model: CIRModel, folder: Path, variant: str
) -> tuple[dict[str, float], dict[str, str]]:
    """Lowest per-vector cosine (and, for fp32, max abs difference) of the served vectors of
    ``variant`` against torch, for images, texts and composed queries; and, per graph, why its
    vectors missed the tolerance (empty when all pass)."""
    served = load_onnx_model(folder, variant, providers=["CPUExecutionProvider"])
    # Which graph a served vector depends on last: a composed query runs the last one.
    graph_of = {"images": "image", "texts": "text", "composed": graphs_of(model)[-1].name}
    report: dict[str, float] = {}
    failures: dict[str, str] = {}
    towers_failed: set[str] = set()
    for kind, (images, texts) in parity_inputs().items():
        pairs = {
            "images": (model.embed_images(images), served.embed_images(images)),
            "texts": (model.embed_texts(texts), served.embed_texts(texts)),
            "composed": (
                model.embed_composed(images, texts),
                served.embed_composed(images, texts),
            ),
        }
        for what, (expected, got) in pairs.items():
            cosine = float(
                (
                    (expected * got).sum(1)
                    / np.linalg.norm(expected, axis=1)
                    / np.linalg.norm(got, axis=1)
                ).min()
            )
            report[f"{kind}_{what}_min_cosine"] = cosine
            why = None
            if variant == "fp32":
                diff = float(np.abs(expected - got).max())
                report[f"{kind}_{what}_max_abs"] = diff
                if diff > FP32_ATOL:
                    why = f"fp32 {what} differ from torch by {diff:.2e} on {kind} inputs"
            if cosine < VARIANT_MIN_COSINE:
                why = (
                    f"{variant} {what} reach only cosine {cosine:.5f} to torch on {kind} "
                    f"inputs (minimum {VARIANT_MIN_COSINE})"
                )
            if not why:
                continue
            # A composed query inherits its towers' errors: blame the fusion graph only
            # when both towers passed on these inputs (an lvlm composed graph is whole).
            if what != "composed":
                towers_failed.add(kind)
            elif kind in towers_failed:
                continue
            failures.setdefault(graph_of[what], why)
    return report, failures
