"""``cir ingest``: a folder of your own images into a collection (re-runs add nothing twice;
an interrupted run continues), optionally enriched with captions afterwards."""

from __future__ import annotations

import argparse
import sys
from typing import TYPE_CHECKING

from cir_module.cli.options import add_captioner, add_weaviate_address, connect_weaviate

if TYPE_CHECKING:
    from integration.enrich import EnrichReport
    from integration.folder_ingest import FolderIngestReport

__all__ = ["add_parser", "format_ingest_report"]


def add_parser(sub: argparse._SubParsersAction) -> None:
    """Register ``ingest``."""
    ingest = sub.add_parser(
        "ingest", help="add a folder of images to a collection (resumable, no duplicates)"
    )
    ingest.add_argument("folder", help="folder to walk (recursively)")
    ingest.add_argument("--collection", required=True, help="created if it does not exist")
    add_weaviate_address(ingest)
    ingest.add_argument(
        "--batch-size", type=int, default=16, help="objects per batch request (and per caption "
        "batch with --enrich)",
    )  # fmt: skip
    ingest.add_argument("--limit", type=int, help="add at most this many new images in this run")
    ingest.add_argument(
        "--enrich", action="store_true",
        help="then caption the collection's images (cir enrich; a new collection gets a caption "
        "property that its vectors mix in)",
    )  # fmt: skip
    add_captioner(ingest, default="transformers")
    ingest.set_defaults(func=_ingest)


def format_ingest_report(report: FolderIngestReport) -> str:
    """The report as printed: counts, then each skipped and failed file with its reason."""
    lines = [
        f"{report.root}: {len(report.added)} added, {len(report.present)} already stored, "
        f"{len(report.skipped)} skipped, {len(report.failed)} failed"
        + (f", {report.not_reached} left for a later run (--limit)" if report.not_reached else "")
    ]
    for title, entries in (("skipped", report.skipped), ("failed", report.failed)):
        if entries:
            lines.append(f"{title}:")
            lines += [f"  {path}: {reason}" for path, reason in entries]
    return "\n".join(lines)


def _format_enrich_report(report: EnrichReport) -> str:
    lines = [
        f"enrich: {report.enriched} captioned, {report.skipped} already captioned, "
        f"{len(report.failed)} failed"
    ]
    lines += [f"  {uuid}: {reason}" for uuid, reason in report.failed]
    return "\n".join(lines)


def _ingest(args: argparse.Namespace) -> None:
    from pathlib import Path

    from cir_module.cli.enrich import captioner_from_args
    from cir_module.settings import ServiceSettings
    from integration.folder_ingest import ensure_folder_collection, ingest_folder

    if not Path(args.folder).is_dir():
        sys.exit(f"cir ingest: not a folder: {args.folder}")
    # Built first, so that a missing --model or --url stops the command before any work.
    captioner = captioner_from_args(args) if args.enrich else None
    # The service's limits, read from the same CIR_* variables it reads: a file beyond them
    # would only come back as a failure, so it is skipped here with the reason.
    limits = ServiceSettings().image_limits()
    with connect_weaviate(args, "ingest") as client:
        try:
            collection = ensure_folder_collection(client, args.collection, caption=args.enrich)
        except ValueError as exc:
            sys.exit(f"cir ingest: {exc}")
        report = ingest_folder(
            collection, args.folder, limits=limits, batch_size=args.batch_size, limit=args.limit
        )
        print(format_ingest_report(report))
        enriched = None
        if captioner is not None:
            from integration.enrich import enrich_collection

            enriched = enrich_collection(collection, captioner, batch_size=args.batch_size)
            print(_format_enrich_report(enriched))
    if report.failed or (enriched is not None and enriched.failed):
        sys.exit(1)
