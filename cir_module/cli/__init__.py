"""The ``cir`` command: serve, create models, run the demo, manage the local Weaviate.

One module per verb group registers its verbs (``add_parser``) and holds their handlers;
building the parser imports nothing heavy (no torch), each handler imports what it needs.
"""

from __future__ import annotations

import argparse
import logging
from collections.abc import Sequence
from types import ModuleType

from cir_module.cli import (
    data,
    demo,
    enrich,
    evaluate,
    ingest,
    models,
    rerank,
    search,
    serve,
    train,
    ui,
    up,
    vlm,
    weaviate_install,
)

__all__ = ["build_parser", "main"]

# In the order ``cir --help`` lists them.
VERB_GROUPS = (
    serve,
    models,
    demo,
    up,
    ingest,
    search,
    ui,
    train,
    evaluate,
    data,
    rerank,
    vlm,
    enrich,
    weaviate_install,
)


def build_parser(
    groups: Sequence[ModuleType] = VERB_GROUPS, prog: str = "cir"
) -> argparse.ArgumentParser:
    """The argument parser of ``cir`` (exposed for documentation and tests); ``groups``: the
    modules whose ``add_parser`` registers verbs (``research`` adds its own)."""
    parser = argparse.ArgumentParser(prog=prog, description=__doc__.split("\n\n")[0])
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True)
    for group in groups:
        group.add_parser(sub)
    return parser


def main(
    argv: list[str] | None = None, groups: Sequence[ModuleType] = VERB_GROUPS, prog: str = "cir"
) -> None:
    """Entry point of the ``cir`` console script (and, with more ``groups``, of research's)."""
    args = build_parser(groups, prog).parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    if not args.verbose:  # one line per HTTP call drowns the demo's output
        logging.getLogger("httpx").setLevel(logging.WARNING)
    args.func(args)
