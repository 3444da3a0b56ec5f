"""How an exported graph is written: in one file, or, when its weights are too large for one
protobuf (2 GB at most: a real-size VLM, a ViT-L at fp32 with its pyramid), with its weights
in one file beside it, ``<graph file>.data``, where onnxruntime finds them by the graph's path.

Every step that writes a graph (the trace, fp16, dynamic and static int8) decides by the same
rule (:func:`needs_external_data`), and a graph the tracer wrote with its weights scattered
over one file per tensor is gathered into that one file (:func:`gather_external_data`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

__all__ = [
    "EXTERNAL_DATA_ABOVE",
    "data_file",
    "gather_external_data",
    "needs_external_data",
    "save_graph",
    "weight_bytes",
]

# Weights above this many bytes go beside the graph: below the protobuf's 2 GB, leaving
# room for the graph itself.
EXTERNAL_DATA_ABOVE = 1_500_000_000


def data_file(graph: Path) -> Path:
    """Where a graph's weights are when they are beside it."""
    return graph.with_name(graph.name + ".data")


def _tensors(model: Any):
    """Every tensor a graph holds: its initializers and its nodes' constant attributes (the
    tracer stores large constants there too)."""
    yield from model.graph.initializer
    for node in model.graph.node:
        for attribute in node.attribute:
            if attribute.HasField("t"):
                yield attribute.t
            yield from attribute.tensors


def weight_bytes(model: Any) -> int:
    """Bytes of a graph's initializers (by their shapes and types: it holds for a graph
    loaded without its external data too)."""
    import onnx

    total = 0
    for tensor in _tensors(model):
        itemsize = np.dtype(onnx.helper.tensor_dtype_to_np_dtype(tensor.data_type)).itemsize
        total += int(np.prod(tensor.dims, dtype=np.int64)) * itemsize
    return total


def needs_external_data(model: Any) -> bool:
    """Whether ``model`` (an ``onnx.ModelProto``, or the path of a graph this module wrote:
    its weights inline or in :func:`data_file`, so its files' sizes tell without reading
    them) is written with its weights beside it."""
    if isinstance(model, str | Path):
        files = (Path(model), data_file(Path(model)))
        return sum(f.stat().st_size for f in files if f.is_file()) > EXTERNAL_DATA_ABOVE
    return weight_bytes(model) > EXTERNAL_DATA_ABOVE


def save_graph(model: Any, target: Path) -> None:
    """Write ``model`` to ``target``, its weights in :func:`data_file` when they need to be."""
    import onnx

    target = Path(target)
    data_file(target).unlink(missing_ok=True)  # save_model appends to an existing one
    if needs_external_data(model):
        onnx.save_model(
            model,
            str(target),
            save_as_external_data=True,
            all_tensors_to_one_file=True,
            location=data_file(target).name,
            size_threshold=1024,
        )
    else:
        onnx.save_model(model, str(target))


def gather_external_data(graph: Path) -> None:
    """A graph the tracer wrote with external data (one file per tensor, beside it) rewritten
    by :func:`save_graph`, the scattered files removed; a graph in one file is left as it is,
    unless its weights need to go beside it."""
    import onnx

    graph = Path(graph)
    bare = onnx.load(str(graph), load_external_data=False)
    scattered = {
        entry.value
        for tensor in _tensors(bare)
        if tensor.data_location == onnx.TensorProto.EXTERNAL
        for entry in tensor.external_data
        if entry.key == "location"
    } - {data_file(graph).name}
    if not scattered and not needs_external_data(bare):
        return
    save_graph(onnx.load(str(graph)), graph)
    for name in scattered:
        (graph.parent / name).unlink(missing_ok=True)
