"""``cir export``: a checkpoint -> ONNX graphs, variants, a manifest, all validated.

torch.onnx (the TorchScript exporter) is used for all three graphs: they are this project's
own composite modules (pyramid patcher + ViT, a text tower + projection, a fusion head), for
which optimum's exporter, built around hub architectures and their ``OnnxConfig`` classes, has
no configuration. The versions are the ones pinned in ``pyproject.toml``'s ``export`` extra.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from cir_module.models import CIRModel, LVLMRetriever, load_model
from cir_module.models.onnx_model import MANIFEST_NAME
from onnx_export.graph_files import data_file, gather_external_data, save_graph
from onnx_export.graphs import graph_feeds, graphs_of
from onnx_export.optimize import (
    CALIBRATION_SIZE,
    attention_shapes,
    calibration_feeds,
    calibration_pairs,
    fuse_for_cpu,
    quantize_dynamic_int8,
    quantize_static_qdq,
)
from onnx_export.validate import ParityError, check_graph_parity, variant_parity

__all__ = ["INT8_METHODS", "VARIANTS", "export_checkpoint", "export_module", "write_validated"]

log = logging.getLogger(__name__)

VARIANTS = ("fp32", "fp16", "int8")
# dynamic: int8 weights, activation ranges per batch at run time; static: QDQ, calibrated.
INT8_METHODS = ("dynamic", "static")
DEFAULT_OPSET = 18  # Resize with antialias (the pyramid's downscaling) needs opset 18


def _require(module: str) -> Any:
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise ImportError(f"exporting needs {module}: pip install 'weaviate-cir[export]'") from exc


def _sha256(path: Path) -> str:
    """The digest of a graph file, then of its weights file when they are beside it."""
    digest = hashlib.sha256()
    parts = [path, *[f for f in (data_file(path),) if f.is_file()]]
    for part in parts:
        with part.open("rb") as handle:
            for block in iter(lambda h=handle: h.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()


def _example_inputs(model: CIRModel) -> dict[str, tuple[torch.Tensor, ...]]:
    """Tracing inputs for each graph (batch 2, so no axis is specialised to 1)."""
    noise = np.random.default_rng(0).integers(0, 256, size=(2, 64, 64, 3), dtype=np.uint8)
    images = [Image.fromarray(pixels) for pixels in noise]
    return graph_feeds(model, images, ["make the circle red", "add a small blue square at the top"])


def export_module(
    module: torch.nn.Module,
    args: tuple[torch.Tensor, ...],
    path: Path,
    input_names: Sequence[str],
    output_names: Sequence[str],
    dynamic_axes: dict[str, dict[int, str]] | None,
    opset: int,
) -> None:
    """Trace ``module`` on ``args`` to ``path`` (TorchScript exporter) and run the full
    ``onnx.checker`` on the result."""
    onnx = _require("onnx")
    torch.onnx.export(
        module.eval(),
        args,
        str(path),
        input_names=list(input_names),
        output_names=list(output_names),
        dynamic_axes=dynamic_axes,
        opset_version=opset,
        dynamo=False,
        do_constant_folding=True,
    )
    gather_external_data(path)
    onnx.checker.check_model(str(path), full_check=True)


def _io_description(path: Path) -> dict[str, list[dict[str, Any]]]:
    onnx = _require("onnx")
    graph = onnx.load(str(path), load_external_data=False).graph

    def describe(values: Sequence[Any]) -> list[dict[str, Any]]:
        out = []
        for value in values:
            tensor = value.type.tensor_type
            shape = [d.dim_param or d.dim_value for d in tensor.shape.dim]
            dtype = onnx.helper.tensor_dtype_to_np_dtype(tensor.elem_type).name
            out.append({"name": value.name, "shape": shape, "dtype": dtype})
        return out

    return {"inputs": describe(graph.input), "outputs": describe(graph.output)}


def _make_fp16(source: Path, target: Path) -> None:
    onnx = _require("onnx")
    from onnxruntime.transformers.float16 import convert_float_to_float16

    save_graph(convert_float_to_float16(onnx.load(str(source)), keep_io_types=True), target)


def _eager_attention(model: CIRModel) -> None:
    """Trace transformers' attention modules in their eager form (matmul, scale, softmax,
    matmul): the pattern onnxruntime's Attention fusion recognises. The SDPA form traces to
    a scaled-twice variant that it does not match. Same function either way."""
    for module in model.modules():
        config = getattr(module, "config", None)
        if config is not None and hasattr(config, "_attn_implementation"):
            config._attn_implementation = "eager"


def export_checkpoint(
    checkpoint: str | Path,
    out: str | Path,
    variants: Sequence[str] = ("fp32", "int8"),
    opset: int = DEFAULT_OPSET,
    validate: bool = True,
    optimize: bool = False,
    int8: str = "dynamic",
    calibration: str | Path | None = None,
    calibration_size: int = CALIBRATION_SIZE,
) -> dict[str, Any]:
    """Export ``checkpoint`` to ``out``; return the manifest (also written as JSON).

    Every graph passes ``onnx.checker``; with ``validate`` the plain fp32 graphs must match
    torch within 1e-4 (max abs) and each served variant within cosine 0.999 per vector (the
    fp32 variant also within 1e-4), on random and on real inputs, or a :class:`ParityError`
    is raised and no manifest is written.

    ``optimize``: the fp32 variant serves the graphs with onnxruntime's transformer fusions
    (``<graph>.opt.onnx``; the plain ``<graph>.onnx`` where a fused one misses parity). Off
    by default: measured on this project's CPU host (``benchmarks/throughput.py``'s roofline,
    docs/results.md) the fused graphs ran no faster than the plain ones, which onnxruntime
    fuses at load time already.
    ``int8``: ``dynamic`` quantisation, or ``static`` QDQ calibrated on ``calibration_size``
    pairs from the train split of the benchmark folder ``calibration`` (rendered synthetic
    scenes when None).
    """
    unknown = set(variants) - set(VARIANTS)
    if unknown or "fp32" not in variants:
        raise ValueError(f"variants must include fp32 and be among {VARIANTS}; got {variants}")
    if int8 not in INT8_METHODS:
        raise ValueError(f"int8 must be one of {INT8_METHODS}; got {int8!r}")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    for stale in [*out.glob("*.onnx"), out / MANIFEST_NAME]:  # a previous export's files
        stale.unlink(missing_ok=True)
    model = load_model(checkpoint).float().eval()
    lvlm = isinstance(model, LVLMRetriever)
    if lvlm and (optimize or ("int8" in variants and int8 == "static")):
        raise ValueError("an lvlm model exports without --optimize and without static int8")
    _eager_attention(model)
    model.tokenizer.save_pretrained(out)
    examples = _example_inputs(model)
    graphs = graphs_of(model)
    optimization: dict[str, Any] = {}
    if not lvlm:
        shapes = attention_shapes(model)
        # The attention shapes are recorded so that a fused graph can be made later.
        optimization["attention"] = {g: list(v) for g, v in shapes.items()}
    if optimize:
        optimization["fusions"] = {}
    feeds: dict[str, list[dict[str, Any]]] = {}
    if "int8" in variants and int8 == "static":
        images, texts, source = calibration_pairs(calibration, calibration_size)
        feeds = calibration_feeds(model, images, texts)
        optimization["int8"] = {"method": "static", "calibration": source, "quantized": {}}
    elif "int8" in variants:
        optimization["int8"] = {"method": "dynamic"}

    files: dict[str, dict[str, str]] = {v: {} for v in variants}
    for spec in graphs:
        fp32 = out / f"{spec.name}.onnx"
        log.info("exporting the %s graph to %s", spec.name, fp32)
        export_module(
            spec.wrapper(model),
            examples[spec.name],
            fp32,
            spec.inputs,
            spec.outputs,
            spec.dynamic_axes,
            opset,
        )
        files["fp32"][spec.name] = fp32.name
        if optimize:
            fused = out / f"{spec.name}.opt.onnx"
            optimization["fusions"][spec.name] = fuse_for_cpu(fp32, fused, *shapes[spec.name])
            files["fp32"][spec.name] = fused.name
        if "fp16" in variants:
            _make_fp16(fp32, out / f"{spec.name}.fp16.onnx")
            files["fp16"][spec.name] = f"{spec.name}.fp16.onnx"
        if "int8" in variants:
            target = out / f"{spec.name}.int8.onnx"
            if int8 == "static":
                optimization["int8"]["quantized"][spec.name] = quantize_static_qdq(
                    fp32, target, feeds[spec.name]
                )
            else:
                quantize_dynamic_int8(fp32, target)
            files["int8"][spec.name] = target.name

    preprocess = model.preprocess
    manifest: dict[str, Any] = {
        "format": "weaviate-cir-onnx/1",
        "source_checkpoint": str(checkpoint),
        "model": model.describe(),
        "opset": opset,
        "versions": _versions(),
        "preprocessing": {
            "image_size": preprocess.image_size,
            "mean": list(preprocess.mean),
            "std": list(preprocess.std),
            "resample": preprocess.resample,
            "center_crop": preprocess.center_crop,
        },
        "text": _text_settings(model),
        "optimization": optimization,
        "graphs": {spec.name: _io_description(out / f"{spec.name}.onnx") for spec in graphs},
        "variants": {
            variant: {
                "files": names,
                "sha256": {graph: _sha256(out / name) for graph, name in names.items()},
            }
            for variant, names in files.items()
        },
    }

    def parity() -> dict[str, Any]:
        report = {"graphs": check_graph_parity(model, out, examples)}
        # fp32 first: a failed int8 graph falls back to the fp32 graph that passed.
        for variant in sorted(variants, key=lambda v: v != "fp32"):
            report[variant] = _validate_variant(model, out, manifest, variant)
        return report

    return write_validated(out / MANIFEST_NAME, manifest, parity if validate else None)


def write_validated(
    path: Path, manifest: dict[str, Any], parity: Callable[[], Any] | None
) -> dict[str, Any]:
    """Write ``manifest`` to ``path``, run ``parity`` (its report goes in as ``"parity"``)
    and write it again. The runtime reads the manifest, so parity runs against a provisional
    one; it is removed again if a check fails (:class:`ParityError`), leaving no folder that
    claims to be a valid export."""
    path.write_text(json.dumps(manifest, indent=2))
    if parity is not None:
        try:
            manifest["parity"] = parity()
        except ParityError:
            path.unlink()
            raise
        path.write_text(json.dumps(manifest, indent=2))
    return manifest


def _validate_variant(
    model: CIRModel, out: Path, manifest: dict[str, Any], variant: str
) -> dict[str, Any]:
    """Check ``variant``; a graph that misses the tolerance and has a safer form is replaced
    by it: an int8 graph by the fp32 variant's (recorded under ``kept_fp32``), a fused fp32
    graph by the plain export (``kept_plain``). Any other miss raises :class:`ParityError`."""
    entry = manifest["variants"][variant]
    if variant == "int8":
        safer, key = dict(manifest["variants"]["fp32"]["files"]), "kept_fp32"
    elif variant == "fp32":
        safer, key = {spec.name: f"{spec.name}.onnx" for spec in graphs_of(model)}, "kept_plain"
    else:
        safer, key = {}, ""
    kept: dict[str, str] = {}
    while True:  # again after each replacement: a composed query is blamed on its towers first
        report, failures = variant_parity(model, out, variant)
        replaceable = {
            g: why
            for g, why in failures.items()
            if safer.get(g, entry["files"][g]) != entry["files"][g]
        }
        if not replaceable:
            break
        for graph, why in replaceable.items():
            log.warning("%s %s graph replaced by %s: %s", variant, graph, safer[graph], why)
            (out / entry["files"][graph]).unlink()
            entry["files"][graph] = safer[graph]
            entry["sha256"][graph] = _sha256(out / safer[graph])
            kept[graph] = why
        (out / MANIFEST_NAME).write_text(json.dumps(manifest, indent=2))
    if failures:
        raise ParityError("; ".join(failures.values()))
    return {**report, key: kept} if kept else report


def _text_settings(model: CIRModel) -> dict[str, Any]:
    """How the runtime tokenises: the tokenizer's padding, or for the lvlm family each input
    kind's cue after the text and the padding id (right padding)."""
    if isinstance(model, LVLMRetriever):
        return {
            "padding": "right",
            "max_length": model.text_max_length,
            "cues": model.cues,
            "pad_id": model.pad_id,
        }
    return {"padding": model.family.text_padding, "max_length": model.text_max_length}


def _versions() -> dict[str, str]:
    import onnx
    import onnxruntime
    import transformers

    return {
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "onnx": onnx.__version__,
        "onnxruntime": onnxruntime.__version__,
    }
