"""Options several verbs share, each defined once so that one idea has one spelling."""

from __future__ import annotations

import argparse
import sys
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from weaviate import WeaviateClient

__all__ = [
    "add_captioner",
    "add_dataset_name",
    "add_enhance",
    "add_scene_graph_noise",
    "add_weaviate_address",
    "connect_weaviate",
]


def add_dataset_name(parser: argparse.ArgumentParser) -> None:
    """``--dataset-name``: the annotation name in a CIRR-layout data root."""
    parser.add_argument("--dataset-name", default="shapes", help="annotation name (rc2 for CIRR)")


def add_enhance(parser: argparse.ArgumentParser, default: str | None) -> None:
    """``--enhance none|keywords|vlm``: rewrite modification texts as the service's query
    enhancement would (``CIR_QUERY_ENHANCEMENT``, where "none" is its "off")."""
    parser.add_argument(
        "--enhance",
        choices=["none", "keywords", "vlm"],
        default=default,
        help="rewrite modification texts (keywords: the service's rule-based enhancement; vlm: "
        "the describe-and-verify VLM reads the reference, from --queries in training and "
        "--chat-model in evaluation)",
    )


def add_scene_graph_noise(parser: argparse.ArgumentParser) -> None:
    """The scene-graph captioner's noise (a stand-in for a VLM's mistakes) and its seed."""
    parser.add_argument("--drop", type=float, default=0.0, help="scene-graph noise: drop a shape")
    parser.add_argument(
        "--wrong", type=float, default=0.0, help="scene-graph noise: wrong attribute"
    )
    parser.add_argument("--seed", type=int, default=0)


def add_captioner(
    parser: argparse.ArgumentParser, default: str = "scene-graph", with_data: bool = True
) -> None:
    """The captioner of RAR enrichment (``cir enrich``, ``cir ingest --enrich``, ``cir rar``)
    and what each kind needs: benchmark data (``--data``, unless the verb has its own), a
    model, an endpoint."""
    parser.add_argument(
        "--captioner",
        choices=["scene-graph", "vlm", "transformers", "openai"],
        default=default,
        help="vlm: the VLM trained here (cir vlm train), asked what its caption stage learned",
    )
    if with_data:
        parser.add_argument("--data", help="scene-graph: benchmark folder with scene_graphs/")
    parser.add_argument(
        "--model",
        help="vlm: a stage's model/ folder; transformers: checkpoint; openai: the served model",
    )
    parser.add_argument("--url", help="openai: base URL of a chat-completions endpoint (.../v1)")
    parser.add_argument("--concurrency", type=int, default=4, help="openai: requests in flight")
    add_scene_graph_noise(parser)


def add_weaviate_address(parser: argparse.ArgumentParser) -> None:
    """``--weaviate URL`` and ``--grpc-port``: the Weaviate to talk to (default: where
    ``cir up`` and ``connect_to_local`` put it)."""
    parser.add_argument(
        "--weaviate",
        default="http://127.0.0.1:8080",
        metavar="URL",
        help="Weaviate's REST address (default: %(default)s)",
    )
    parser.add_argument(
        "--grpc-port", type=int, default=50051, help="Weaviate's gRPC port on the same host"
    )


def connect_weaviate(args: argparse.Namespace, verb: str) -> WeaviateClient:
    """A client for the Weaviate that :func:`add_weaviate_address`'s flags name; exits with
    one line saying so when nothing answers there."""
    from weaviate.exceptions import WeaviateStartUpError

    from integration.stack import connect_to_url

    try:
        return connect_to_url(args.weaviate, args.grpc_port)
    except (WeaviateStartUpError, ValueError) as exc:
        sys.exit(
            f"cir {verb}: cannot use Weaviate at {args.weaviate} (gRPC port {args.grpc_port}); "
            f"is `cir up` running? ({exc})"
        )
