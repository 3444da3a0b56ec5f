"""CPU graphs of an export on tiny random models: fused fp32, static QDQ int8 (conv stem
included), the fallback to a safer graph when parity fails, and the roofline's counts."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from cir_module.models.onnx_model import OnnxCIRModel
from tests.conftest import cross_fusion_conv_stem

pytest.importorskip("onnx", reason="the export extra is not installed")

import onnx
from onnx import TensorProto, helper, numpy_helper

from onnx_export import export as export_module
from onnx_export import export_checkpoint
from onnx_export.optimize import _reduce_l2_as_sum, quantize_dynamic_int8
from onnx_export.roofline import gemm_peak, graph_flops


@pytest.fixture(scope="module")
def conv_checkpoint(tmp_path_factory) -> Path:
    """tiny-clip with the convolutional stem and the cross fusion head."""
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("conv") / "ckpt"
    cross_fusion_conv_stem().save_pretrained(path)
    return path


def test_fused_fp32_graphs_are_served_and_match_torch(conv_checkpoint, tmp_path):
    manifest = export_checkpoint(
        conv_checkpoint, tmp_path / "onnx", variants=("fp32",), optimize=True
    )
    fusions = manifest["optimization"]["fusions"]
    # CLIP's vision tower: attention and layer norms fused (its causal text tower: norms).
    assert fusions["image"].get("Attention") == 2, fusions
    assert fusions["text"].get("SkipLayerNormalization", 0) > 0, fusions
    assert "kept_plain" not in manifest["parity"]["fp32"]
    assert manifest["variants"]["fp32"]["files"] == {
        g: f"{g}.opt.onnx" for g in ("image", "text", "fusion")
    }
    ops = {n.op_type for n in onnx.load(str(tmp_path / "onnx" / "image.opt.onnx")).graph.node}
    assert "Attention" in ops and "ReduceL2" not in ops
    for key, value in manifest["parity"]["fp32"].items():
        if key.endswith("_max_abs"):
            assert value <= 1e-4, key


def test_by_default_the_plain_graphs_are_served(conv_checkpoint, tmp_path):
    manifest = export_checkpoint(conv_checkpoint, tmp_path / "onnx", variants=("fp32",))
    assert manifest["variants"]["fp32"]["files"]["image"] == "image.onnx"
    assert "fusions" not in manifest["optimization"]
    # What a later fusion needs (the benchmark fuses for its roofline): type, heads, width.
    assert manifest["optimization"]["attention"]["image"] == ["clip", 4, 32]
    assert not list((tmp_path / "onnx").glob("*.opt.onnx"))


def test_static_int8_is_calibrated_qdq_with_the_conv_stem(conv_checkpoint, tmp_path):
    manifest = export_checkpoint(
        conv_checkpoint, tmp_path / "onnx", int8="static", calibration_size=32
    )
    int8 = manifest["optimization"]["int8"]
    assert int8["method"] == "static"
    assert int8["calibration"] == "rendered synthetic scenes (32)"
    image = int8["quantized"]["image"]
    assert image["conv"] > 0 and image["matmul_with_weights"] > 0
    assert image["quantize_nodes"] > 0
    # Whatever passed parity is QDQ on disk; the rest is served in fp32, with the reason.
    kept = manifest["parity"]["int8"].get("kept_fp32", {})
    for graph, name in manifest["variants"]["int8"]["files"].items():
        if graph in kept:
            assert name == manifest["variants"]["fp32"]["files"][graph]
            continue
        ops = {n.op_type for n in onnx.load(str(tmp_path / "onnx" / name)).graph.node}
        assert {"QuantizeLinear", "DequantizeLinear"} <= ops, graph
    served = OnnxCIRModel(tmp_path / "onnx", "int8", providers=["CPUExecutionProvider"])
    assert served.embed_texts(["make it red"]).shape == (1, manifest["model"]["dimension"])


def test_a_fused_graph_that_misses_parity_is_replaced_by_the_plain_one(
    conv_checkpoint, tmp_path, monkeypatch
):
    """An optimizer that broke the numbers (here: int8 weights posing as fused fp32) must not
    ship: the plain graph is served and the manifest says why."""

    def broken_fusion(source: Path, target: Path, *_: object) -> dict[str, int]:
        quantize_dynamic_int8(source, target)
        return {}

    monkeypatch.setattr(export_module, "fuse_for_cpu", broken_fusion)
    manifest = export_checkpoint(
        conv_checkpoint, tmp_path / "onnx", variants=("fp32",), optimize=True
    )
    kept = manifest["parity"]["fp32"]["kept_plain"]
    assert "image" in kept and "differ from torch" in kept["image"]
    assert manifest["variants"]["fp32"]["files"]["image"] == "image.onnx"
    assert not (tmp_path / "onnx" / "image.opt.onnx").exists()
    on_disk = json.loads((tmp_path / "onnx" / "manifest.json").read_text())
    assert on_disk["variants"] == manifest["variants"]


def _run(model: onnx.ModelProto, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
    import onnxruntime

    model.ir_version = 10
    session = onnxruntime.InferenceSession(
        model.SerializeToString(), providers=["CPUExecutionProvider"]
    )
    return session.run(None, feeds)


def test_reduce_l2_rewrite_is_the_same_function():
    axes = numpy_helper.from_array(np.array([-1], dtype=np.int64), "axes")
    graph = helper.make_graph(
        [helper.make_node("ReduceL2", ["x", "axes"], ["y"], name="norm", keepdims=1)],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, 5])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [None, 1])],
        [axes],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    x = np.random.default_rng(0).standard_normal((3, 5)).astype(np.float32)
    (before,) = _run(model, {"x": x})
    rewritten = onnx.ModelProto()
    rewritten.CopyFrom(model)
    assert _reduce_l2_as_sum(rewritten) == 1
    assert "ReduceL2" not in {n.op_type for n in rewritten.graph.node}
    (after,) = _run(rewritten, {"x": x})
    np.testing.assert_allclose(after, before, rtol=1e-6)
    np.testing.assert_allclose(before[:, 0], np.linalg.norm(x, axis=1), rtol=1e-6)


def test_graph_flops_counts_matmul_gemm_and_conv(tmp_path):
    rng = np.random.default_rng(0)
    weights = [
        numpy_helper.from_array(rng.standard_normal((4, 3, 3, 3), dtype=np.float32), "cw"),
        numpy_helper.from_array(rng.standard_normal((36, 7), dtype=np.float32), "mw"),
        numpy_helper.from_array(rng.standard_normal((7, 2), dtype=np.float32), "gw"),
        numpy_helper.from_array(np.array([-1, 36], dtype=np.int64), "shape"),
    ]
    nodes = [
        helper.make_node("Conv", ["x", "cw"], ["c"], pads=[1, 1, 1, 1]),  # [n, 4, 3, 3]
        helper.make_node("Reshape", ["c", "shape"], ["r"]),  # [n, 36]
        helper.make_node("MatMul", ["r", "mw"], ["m"]),  # [n, 7]
        helper.make_node("Gemm", ["m", "gw"], ["y"]),  # [n, 2]
    ]
    graph = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 3, 3, 3])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", 2])],
        weights,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    model.ir_version = 10
    onnx.save(model, tmp_path / "g.onnx")
    x = rng.standard_normal((2, 3, 3, 3)).astype(np.float32)
    flops = graph_flops(tmp_path / "g.onnx", {"x": x})
    assert flops["Conv"] == 2 * (2 * 4 * 3 * 3) * (3 * 3 * 3)
    assert flops["MatMul"] == 2 * 2 * 36 * 7
    assert flops["Gemm"] == 2 * 2 * 7 * 2
    assert flops["total"] == flops["Conv"] + flops["MatMul"] + flops["Gemm"]


def test_gemm_peak_measures_both_precisions():
    assert gemm_peak(1, size=128, seconds=0.05) > 0
    assert gemm_peak(1, int8=True, size=128, seconds=0.05) > 0
