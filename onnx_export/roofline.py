"""How close a graph runs to this processor's matrix-product speed.

* :func:`graph_flops`: the multiply-add work (2 FLOPs each) of every ``MatMul``, ``Gemm`` and
  ``Conv`` in an ONNX graph for given inputs, with every operand's shape read from one real
  run of the graph (so shapes computed by ``Shape``/``Reshape`` chains are exact).
* :func:`gemm_peak`: the GFLOP/s one large square matrix product reaches on onnxruntime with a
  given thread count, fp32 (``MatMul``) or int8 (``MatMulInteger``, u8 x s8): the achievable
  peak to compare a variant with.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["GEMM_OPS", "gemm_peak", "graph_flops"]

GEMM_OPS = ("MatMul", "Gemm", "Conv")


def _session(model_bytes: bytes, threads: int | None) -> Any:
    """A CPU session with the serving process's options, so that the peak and the FLOP count
    are measured as the service runs its graphs."""
    from cir_module.models.onnx_model import onnxruntime_module, serving_session_options

    return onnxruntime_module().InferenceSession(
        model_bytes,
        sess_options=serving_session_options(threads),
        providers=["CPUExecutionProvider"],
    )


def _node_flops(node: Any, shapes: dict[str, tuple[int, ...]], attrs: dict[str, Any]) -> int:
    """FLOPs of one GEMM-like node from its operand and result shapes."""
    out = shapes[node.output[0]]
    if node.op_type == "Conv":
        weight = shapes[node.input[1]]  # [out_channels, in_channels / group, *kernel]
        return 2 * int(np.prod(out)) * int(np.prod(weight[1:]))
    a = shapes[node.input[0]]
    # Gemm's A is [m, k] or, transposed, [k, m]; MatMul's is [..., m, k] (or a 1-D [k]).
    k = a[int(not attrs.get("transA", 0))] if node.op_type == "Gemm" else a[-1]
    return 2 * int(np.prod(out)) * int(k)


def graph_flops(path: str | Path, feeds: dict[str, np.ndarray]) -> dict[str, int]:
    """FLOPs per op type (and ``total``) of the fp32 graph at ``path`` run on ``feeds``.

    Every operand and result of a GEMM-like node is made a graph output for one run; the
    shapes come from that run. Count a plain fp32 export: fused operators (Attention) hide
    their products from this count.
    """
    import onnx
    from onnx import helper

    model = onnx.load(str(path))
    initializers = {i.name: tuple(i.dims) for i in model.graph.initializer}
    nodes = [n for n in model.graph.node if n.op_type in GEMM_OPS]
    wanted = {name for n in nodes for name in [*n.input[:2], n.output[0]] if name}
    existing = {o.name for o in model.graph.output}
    for name in sorted(wanted - existing - set(initializers)):
        model.graph.output.append(helper.make_empty_tensor_value_info(name))
    session = _session(model.SerializeToString(), None)
    names = [o.name for o in session.get_outputs()]
    results = session.run(names, feeds)
    shapes = dict(initializers)
    shapes.update({n: tuple(r.shape) for n, r in zip(names, results, strict=True)})
    flops: dict[str, int] = {}
    for node in nodes:
        attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
        flops[node.op_type] = flops.get(node.op_type, 0) + _node_flops(node, shapes, attrs)
    flops["total"] = sum(flops.values())
    return flops


def _matmul_model(size: int, int8: bool) -> bytes:
    """A graph of one ``size`` x ``size`` x ``size`` product, weights as an initializer."""
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    if int8:
        weight = rng.integers(-127, 128, size=(size, size), dtype=np.int8)
        node = helper.make_node("MatMulInteger", ["a", "w"], ["y"])
        a_type, y_type = TensorProto.UINT8, TensorProto.INT32
    else:
        weight = rng.standard_normal((size, size), dtype=np.float32)
        node = helper.make_node("MatMul", ["a", "w"], ["y"])
        a_type = y_type = TensorProto.FLOAT
    graph = helper.make_graph(
        [node],
        "gemm",
        [helper.make_tensor_value_info("a", a_type, [size, size])],
        [helper.make_tensor_value_info("y", y_type, [size, size])],
        [numpy_helper.from_array(weight, "w")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    model.ir_version = 10  # what this onnxruntime reads (onnx writes a newer one by default)
    return model.SerializeToString()


def gemm_peak(
    threads: int | None, int8: bool = False, size: int = 1024, seconds: float = 2.0
) -> float:
    """Achieved GFLOP/s (GOP/s for int8) of repeated ``size``-cubed products on
    onnxruntime with ``threads`` intra-op threads: the best of short windows, since the
    machine may be shared and a window that another process interrupted is not the peak."""
    session = _session(_matmul_model(size, int8), threads)
    rng = np.random.default_rng(1)
    if int8:
        a = rng.integers(0, 256, size=(size, size), dtype=np.uint8)
    else:
        a = rng.standard_normal((size, size), dtype=np.float32)
    session.run(None, {"a": a})  # first run: packing, allocation
    best, deadline = 0.0, time.perf_counter() + seconds
    while time.perf_counter() < deadline:
        start = time.perf_counter()
        session.run(None, {"a": a})
        best = max(best, 2 * size**3 / (time.perf_counter() - start) / 1e9)
    return best
