"""``cir rerank export`` of a change verifier: ``vision.onnx`` (one image of the verifier's
side) and ``decoder.onnx`` (:class:`~onnx_export.reranker_graphs.TextDecoderGraph`: the next
token's logits for greedy captioning, the YES / NO logits at every position, the key / value
cache in and out), validated end to end: the exported captioner writes the torch captioner's
captions token for token, and the exported verifier's P(YES), shared prefix and per-change
read-out included, is within ``RERANK_ATOL`` of torch's, or a :class:`ParityError` is raised
and no manifest is written. Beside it, ``decoder.int8.onnx`` (the same graph, dynamic int8
matrix products) may score the verify rows (``precision="int8"``: about 1.6x faster on a
VNNI CPU); its P(YES) is held to ``INT8_ATOL`` of torch's and its distance recorded. Captions
are always written by the fp32 graph. The export is served by
:class:`~cir_module.rerank.onnx_verifier.OnnxChangeVerifier` (no torch)."""

from __future__ import annotations

import gc
import json
import logging
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from cir_module.data.benchmark import TIERS
from cir_module.rerank.onnx_verifier import INT8_DECODER, VERIFIER_KIND, OnnxChangeVerifier
from cir_module.rerank.onnx_vlm import RERANKER_MANIFEST
from cir_module.rerank.verify import ChangeVerifyingReranker
from cir_module.vlm.folder import VLM_SETTINGS, saved_settings
from cir_module.vlm.prompt import DESCRIBE_PROMPT
from onnx_export.export import DEFAULT_OPSET, export_module, write_validated
from onnx_export.optimize import quantize_dynamic_int8
from onnx_export.reranker import (
    DECODER_AXES,
    DECODER_INPUTS,
    RERANK_ATOL,
    cache_pass_example,
    export_vision,
    vlm_manifest,
)
from onnx_export.reranker_graphs import TextDecoderGraph
from onnx_export.validate import ParityError

__all__ = ["INT8_ATOL", "TorchAnswers", "export_verifier", "torch_answers", "verifier_parity"]

log = logging.getLogger(__name__)

# int8 products move P(YES) by a few hundredths at most on real verdicts (the shipped
# verifier's 20 000 over two test seeds' top 10: at most 0.080, 0.0006 on average); a graph
# further off than this is broken, not rounded.
INT8_ATOL = 0.1

_TEXTS = ["make the large circle red", "remove every square and move the triangle left"]


def export_verifier(
    model: str | Path, out: str | Path, *, opset: int = DEFAULT_OPSET, validate: bool = True
) -> dict[str, Any]:
    """Export the change verifier at ``model`` to ``out``; return the manifest (also
    written). At most one copy of the model is in memory at a time (what lets a real-size
    VLM export on one machine): torch's answers to the parity inputs are taken before the
    torch model is let go, then the int8 graph is made and each runtime checked in turn."""
    verifier = ChangeVerifyingReranker.from_pretrained(model, dtype=torch.float32)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    (out / RERANKER_MANIFEST).unlink(missing_ok=True)
    verifier.model.float().eval()
    codec = verifier.codec
    tier, rng = TIERS["hard"], random.Random(0)
    export_vision(verifier, tier.render(tier.random_scene(rng, 1, 3), rng), out, opset)
    export_module(
        TextDecoderGraph(verifier.model, codec.image_token_id, (verifier.yes_id, verifier.no_id)),
        cache_pass_example(verifier, codec.encode(DESCRIBE_PROMPT)),
        out / "decoder.onnx",
        DECODER_INPUTS,
        ["next_logits", "answer_logits", "present_keys", "present_values"],
        DECODER_AXES
        | {
            "image_embeds": {0: "batch", 1: "placeholders"},
            "next_logits": {0: "batch"},
            "answer_logits": {0: "batch", 1: "new"},
        },
        opset,
    )
    verifier.tokenizer.save_pretrained(out)
    verifier.image_processor.save_pretrained(out)
    # The folder's settings (differ, read-out, recorded lambda) travel with the export.
    settings = saved_settings(model) | {"image_side": verifier.image_side}
    (out / VLM_SETTINGS).write_text(json.dumps(settings, indent=2))
    manifest = vlm_manifest(verifier, model, out, opset) | {"kind": VERIFIER_KIND}
    expected = torch_answers(verifier) if validate else None
    del verifier
    gc.collect()
    quantize_dynamic_int8(out / "decoder.onnx", out / INT8_DECODER)
    parity = (lambda: verifier_parity(expected, out)) if expected is not None else None
    return write_validated(out / RERANKER_MANIFEST, manifest, parity)


@dataclass
class TorchAnswers:
    """What the torch verifier answers on the parity inputs: captions of rendered hard-tier
    scenes, and P(YES) of every candidate against the first (on the captions, and on true
    descriptions, so that change lists are long and the per-change read-out is exercised)."""

    images: list[Image.Image]
    captions: list[str]
    text: str
    verdicts: dict[str, tuple[str, list[str], np.ndarray]]  # name: (reference, changes, P(YES))


def torch_answers(verifier: ChangeVerifyingReranker, seed: int = 0) -> TorchAnswers:
    """The torch verifier's answers to the parity inputs (captions in batches of 2)."""
    tier, rng = TIERS["hard"], random.Random(seed)
    scenes = [tier.random_scene(rng, 1, tier.max_objects) for _ in range(5)]
    images = [tier.render(scene, rng) for scene in scenes]
    saved = verifier.batch_size
    try:
        verifier.batch_size = 2
        captions = verifier.write_captions(images[:2]) + verifier.write_captions(images[2:])
        text = rng.choice(_TEXTS)
        verdicts = {}
        for name, described in (
            ("captions", [c.strip() for c in captions]),
            ("descriptions", [tier.describe(scene) for scene in scenes]),
        ):
            changes = [verifier.changes_between(described[0], d) for d in described[1:]]
            verdicts[name] = (described[0], changes, verifier.verify(described[0], text, changes))
    finally:
        verifier.batch_size = saved
    return TorchAnswers(images, [c.strip() for c in captions], text, verdicts)


def verifier_parity(expected: TorchAnswers, folder: Path) -> dict[str, float]:
    """The export against torch's answers: the same captions (batches of 2), P(YES) within
    ``RERANK_ATOL``, the int8 verify graph's within ``INT8_ATOL``. One runtime is open at a
    time."""
    report = {"captions_equal": 1.0}
    for precision, key in (("fp32", "p_yes"), ("int8", "int8_p_yes")):
        ours = OnnxChangeVerifier(folder, batch_size=2, precision=precision)
        if precision == "fp32":
            images = expected.images
            got = ours.write_captions(images[:2]) + ours.write_captions(images[2:])
            if [c.strip() for c in got] != expected.captions:
                raise ParityError(
                    f"exported captions differ from torch's: {got} != {expected.captions}"
                )
        for name, (reference, changes, p_yes) in expected.verdicts.items():
            report[f"{key}_{name}"] = float(
                np.abs(p_yes - ours.verify(reference, expected.text, changes)).max()
            )
        del ours
        gc.collect()
    log.info("verifier parity: %s", report)
    worst = max(v for k, v in report.items() if k.startswith("p_yes"))
    if worst > RERANK_ATOL:
        raise ParityError(f"verifier export differs from torch by {worst:.2e} in P(YES): {report}")
    worst_int8 = max(v for k, v in report.items() if k.startswith("int8_p_yes"))
    if worst_int8 > INT8_ATOL:
        raise ParityError(f"the int8 verify graph differs from torch by {worst_int8:.2e}: {report}")
    return report
