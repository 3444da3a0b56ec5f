"""CPU-specific graphs of an export: operator fusions and static (calibrated) int8.

* :func:`fuse_for_cpu` runs onnxruntime's transformer optimizer (Attention, SkipLayerNorm,
  LayerNorm, Gelu / QuickGelu / BiasGelu fusions) at its offline level only; the runtime's own
  level-2 optimisations still run when the session loads, so nothing hardware-specific is
  baked into the file.
* :func:`quantize_dynamic_int8` writes int8 weights with activation ranges found per batch
  at run time (no calibration).
* :func:`quantize_static_qdq` writes a QDQ graph with per-channel int8 weights and uint8
  activations whose ranges were calibrated on real inputs (:func:`calibration_feeds`), for
  every Conv (the convolutional stem) and every MatMul that has a weight.

Both are validated like every other variant: by :func:`onnx_export.validate.variant_parity`
against torch, with the plain graph (fusions) or the fp32 graph (int8) kept where a result
misses the tolerance.
"""

from __future__ import annotations

import contextlib
import logging
import random
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from cir_module.models import CIRModel
from onnx_export.graph_files import needs_external_data

__all__ = [
    "CALIBRATION_SIZE",
    "attention_shapes",
    "calibration_feeds",
    "calibration_pairs",
    "fuse_for_cpu",
    "quantize_dynamic_int8",
    "quantize_static_qdq",
]

log = logging.getLogger(__name__)

CALIBRATION_SIZE = 256
_CALIBRATION_BATCH = 16


@contextlib.contextmanager
def _root_log_level(level: int) -> Iterator[None]:
    """The root logger at ``level`` for a while: onnxruntime's quantiser logs every node on
    it, and its optimizer every pattern it did not match."""
    root = logging.getLogger()
    before = root.level
    root.setLevel(level)
    try:
        yield
    finally:
        root.setLevel(before)


def attention_shapes(model: CIRModel) -> dict[str, tuple[str, int, int]]:
    """Per graph: the optimizer's model type, attention heads and hidden width.

    The fusions need the heads and width stated: onnxruntime's CLIP attention fusion cannot
    read them off a graph whose reshapes are computed from ``Shape`` nodes.
    """
    vision = model.image_encoder.vision.config
    backbone = model.backbone
    text_model = getattr(backbone, "text", None) or backbone.text_model
    text = text_model.config
    fusion = model.config.fusion
    # A BERT-like text encoder (MiniLM) matches the BERT patterns; CLIP's text tower CLIP's.
    text_type = "clip" if "clip" in type(text_model).__name__.lower() else "bert"
    return {
        "image": ("clip", vision.num_attention_heads, vision.hidden_size),
        "text": (text_type, text.num_attention_heads, text.hidden_size),
        "fusion": ("bert", max(fusion.heads, 1), max(fusion.hidden_dim, 1)),
    }


def _reduce_l2_as_sum(model: Any) -> int:
    """Rewrite every ``ReduceL2(x)`` (``F.normalize``) as ``Sqrt(ReduceSum(x * x))``, in place.

    onnxruntime's symbolic shape inference has no ReduceL2; without shapes downstream it
    skips the SkipLayerNormalization fusion, and CLIP's attention fusion starts from that node.
    The two forms are the same function.
    """
    from onnx import helper

    nodes, rewritten = [], 0
    for node in model.graph.node:
        if node.op_type != "ReduceL2":
            nodes.append(node)
            continue
        squared, summed = f"{node.output[0]}_squared", f"{node.output[0]}_sum"
        reduce = helper.make_node(
            "ReduceSum", [squared, *node.input[1:]], [summed], name=f"{node.name}_sum"
        )
        reduce.attribute.extend(node.attribute)  # keepdims, noop_with_empty_axes
        nodes += [
            helper.make_node("Mul", [node.input[0], node.input[0]], [squared], name=node.name),
            reduce,
            helper.make_node("Sqrt", [summed], list(node.output), name=f"{node.name}_sqrt"),
        ]
        rewritten += 1
    del model.graph.node[:]
    model.graph.node.extend(nodes)
    return rewritten


def fuse_for_cpu(
    source: Path, target: Path, model_type: str, num_heads: int, hidden_size: int
) -> dict[str, int]:
    """Write ``source`` with onnxruntime's transformer fusions to ``target``; return the
    count of each fused operator (zeros left out)."""
    import onnx
    from onnxruntime.transformers.fusion_options import FusionOptions
    from onnxruntime.transformers.optimizer import optimize_model

    model = onnx.load(str(source))
    _reduce_l2_as_sum(model)
    with _root_log_level(logging.ERROR):
        optimized = optimize_model(
            model,
            model_type=model_type,
            num_heads=num_heads,
            hidden_size=hidden_size,
            optimization_options=FusionOptions(model_type),
            opt_level=0,  # python fusions only; the session applies its own at load
            use_gpu=False,
        )
    optimized.save_model_to_file(
        str(target), use_external_data_format=needs_external_data(optimized.model)
    )
    onnx.checker.check_model(str(target), full_check=False)  # com.microsoft ops: no full check
    return {k: v for k, v in optimized.get_fused_operator_statistics().items() if v}


