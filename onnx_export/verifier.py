"""``cir rerank export`` of a change verifier: ``vision.onnx`` (one image of the verifier's
side) and ``decoder.onnx`` (:class:`~onnx_export.reranker_graphs.TextDecoderGraph`: the next
token's logits for greedy captioning, the YES / NO logits at every position, the key / value
cache in and out), validated end to end: the exported captioner writes the torch captioner's
captions token for token, and the exported verifier's P(YES), shared prefix and per-change
read-out included, is within ``RERANK_ATOL`` of torch's, or a :class:`ParityError` is raised
and no manifest is written. The export is served by
:class:`~cir_module.rerank.onnx_verifier.OnnxChangeVerifier` (no torch)."""

from __future__ import annotations

import json
import logging
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch

from cir_module.data.benchmark import TIERS
from cir_module.rerank.onnx_reranker import RERANKER_MANIFEST
from cir_module.rerank.onnx_verifier import VERIFIER_KIND, OnnxChangeVerifier
from cir_module.rerank.verify import ChangeVerifyingReranker
from cir_module.vlm.folder import VLM_SETTINGS, saved_settings
from cir_module.vlm.prompt import DESCRIBE_PROMPT, mrope_positions
from onnx_export.export import DEFAULT_OPSET, _io_description, _sha256, _versions, export_module
from onnx_export.reranker_graphs import TextDecoderGraph, VisionGraph
from onnx_export.validate import ParityError

__all__ = ["export_verifier", "verifier_parity"]

log = logging.getLogger(__name__)

_TEXTS = ["make the large circle red", "remove every square and move the triangle left"]


def _merged(verifier: ChangeVerifyingReranker) -> tuple[int, int]:
    vision = verifier.model.config.vision_config
    side = verifier.image_side // vision.patch_size // vision.spatial_merge_size
    return (side, side)


def _decoder_example(verifier: ChangeVerifyingReranker) -> tuple[torch.Tensor, ...]:
    """A captioning pass of batch 2 over a cache of 3 positions (no axis of size 1 or 0)."""
    codec, config = verifier.codec, verifier.model.config.text_config
    prompt = codec.encode(DESCRIBE_PROMPT)
    kv, head_dim = config.num_key_value_heads, config.hidden_size // config.num_attention_heads
    layers = len(verifier.layers)
    positions = mrope_positions([0, 0, 0, *prompt], codec.image_token_id, _merged(verifier))
    return (
        torch.tensor([prompt, prompt]),
        torch.randn(2, codec.image_tokens, config.hidden_size),
        torch.from_numpy(positions[:, None, 3:]).expand(3, 2, -1).contiguous(),
        torch.randn(layers, 2, kv, 3, head_dim),
        torch.randn(layers, 2, kv, 3, head_dim),
    )


