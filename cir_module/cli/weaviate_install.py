"""``cir weaviate-install``: build the pinned Weaviate into the cache (``go install``).

Named ``weaviate_install`` rather than ``weaviate``: a module of that name would shadow the
weaviate client for a script run from this folder.
"""

from __future__ import annotations

import argparse
import sys

__all__ = ["add_parser"]


def add_parser(sub: argparse._SubParsersAction) -> None:
    """Register ``weaviate-install``."""
    wv = sub.add_parser("weaviate-install", help="build the pinned Weaviate into the cache")
    # No default here: reading WEAVIATE_VERSION imports integration.weaviate_server (httpx),
    # which every `cir` command would then pay for.
    wv.add_argument(
        "--version",
        help="release to build (default: WEAVIATE_VERSION in integration/weaviate_server.py)",
    )
    wv.set_defaults(func=_weaviate_install)


def _weaviate_install(args: argparse.Namespace) -> None:
    from integration.weaviate_server import WEAVIATE_VERSION, install_weaviate

    try:
        print(install_weaviate(args.version or WEAVIATE_VERSION))
    except RuntimeError as exc:  # no Go, or the build failed: its message says which
        sys.exit(f"cir weaviate-install: {exc}")
