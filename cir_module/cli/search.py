"""``cir search``: a composed query (a reference image file and a modification text) against
a collection, ranked in the terminal, optionally drawn as a contact sheet."""

from __future__ import annotations

import argparse
import sys
from typing import TYPE_CHECKING

from cir_module.cli.options import add_weaviate_address, connect_weaviate

if TYPE_CHECKING:
    from integration.search import SearchResult

__all__ = ["add_parser", "format_search_result"]


def add_parser(sub: argparse._SubParsersAction) -> None:
    """Register ``search``."""
    search = sub.add_parser("search", help="composed query: a reference image + a modification")
    search.add_argument("--collection", required=True)
    search.add_argument("--image", required=True, help="the reference image file")
    search.add_argument("--text", required=True, help="the modification, e.g. 'but in red'")
    search.add_argument("--limit", type=int, default=10, help="results to return")
    search.add_argument("--rerank", action="store_true", help="rerank the results (Weaviate)")
    search.add_argument(
        "--caption-property",
        help="with --rerank: rerank on the captions stored here (cir enrich), as a change "
        "verifier reads them; each result's change list from the reference's caption is printed",
    )
    search.add_argument(
        "--sheet", metavar="OUT", help="also write a contact sheet: OUT.png or OUT.html"
    )
    add_weaviate_address(search)
    search.set_defaults(func=_search)


def format_search_result(result: SearchResult) -> str:
    """The result as printed: the query, then one line per hit (rank, distance, rerank score
    and first-stage rank when reranked, title, path), and under it the changes from the
    reference's caption when captions were read."""
    where = "in the collection, left out" if result.excluded else "not in the collection"
    lines = [f"reference: {result.reference} ({where})", f'modification: "{result.text}"']
    if not result.hits:
        lines.append("no results")
    if result.reference_caption:
        lines.append(f'reference caption: "{result.reference_caption}"')
    for hit in result.hits:
        first = f"  (first stage #{hit.first_rank})" if hit.first_rank is not None else ""
        lines.append(f"{hit.rank:>3}. {hit.scores()}{first}  {hit.title or ''}  {hit.path or ''}")
        if hit.changes:
            lines.append(f'       changes: "{hit.changes}"')
    return "\n".join(lines)


def _search(args: argparse.Namespace) -> None:
    from pathlib import Path

    from integration.contact_sheet import SHEET_FORMATS
    from integration.search import composed_search, write_result_sheet

    if not Path(args.image).is_file():
        sys.exit(f"cir search: no such file: {args.image}")
    if args.sheet and Path(args.sheet).suffix.lower() not in SHEET_FORMATS:
        sys.exit(f"cir search: --sheet must end in {', '.join(SHEET_FORMATS)}: {args.sheet}")
    with connect_weaviate(args, "search") as client:
        if not client.collections.exists(args.collection):
            sys.exit(f"cir search: no collection {args.collection}")
        result = composed_search(
            client.collections.get(args.collection),
            args.image,
            args.text,
            limit=args.limit,
            rerank=args.rerank,
            with_images=bool(args.sheet),
            caption_property=args.caption_property,
        )
    print(format_search_result(result))
    if args.sheet:
        print(f"contact sheet: {write_result_sheet(result, args.sheet)}")
