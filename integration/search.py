"""``cir search``: one composed query (a reference image file and a modification text) against
a collection, as the client snippet of docs/search.md runs it: ``nearText`` with the composed-query
string, optionally ``rerank`` with the same string, and the reference itself left out by a
filter on its UUID when the collection holds it (``cir ingest`` derives UUIDs from content).

With ``rerank`` each hit also carries its rank in the first stage alone (the same ``nearText``
without ``rerank``). On a collection whose images are captioned (``cir enrich``), ``rerank``
may read the captions (``caption_property``): the query then carries the reference's stored
caption when the reference is a stored object, and each hit its rationale, the change list
from the reference's caption to its own (what the change verifier read, by the default
differ)."""

from __future__ import annotations

import base64
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from weaviate.classes.query import Filter, MetadataQuery, Rerank
from weaviate.collections import Collection

from cir_module.images import decode_base64_image
from cir_module.query import compose_query
from cir_module.vlm.changes import description_changes
from integration.contact_sheet import SheetTile, write_contact_sheet
from integration.enrich import blob_text
from integration.folder_ingest import content_uuid

__all__ = [
    "SearchHit",
    "SearchResult",
    "composed_search",
    "sheet_tiles",
    "stored_image",
    "write_result_sheet",
]


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
    first_rank: int | None = None  # its rank in the first stage alone (reranked queries)
    caption: str | None = None  # its stored caption (rerank on the caption property)
    changes: str | None = None  # the change list from the reference's caption to its own

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
    """A query's ranked results, and the UUID of the reference when it was left out.

    ``reference`` names the reference (its path, or a label such as an uploaded file's name);
    ``reference_image`` holds its bytes, for contact sheets and pages.
    """

    reference: str
    text: str
    excluded: str | None
    hits: list[SearchHit] = field(default_factory=list)
    reference_image: bytes = b""
    reference_caption: str | None = None


def composed_search(
    collection: Collection,
    reference: str | Path | bytes,
    text: str,
    *,
    limit: int = 10,
    rerank: bool = False,
    with_images: bool = False,
    exclude: str | None = None,
    label: str | None = None,
    text_properties: Sequence[str] = ("path", "title"),
    image_property: str = "image",
    caption_property: str | None = None,
) -> SearchResult:
    """Rank ``collection`` for "``reference``, changed as ``text`` says".

    ``reference`` is an image file's path or its bytes. ``rerank`` adds Weaviate's
    ``rerank`` on the image property with the same query string (the order is then the
    rerank score's). ``with_images`` returns each hit's stored image (base64) too, e.g. for a
    contact sheet. ``exclude`` is the UUID of the stored object the reference is, when known
    (picked from the collection); otherwise the UUID ``cir ingest`` derives from its content
    is left out if the collection holds it. ``label`` names the reference in the result
    (default: its path). ``text_properties`` are returned with each hit (``path`` and
    ``title``, as ``cir ingest`` writes them). ``caption_property``: ``rerank`` reads the
    stored captions there (the module's docstring).
    """
    data = reference if isinstance(reference, bytes) else Path(reference).read_bytes()
    if exclude is None:
        uuid = content_uuid(data)
        # The reference is no answer to "this, but changed" (CIRR's protocol leaves it out).
        exclude = uuid if collection.data.exists(uuid) else None
    captioned = rerank and caption_property is not None
    reference_caption = stored_text(collection, exclude, caption_property) if captioned else None
    query = compose_query(data, text, caption=reference_caption)
    properties = [
        *text_properties,
        *([image_property] if with_images else []),
        *([caption_property] if captioned else []),
    ]
    search = dict(
        query=query,
        limit=limit,
        filters=Filter.by_id().not_equal(exclude) if exclude else None,
        return_metadata=MetadataQuery(distance=True),
    )
    prop = caption_property if captioned else image_property
    result = collection.query.near_text(
        **search,
        rerank=Rerank(prop=prop, query=query) if rerank else None,
        return_properties=properties,
    )
    first_ranks: dict[str, int] = {}
    if rerank:  # the first stage alone: where each hit stood before the second stage
        first = collection.query.near_text(**search, return_properties=[])
        first_ranks = {str(o.uuid): rank for rank, o in enumerate(first.objects, 1)}
    hits = []
    for rank, obj in enumerate(result.objects, 1):
        caption = obj.properties.get(caption_property) if captioned else None
        changes = (
            description_changes(reference_caption, caption)
            if reference_caption and caption
            else None
        )
        hits.append(
            SearchHit(
                rank=rank,
                uuid=str(obj.uuid),
                distance=obj.metadata.distance,
                rerank_score=obj.metadata.rerank_score,
                path=obj.properties.get("path"),
                title=obj.properties.get("title"),
                image=blob_text(obj.properties.get(image_property)) if with_images else None,
                first_rank=first_ranks.get(str(obj.uuid)),
                caption=caption,
                changes=changes,
            )
        )
    if label is None:
        label = "uploaded image" if isinstance(reference, bytes) else str(reference)
    return SearchResult(
        label, text, exclude, hits, reference_image=data, reference_caption=reference_caption
    )


def stored_text(collection: Collection, uuid: str | None, prop: str | None) -> str | None:
    """The text property ``prop`` of object ``uuid`` (None when either is unknown or it is
    empty)."""
    if not uuid or not prop:
        return None
    obj = collection.query.fetch_object_by_id(uuid, return_properties=[prop])
    value = obj.properties.get(prop) if obj is not None else None
    return value if isinstance(value, str) and value.strip() else None


def stored_image(collection: Collection, uuid: str, image_property: str = "image") -> bytes | None:
    """The image bytes of object ``uuid`` of ``collection``, or None when there is no such
    object (or it holds no image)."""
    obj = collection.query.fetch_object_by_id(uuid, return_properties=[image_property])
    blob = obj.properties.get(image_property) if obj is not None else None
    return base64.b64decode(blob_text(blob)) if blob else None


def sheet_tiles(result: SearchResult) -> list[SheetTile]:
    """The reference then each hit (which must carry its image: ``with_images``), as contact
    sheet tiles labelled with rank, distance, rerank score, title and path."""
    encoded = base64.b64encode(result.reference_image).decode("ascii")
    reference = decode_base64_image(encoded, "reference")
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
