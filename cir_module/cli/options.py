"""Options several verbs share, each defined once so that one idea has one spelling."""

from __future__ import annotations

import argparse

__all__ = ["add_dataset_name", "add_enhance", "add_scene_graph_noise"]


def add_dataset_name(parser: argparse.ArgumentParser) -> None:
    """``--dataset-name``: the annotation name in a CIRR-layout data root."""
    parser.add_argument("--dataset-name", default="shapes", help="annotation name (rc2 for CIRR)")


def add_enhance(parser: argparse.ArgumentParser, default: str | None) -> None:
    """``--enhance none|keywords``: rewrite modification texts as the service's query
    enhancement would (``CIR_QUERY_ENHANCEMENT``, where "none" is its "off")."""
    parser.add_argument(
        "--enhance",
        choices=["none", "keywords"],
        default=default,
        help="rewrite modification texts (keywords: the service's rule-based enhancement)",
    )


def add_scene_graph_noise(parser: argparse.ArgumentParser) -> None:
    """The scene-graph captioner's noise (a stand-in for a VLM's mistakes) and its seed."""
    parser.add_argument("--drop", type=float, default=0.0, help="scene-graph noise: drop a shape")
    parser.add_argument(
        "--wrong", type=float, default=0.0, help="scene-graph noise: wrong attribute"
    )
    parser.add_argument("--seed", type=int, default=0)
