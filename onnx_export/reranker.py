"""``cir rerank export``: an LVLM reranker -> ``vision.onnx`` + ``decoder.onnx``, validated
(a change verifier's folder: :mod:`onnx_export.verifier`).

The vision tower is exported for one image of the reranker's fixed side (the scorer resizes
every image to it); the decoder with dynamic batch, new-token and cache lengths, the RAug-Rep
vectors, alpha and the per-layer injection switches as inputs (:mod:`onnx_export.reranker_graphs`).
Both pass ``onnx.checker``; then the export is scored against the torch reranker end to end
(KV reuse, with and without injection) and must agree within ``RERANK_ATOL`` in P(YES), or a
:class:`ParityError` is raised and no manifest is written.
"""

from __future__ import annotations

import json
import logging
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch

from cir_module.data.shapes import random_images
from cir_module.rerank.injection import choose_layers
from cir_module.rerank.onnx_reranker import RERANKER_MANIFEST, OnnxReranker
from cir_module.rerank.registry import recorded_kind
from cir_module.rerank.scorer import RERANKER_SETTINGS, LVLMReranker
from cir_module.vlm.prompt import mrope_positions
from onnx_export.export import (
    DEFAULT_OPSET,
    _io_description,
    _sha256,
    _versions,
    export_module,
    write_validated,
)
from onnx_export.reranker_graphs import DecoderGraph, VisionGraph
from onnx_export.validate import ParityError

__all__ = ["RERANK_ATOL", "export_reranker", "reranker_parity"]

log = logging.getLogger(__name__)

RERANK_ATOL = 1e-4
_TEXTS = ["make the large circle red", "remove the small green square at the top left"]


# The decoder's dynamic axes that every VLM export shares (inputs and the cache out).
DECODER_AXES = {
    "input_ids": {0: "batch", 1: "new"},
    "image_embeds": {0: "batch"},
    "position_ids": {1: "batch", 2: "new"},
    "past_keys": {1: "batch", 3: "past"},
    "past_values": {1: "batch", 3: "past"},
    "present_keys": {1: "batch", 3: "total"},
    "present_values": {1: "batch", 3: "total"},
}
DECODER_INPUTS = ["input_ids", "image_embeds", "position_ids", "past_keys", "past_values"]


def cache_pass_example(scorer, ids: list[int]) -> tuple[torch.Tensor, ...]:
    """The decoder's inputs for a pass of ``ids`` in a batch of 2 over a cache of 3 positions
    (no axis of size 1 or 0, so that the trace keeps every axis dynamic)."""
    codec, config = scorer.codec, scorer.model.config.text_config
    kv, head_dim = config.num_key_value_heads, config.hidden_size // config.num_attention_heads
    layers = len(scorer.layers)
    positions = mrope_positions([0, 0, 0, *ids], codec.image_token_id, _merged(scorer))
    return (
        torch.tensor([ids, ids]),
        torch.randn(2, codec.image_tokens, config.hidden_size),
        torch.from_numpy(positions[:, None, 3:]).expand(3, 2, -1).contiguous(),
        torch.randn(layers, 2, kv, 3, head_dim),
        torch.randn(layers, 2, kv, 3, head_dim),
    )


