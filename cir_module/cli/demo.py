"""``cir demo``: a local Weaviate, the service and a sample gallery, then composed queries."""

from __future__ import annotations

import argparse

__all__ = ["add_parser"]


def add_parser(sub: argparse._SubParsersAction) -> None:
    """Register ``demo``."""
    demo = sub.add_parser(
        "demo", help="local Weaviate + service + sample gallery, composed queries"
    )
    demo.add_argument("--checkpoint", help="model to serve (default: the shipped checkpoint)")
    demo.add_argument("--gallery-size", type=int, default=100)
    demo.add_argument("--queries", type=int, default=5)
    demo.add_argument("--seed", type=int, default=0)
    demo.add_argument("--top-k", type=int, default=5)
    demo.set_defaults(func=_demo)


def _demo(args: argparse.Namespace) -> None:
    from integration.demo import run_demo

    run_demo(
        checkpoint=args.checkpoint,
        gallery_size=args.gallery_size,
        num_queries=args.queries,
        seed=args.seed,
        top_k=args.top_k,
    )