def export_verifier(
    model: str | Path, out: str | Path, *, opset: int = DEFAULT_OPSET, validate: bool = True
) -> dict[str, Any]:
    """Export the change verifier at ``model`` to ``out``; return the manifest (also
    written)."""
    verifier = ChangeVerifyingReranker.from_pretrained(model, dtype=torch.float32)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    (out / RERANKER_MANIFEST).unlink(missing_ok=True)
    verifier.model.float().eval()
    codec = verifier.codec
    vision = verifier.model.config.vision_config
    tier, rng = TIERS["hard"], random.Random(0)
    pixels, _ = codec.pixels([tier.render(tier.random_scene(rng, 1, 3), rng)])
    export_module(
        VisionGraph(verifier.model, verifier.image_side // vision.patch_size),
        (torch.from_numpy(pixels),),
        out / "vision.onnx",
        ["pixel_values"],
        ["image_features"],
        None,
        opset,
    )
    export_module(
        TextDecoderGraph(verifier.model, codec.image_token_id, (verifier.yes_id, verifier.no_id)),
        _decoder_example(verifier),
        out / "decoder.onnx",
        ["input_ids", "image_embeds", "position_ids", "past_keys", "past_values"],
        ["next_logits", "answer_logits", "present_keys", "present_values"],
        {
            "input_ids": {0: "batch", 1: "new"},
            "image_embeds": {0: "batch", 1: "placeholders"},
            "position_ids": {1: "batch", 2: "new"},
            "past_keys": {1: "batch", 3: "past"},
            "past_values": {1: "batch", 3: "past"},
            "next_logits": {0: "batch"},
            "answer_logits": {0: "batch", 1: "new"},
            "present_keys": {1: "batch", 3: "total"},
            "present_values": {1: "batch", 3: "total"},
        },
        opset,
    )
    verifier.tokenizer.save_pretrained(out)
    verifier.image_processor.save_pretrained(out)
    # The folder's settings (differ, read-out, recorded lambda) travel with the export.
    settings = saved_settings(model) | {"image_side": verifier.image_side}
    (out / VLM_SETTINGS).write_text(json.dumps(settings, indent=2))
    text = verifier.model.config.text_config
    manifest: dict[str, Any] = {
        "format": "weaviate-cir-reranker-onnx/1",
        "kind": VERIFIER_KIND,
        "source": str(model),
        "family": verifier.adapter.name,
        "image_side": verifier.image_side,
        "image_tokens": codec.image_tokens,
        "image_markers": [codec.image_start, codec.image_pad, codec.image_end],
        "merged_grid": list(_merged(verifier)),
        "decoder": {
            "layers": len(verifier.layers),
            "hidden": text.hidden_size,
            "kv_heads": text.num_key_value_heads,
            "head_dim": text.hidden_size // text.num_attention_heads,
        },
        "opset": opset,
        "versions": _versions(),
        "graphs": {g: _io_description(out / f"{g}.onnx") for g in ("vision", "decoder")},
        "sha256": {g: _sha256(out / f"{g}.onnx") for g in ("vision", "decoder")},
    }
    manifest_path = out / RERANKER_MANIFEST
    manifest_path.write_text(json.dumps(manifest, indent=2))
    if validate:
        try:
            manifest["parity"] = verifier_parity(verifier, out)
        except ParityError:
            manifest_path.unlink()
            raise
        manifest_path.write_text(json.dumps(manifest, indent=2))
    return manifest


def verifier_parity(
    verifier: ChangeVerifyingReranker, folder: Path, seed: int = 0
) -> dict[str, float]:
    """The export against torch on rendered hard-tier scenes: captions of 5 images (batches
    of 2) must be the same text, and P(YES) of every candidate against the first (on the
    captions, and on true descriptions, so that change lists are long and the per-change
    read-out is exercised) within ``RERANK_ATOL``."""
    from onnx_export.reranker import RERANK_ATOL

    tier, rng = TIERS["hard"], random.Random(seed)
    scenes = [tier.random_scene(rng, 1, tier.max_objects) for _ in range(5)]
    images = [tier.render(scene, rng) for scene in scenes]
    ours = OnnxChangeVerifier(folder, batch_size=2)
    saved = verifier.batch_size
    try:
        verifier.batch_size = 2
        expected = verifier.write_captions(images[:2]) + verifier.write_captions(images[2:])
        got = ours.write_captions(images[:2]) + ours.write_captions(images[2:])
        if [c.strip() for c in got] != [c.strip() for c in expected]:
            raise ParityError(f"exported captions differ from torch's: {got} != {expected}")
        text = rng.choice(_TEXTS)
        report = {"captions_equal": 1.0}
        for name, described in (
            ("captions", [c.strip() for c in expected]),
            ("descriptions", [tier.describe(scene) for scene in scenes]),
        ):
            changes = [verifier.changes_between(described[0], d) for d in described[1:]]
            a = verifier.verify(described[0], text, changes)
            b = ours.verify(described[0], text, changes)
            report[f"p_yes_{name}"] = float(np.abs(a - b).max())
    finally:
        verifier.batch_size = saved
    log.info("verifier parity: %s", report)
    worst = max(v for k, v in report.items() if k.startswith("p_yes"))
    if worst > RERANK_ATOL:
        raise ParityError(f"verifier export differs from torch by {worst:.2e} in P(YES): {report}")
    return report