def export_vision(scorer, image, out: Path, opset: int) -> None:
    """``vision.onnx``: one image's patches at the scorer's side -> its features."""
    vision = scorer.model.config.vision_config
    pixels, _ = scorer.codec.pixels([image])
    export_module(
        VisionGraph(scorer.model, scorer.image_side // vision.patch_size),
        (torch.from_numpy(pixels),),
        out / "vision.onnx",
        ["pixel_values"],
        ["image_features"],
        None,
        opset,
    )


def _decoder_example(reranker: LVLMReranker) -> tuple[torch.Tensor, ...]:
    """A candidate pass (the prompt's suffix), with injection inputs."""
    layers, hidden = len(reranker.layers), reranker.model.config.text_config.hidden_size
    suffix = reranker.codec.encode(reranker.prompt.suffix)
    return (
        *cache_pass_example(reranker, suffix),
        torch.randn(layers, hidden),
        torch.tensor(0.6),
        torch.ones(layers),
    )


def _merged(scorer) -> tuple[int, int]:
    """The merged-token grid of one image at the scorer's side."""
    vision = scorer.model.config.vision_config
    side = scorer.image_side // vision.patch_size // vision.spatial_merge_size
    return (side, side)


def export_reranker(
    model: str | Path,
    out: str | Path,
    *,
    image_side: int | None = None,
    opset: int = DEFAULT_OPSET,
    validate: bool = True,
) -> dict[str, Any]:
    """Export the reranker at ``model`` to ``out``; return the manifest (also written)."""
    kwargs = {"image_side": image_side} if image_side else {}
    kind = recorded_kind(model)
    if kind == "changes":  # the change verifier: its captioner and its verdicts
        from onnx_export.verifier import export_verifier

        if image_side:
            raise ValueError("a change verifier is exported at the side it was trained at")
        return export_verifier(model, out, opset=opset, validate=validate)
    if kind != LVLMReranker.kind:  # its score needs generated text: the export only scores
        raise ValueError(
            f"{model} is served as a {kind!r} reranker: its scores need text the model "
            "generates, which the ONNX export does not run; serve the folder itself"
        )
    reranker = LVLMReranker.from_pretrained(model, dtype=torch.float32, **kwargs)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    (out / RERANKER_MANIFEST).unlink(missing_ok=True)
    reranker.model.float().eval()
    codec = reranker.codec
    export_vision(reranker, random_images(1, seed=0)[0], out, opset)
    export_module(
        DecoderGraph(reranker.model, codec.image_token_id, (reranker.yes_id, reranker.no_id)),
        _decoder_example(reranker),
        out / "decoder.onnx",
        [*DECODER_INPUTS, "raug", "alpha", "inject"],
        ["answer_logits", "present_keys", "present_values"],
        DECODER_AXES | {"answer_logits": {0: "batch"}},
        opset,
    )
    reranker.tokenizer.save_pretrained(out)
    reranker.image_processor.save_pretrained(out)
    (out / RERANKER_SETTINGS).write_text(json.dumps({"image_side": reranker.image_side}))
    manifest = vlm_manifest(reranker, model, out, opset) | {"prompt": vars(reranker.prompt)}
    parity = (lambda: reranker_parity(reranker, out)) if validate else None
    return write_validated(out / RERANKER_MANIFEST, manifest, parity)


def vlm_manifest(scorer, model: str | Path, out: Path, opset: int) -> dict[str, Any]:
    """What every VLM export's manifest says: its source, family, image input, the
    decoder's cache shape, and its two graphs (``vision``, ``decoder``) in ``out``."""
    codec, text = scorer.codec, scorer.model.config.text_config
    return {
        "format": "weaviate-cir-reranker-onnx/1",
        "source": str(model),
        "family": scorer.adapter.name,
        "image_side": scorer.image_side,
        "image_tokens": codec.image_tokens,
        "image_markers": [codec.image_start, codec.image_pad, codec.image_end],
        "merged_grid": list(_merged(scorer)),
        "decoder": {
            "layers": len(scorer.layers),
            "hidden": text.hidden_size,
            "kv_heads": text.num_key_value_heads,
            "head_dim": text.hidden_size // text.num_attention_heads,
        },
        "opset": opset,
        "versions": _versions(),
        "graphs": {g: _io_description(out / f"{g}.onnx") for g in ("vision", "decoder")},
        "sha256": {g: _sha256(out / f"{g}.onnx") for g in ("vision", "decoder")},
    }


def reranker_parity(reranker: LVLMReranker, folder: Path, seed: int = 0) -> dict[str, float]:
    """Max |P(YES) torch - P(YES) onnxruntime| over rendered scenes, without injection and
    with a random RAug-Rep at alpha 0.6 on all / first / last layers (5 candidates, batches
    of 2, so the cache is reused and batches are ragged)."""
    images = random_images(6, seed=seed)
    layers, hidden = len(reranker.layers), reranker.model.config.text_config.hidden_size
    vectors = torch.randn(layers, hidden, generator=torch.Generator().manual_seed(seed))
    vectors = vectors * 2.0 * reranker.model.config.text_config.hidden_size**0.5
    ours = OnnxReranker(folder, batch_size=2)
    saved = reranker.raug, reranker.alpha, reranker.injection_layers, reranker.batch_size
    report: dict[str, float] = {}
    scores: dict[str, np.ndarray] = {}
    text = random.Random(seed).choice(_TEXTS)
    try:
        reranker.batch_size = 2
        for name, raug, which in [
            ("plain", None, "all"),
            ("injected_all", vectors, "all"),
            ("injected_first", vectors, "first"),
            ("injected_last", vectors, "last"),
        ]:
            reranker.raug, reranker.alpha = raug, 0.6
            reranker.injection_layers = ours.injection_layers = choose_layers(layers, which)
            ours.raug = None if raug is None else raug.numpy()
            ours.alpha = 0.6
            expected = reranker.score(images[0], text, images[1:])
            got = ours.score(images[0], text, images[1:])
            report[name] = float(np.abs(expected - got).max())
            scores[name] = got
    finally:
        reranker.raug, reranker.alpha, reranker.injection_layers, reranker.batch_size = saved
    worst = max(report.values())
    # How far the injection moved the scores: the parity above is only a check of the
    # injection path if this is well above the tolerance.
    report["injection_effect"] = float(np.abs(scores["plain"] - scores["injected_all"]).max())
    log.info("reranker parity (max |dP(YES)|): %s", report)
    if worst > RERANK_ATOL:
        raise ParityError(f"reranker export differs from torch by {worst:.2e} in P(YES): {report}")
    return report
