"""``cir search``: one composed query (a reference image file and a modification text) against
a collection, as the README's client snippet runs it: ``nearText`` with the composed-query
string, optionally ``rerank`` with the same string, and the reference itself left out by a
filter on its UUID when the collection holds it (``cir ingest`` derives UUIDs from content)."""

from __future__ import annotations

import base64
from dataclasses import dataclass, field
from pathlib import Path

from weaviate.classes.query import Filter, MetadataQuery, Rerank
from weaviate.collections import Collection

from cir_module.images import decode_base64_image
from cir_module.query import compose_query
from integration.contact_sheet import SheetTile, write_contact_sheet
from integration.enrich import blob_text
from integration.folder_ingest import content_uuid

__all__ = ["SearchHit", "SearchResult", "composed_search", "sheet_tiles", "write_result_sheet"]


@dataclass(frozen=True)
class SearchHit:
    """One ranked result."""

    rank: int
    uuid: str
    distance: float | None
    rerank_score: float | None
    path: str | None
    title: str | None
    image: str | None = None  # the stored base64 blob, when asked for

    def scores(self) -> str:
        """Distance and (when reranked) rerank score, as printed and on contact sheets."""
        parts = []
        if self.distance is not None:
            parts.append(f"distance {self.distance:.4f}")
        if self.rerank_score is not None:
            parts.append(f"rerank {self.rerank_score:.4f}")
        return "  ".join(parts)


@dataclass
class SearchResult:
    """A query's ranked results, and the UUID of the reference when it was left out."""

    reference: str
    text: str
    excluded: str | None
    hits: list[SearchHit] = field(default_factory=list)


def composed_search(
    collection: Collection,
    reference: str | Path,
    text: str,
    *,
    limit: int = 10,
    rerank: bool = False,
    with_images: bool = False,
    image_property: str = "image",
) -> SearchResult:
    """Rank ``collection`` for "``reference``, changed as ``text`` says".

    ``rerank`` adds Weaviate's ``rerank`` on the image property with the same query string
    (the order is then the rerank score's). ``with_images`` returns each hit's stored image
    (base64) too, e.g. for a contact sheet.
    """
    data = Path(reference).read_bytes()
    query = compose_query(data, text)
    uuid = content_uuid(data)
    # The reference is no answer to "this, but changed" (CIRR's protocol leaves it out).
    excluded = uuid if collection.data.exists(uuid) else None
    properties = ["path", "title", *([image_property] if with_images else [])]
    result = collection.query.near_text(
        query=query,
        limit=limit,
        filters=Filter.by_id().not_equal(uuid) if excluded else None,
        rerank=Rerank(prop=image_property, query=query) if rerank else None,
        return_properties=properties,
        return_metadata=MetadataQuery(distance=True),
    )
    hits = [
        SearchHit(
            rank=rank,
            uuid=str(obj.uuid),
            distance=obj.metadata.distance,
            rerank_score=obj.metadata.rerank_score,
            path=obj.properties.get("path"),
            title=obj.properties.get("title"),
            image=blob_text(obj.properties.get(image_property)) if with_images else None,
        )
        for rank, obj in enumerate(result.objects, 1)
    ]
    return SearchResult(reference=str(reference), text=text, excluded=excluded, hits=hits)


def sheet_tiles(result: SearchResult) -> list[SheetTile]:
    """The reference then each hit (which must carry its image: ``with_images``), as contact
    sheet tiles labelled with rank, distance, rerank score, title and path."""
    data = Path(result.reference).read_bytes()
    reference = decode_base64_image(base64.b64encode(data).decode("ascii"), "reference")
    tiles = [
        SheetTile(
            reference,
            ("reference", f'"{result.text}"', Path(result.reference).name),
            reference=True,
        )
    ]
    for hit in result.hits:
        if hit.image is None:
            raise ValueError("the hits carry no images: search with with_images=True")
        first = f"#{hit.rank}  {hit.scores()}"
        image = decode_base64_image(hit.image, f"result {hit.rank}")
        tiles.append(SheetTile(image, (first, hit.title or "", hit.path or "")))
    return tiles


def write_result_sheet(result: SearchResult, path: str | Path) -> Path:
    """A contact sheet of ``result`` (PNG or HTML, by ``path``'s suffix)."""
    title = f'{Path(result.reference).name} + "{result.text}"'
    return write_contact_sheet(path, sheet_tiles(result), title)
