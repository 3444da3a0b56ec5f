"""``cir demo``: a local Weaviate, the service and a sample gallery, then composed queries."""

from __future__ import annotations

import argparse

from cir_module.cli.ui import add_page_address

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
    demo.add_argument(
        "--tier",
        choices=("base", "hard"),
        default="hard",
        help="hard (default): the hard tier's gallery and first stage, with the shipped change "
        "verifier as the second stage (its captions stored, the target's rank before and after "
        "rerank and the top result's rationale printed); base: the base tier's first stage "
        "alone",
    )
    demo.add_argument(
        "--ui",
        action="store_true",
        help="instead of printing queries, keep the stack up and serve the search page on the "
        "gallery (with the queries as examples) until Ctrl-C",
    )
    demo.add_argument(
        "--gallery-dir", help="--ui: write the gallery's PNG files here (default: temporary)"
    )
    add_page_address(demo)
    demo.set_defaults(func=_demo)


def _demo(args: argparse.Namespace) -> None:
    from integration.demo import run_demo, run_demo_ui

    gallery = {
        "checkpoint": args.checkpoint,
        "gallery_size": args.gallery_size,
        "num_queries": args.queries,
        "seed": args.seed,
        "tier": args.tier,
    }
    if args.ui:
        run_demo_ui(**gallery, gallery_dir=args.gallery_dir, host=args.host, port=args.port)
    else:
        run_demo(**gallery, top_k=args.top_k)