def calibration_pairs(
    data: str | Path | None, n: int = CALIBRATION_SIZE, seed: int = 0
) -> tuple[list[Image.Image], list[str], str]:
    """``n`` (reference image, modification text) pairs to calibrate on, and where they are
    from: the train split of a benchmark folder (CIRR layout) when ``data`` is given, else
    freshly rendered synthetic scenes with generated edit texts."""
    rng = random.Random(seed)
    if data is not None:
        from cir_module.eval.inprocess import EvalSplit

        split = EvalSplit.load(data, "train")
        triplets = rng.sample(split.triplets, min(n, len(split.triplets)))
        images = [split.open(t.reference) for t in triplets]
        return images, [t.caption for t in triplets], f"{data} (train split, {len(triplets)})"
    from cir_module.data.shapes import modify, random_scene, render

    images, texts = [], []
    for _ in range(n):
        scene = random_scene(rng)
        images.append(render(scene, rng))
        texts.append(modify(scene, rng)[1])
    return images, texts, f"rendered synthetic scenes ({n})"


def calibration_feeds(
    model: CIRModel, images: Sequence[Image.Image], texts: Sequence[str]
) -> dict[str, list[dict[str, np.ndarray]]]:
    """Per graph, the input batches the calibration runs: pixels, token ids, and the fusion
    head's inputs as torch computes them for the same pairs."""
    feeds: dict[str, list[dict[str, np.ndarray]]] = {"image": [], "text": [], "fusion": []}
    for start in range(0, len(images), _CALIBRATION_BATCH):
        pixels = model.pixels(images[start : start + _CALIBRATION_BATCH])
        tokens = model.tokenize(list(texts[start : start + _CALIBRATION_BATCH]))
        with torch.no_grad():
            image_embeds, image_tokens = model.image_encoder.encode(pixels)
            text_embeds, text_tokens, mask = model.encode_text_states(**tokens)
        image_embeds = torch.nn.functional.normalize(image_embeds, dim=-1)
        feeds["image"].append({"pixel_values": pixels.numpy()})
        feeds["text"].append({k: v.numpy() for k, v in tokens.items()})
        feeds["fusion"].append(
            {
                "image_embeds": image_embeds.numpy(),
                "image_tokens": image_tokens.numpy(),
                "text_embeds": text_embeds.numpy(),
                "text_tokens": text_tokens.numpy(),
                "text_mask": mask.numpy(),
            }
        )
    return feeds


class _Reader:
    """onnxruntime's ``CalibrationDataReader`` over prepared feeds (only the inputs the
    graph has: an exporter drops unused ones)."""

    def __init__(self, feeds: Sequence[dict[str, np.ndarray]], wanted: set[str]) -> None:
        self._it: Iterator[dict[str, np.ndarray]] = iter(
            [{k: v for k, v in f.items() if k in wanted} for f in feeds]
        )

    def get_next(self) -> dict[str, np.ndarray] | None:
        return next(self._it, None)


def _weight_free_matmuls(model: Any) -> list[str]:
    """MatMuls whose inputs are both activations (attention's QK^T and AV): left in float,
    since quantising both operands per tensor costs most of the accuracy for little speed."""
    constants = {i.name for i in model.graph.initializer}
    constants |= {o for n in model.graph.node if n.op_type == "Constant" for o in n.output}
    return [
        n.name
        for n in model.graph.node
        if n.op_type == "MatMul" and not any(i in constants for i in n.input)
    ]


def quantize_dynamic_int8(source: Path, target: Path) -> None:
    """Dynamic int8 of ``source`` to ``target``: int8 weights, activations quantised per batch
    at run time; the matrix products run on VNNI where the CPU has it. No calibration."""
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    with _root_log_level(logging.WARNING):
        quantize_dynamic(
            str(source),
            str(target),
            weight_type=QuantType.QInt8,
            op_types_to_quantize=["MatMul"],
            use_external_data_format=needs_external_data(source),
            # Where shape inference leaves a product's type open (an lvlm graph's vision
            # merger), it is float: every graph exported here is float32.
            extra_options={"DefaultTensorType": onnx.TensorProto.FLOAT},
        )


def quantize_static_qdq(
    source: Path, target: Path, feeds: Sequence[dict[str, np.ndarray]]
) -> dict[str, Any]:
    """Static int8 of ``source`` (a plain fp32 graph: fused Attention has no QDQ kernel) to
    ``target`` in QDQ form, calibrated (min/max) on ``feeds``; return what was quantised."""
    import onnx
    from onnxruntime.quantization import (
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quantize_static,
    )

    model = onnx.load(str(source), load_external_data=False)
    excluded = _weight_free_matmuls(model)
    wanted = {i.name for i in model.graph.input}
    with _root_log_level(logging.WARNING):
        quantize_static(
            str(source),
            str(target),
            _Reader(feeds, wanted),
            quant_format=QuantFormat.QDQ,
            op_types_to_quantize=["Conv", "MatMul"],
            nodes_to_exclude=excluded,
            per_channel=True,
            # u8 activations x s8 weights is the VNNI / AVX-512 fast path of MLAS.
            activation_type=QuantType.QUInt8,
            weight_type=QuantType.QInt8,
            calibrate_method=CalibrationMethod.MinMax,
            use_external_data_format=needs_external_data(model),
            extra_options={"WeightSymmetric": True, "ActivationSymmetric": False},
        )
    quantized = onnx.load(str(target), load_external_data=False)
    ops = [n.op_type for n in model.graph.node]
    return {
        "conv": ops.count("Conv"),
        "matmul_with_weights": ops.count("MatMul") - len(excluded),
        "matmul_left_float": len(excluded),
        "quantize_nodes": sum(n.op_type == "QuantizeLinear" for n in quantized.graph.node),
    }
