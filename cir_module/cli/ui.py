"""``cir ui``: a search page for a collection (reference + modification, results as pictures)."""

from __future__ import annotations

import argparse
import sys

from cir_module.cli.options import add_weaviate_address, connect_weaviate

__all__ = ["add_page_address", "add_parser"]


def add_parser(sub: argparse._SubParsersAction) -> None:
    """Register ``ui``."""
    ui = sub.add_parser("ui", help="a web page for composed search in a collection")
    ui.add_argument("--collection", required=True)
    ui.add_argument("--limit", type=int, default=10, help="results shown by default")
    ui.add_argument(
        "--caption-property",
        help="rerank on the captions stored here (cir enrich) when the service serves a change "
        "verifier; each result then shows its rationale on demand",
    )
    add_page_address(ui)
    add_weaviate_address(ui)
    ui.set_defaults(func=_ui)


def add_page_address(parser: argparse.ArgumentParser) -> None:
    """``--host`` and ``--port`` of the search page (shared with ``cir demo --ui``)."""
    parser.add_argument("--host", default="127.0.0.1", help="address the page binds")
    parser.add_argument("--port", type=int, default=7860, help="the page's port")


def _ui(args: argparse.Namespace) -> None:
    from cir_module.settings import ServiceSettings
    from integration.ui_app import UIConfig, serve_ui

    # Checked once here, so that a wrong address or name is one line, not a traceback from
    # inside the web server's start-up.
    with connect_weaviate(args, "ui") as client:
        if not client.collections.exists(args.collection):
            sys.exit(f"cir ui: no collection {args.collection} at {args.weaviate}")
    config = UIConfig(
        args.collection,
        limits=ServiceSettings().image_limits(),
        default_limit=args.limit,
        caption_property=args.caption_property,
    )
    serve_ui(lambda: connect_weaviate(args, "ui"), config, host=args.host, port=args.port)
