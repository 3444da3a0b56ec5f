"""The pure parts of benchmarks/scale.py: recall against the exact ranking, latency
percentiles, the per-object slope and the sizing formulas (no Weaviate is started)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def scale():
    spec = importlib.util.spec_from_file_location("scale_benchmark", ROOT / "benchmarks/scale.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while the class is made
    spec.loader.exec_module(module)
    return module


def test_overlap_counts_the_share_of_the_exact_top_k_found(scale):
    exact = [["a", "b", "c"], ["d", "e", "f"]]
    approx = [["a", "c", "x"], ["d", "e", "f"]]
    assert scale.overlap_at_k(approx, exact, 3) == pytest.approx((2 / 3 + 1) / 2)
    assert scale.overlap_at_k(approx, exact, 1) == 1.0
    # order within the top k does not matter; what lies beyond k does not count
    assert scale.overlap_at_k([["c", "b", "a", "z"]], [["a", "b", "c", "y"]], 3) == 1.0


def test_overlap_skips_queries_without_an_exact_ranking_and_checks_lengths(scale):
    assert scale.overlap_at_k([["a"], []], [["a"], []], 1) == 1.0
    with pytest.raises(ValueError):
        scale.overlap_at_k([["a"]], [["a"], ["b"]], 1)
    with pytest.raises(ValueError):
        scale.overlap_at_k([[]], [[]], 1)


def test_the_reference_is_dropped_before_the_top_k_is_cut(scale):
    assert scale.drop_reference(["ref", "a", "b", "c"], "ref", 2) == ["a", "b"]
    assert scale.drop_reference(["a", "b", "c"], "ref", 2) == ["a", "b"]


def test_latency_summary_in_milliseconds_ignores_failed_queries(scale):
    summary = scale.latency_summary([0.010] * 98 + [0.100, float("nan")] + [0.200])
    assert summary["p50_ms"] == 10.0
    assert summary["p99_ms"] > 10.0
    assert scale.latency_summary([float("nan")]) == {}


def test_per_object_slope_is_the_least_squares_slope(scale):
    points = [(1000, 5e6 + 1000 * 900), (10_000, 5e6 + 10_000 * 900)]
    assert scale.per_object_slope(points) == pytest.approx(900)
    assert scale.per_object_slope([(100, 5000)]) == 50
    with pytest.raises(ValueError):
        scale.per_object_slope([])


def test_documented_hnsw_model(scale):
    # the docs' own example: 1M 384-dimensional float32 vectors, maxConnections 64, 10 B a link
    model = scale.documented_hnsw_bytes(1_000_000, 384, max_connections=64)
    assert model["model"] == 1_000_000 * (1536 + 640)
    assert model["rule_of_thumb"] == 2 * 1_000_000 * 1536
    assert model["upper"] == 1_000_000 * (1536 + 1280)
    compressed = scale.documented_hnsw_bytes(10, 128, bytes_per_vector=144)
    assert compressed["model"] == 10 * (144 + 32 * 10)


def test_projection_spreads_replicas_over_nodes(scale):
    one = scale.project(1_000_000, 100e6, 1000)
    assert one == 100e6 + 1e9
    # 3 nodes, replication 3: every node holds every object
    assert scale.project(1_000_000, 100e6, 1000, nodes=3, replication=3) == one
    assert scale.project(1_000_000, 0, 1000, nodes=3, replication=1) == pytest.approx(1e9 / 3)
    with pytest.raises(ValueError):
        scale.project(10, 0, 1, nodes=1, replication=3)
