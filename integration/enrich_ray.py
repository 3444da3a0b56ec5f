"""``cir enrich --ray``: the same enrichment job with the captioning spread over Ray Data.

For collections one process cannot caption in time: the driver reads the collection with
the client's cursor (skipping what this captioner already enriched, reporting undecodable
images), Ray Data runs the captioner in ``concurrency`` actors (``map_batches``; one GPU each
where ``num_gpus`` is set), and the driver writes the captions back as batches come out,
with the same writer, retries, journal and report as the single-process job. A killed run
is resumed by running it again: enriched objects carry the captioner's id and are skipped.

The captioner is built inside each actor by ``captioner_factory`` (a picklable callable, e.g.
``functools.partial(SceneGraphCaptioner.from_benchmark, root)``), so a model is loaded once
per actor, not shipped from the driver.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from weaviate.collections import Collection

from cir_module.enrich.captioners import Captioner, CaptionItem
from cir_module.images import decode_base64_image
from integration.enrich import (
    CaptionWriter,
    EnrichReport,
    _log_report,
    blob_text,
    caption_batch,
    pending_objects,
)

__all__ = ["enrich_collection_ray"]

log = logging.getLogger(__name__)


def _ray() -> Any:
    try:
        import ray
    except ImportError as exc:
        raise ImportError("enrichment on Ray needs ray: pip install 'weaviate-cir[ray]'") from exc
    return ray


class _CaptionActor:
    """One captioner per Ray actor; a batch of (uuid, base64 image, properties) rows in,
    captions (or the error of each failed one) out."""

    def __init__(self, factory: Callable[[], Captioner]) -> None:
        self.captioner = factory()

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        items = [
            CaptionItem(str(uuid), decode_base64_image(str(image)), json.loads(props))
            for uuid, image, props in zip(
                batch["uuid"], batch["image"], batch["props"], strict=True
            )
        ]
        captions = caption_batch(self.captioner, items)
        return {
            "uuid": batch["uuid"],
            "caption": np.array([c if isinstance(c, str) else "" for c in captions], dtype=object),
            "error": np.array(
                ["" if isinstance(c, str) else f"{type(c).__name__}: {c}" for c in captions],
                dtype=object,
            ),
        }


def enrich_collection_ray(
    collection: Collection,
    captioner_factory: Callable[[], Captioner],
    *,
    captioner_id: str | None = None,
    image_property: str = "image",
    caption_property: str = "caption",
    journal: str | Path | None = None,
    batch_size: int = 16,
    concurrency: int = 2,
    num_gpus: float = 0,
    limit: int | None = None,
    dry_run: bool = False,
    retries: int = 4,
    backoff_s: float = 0.5,
) -> EnrichReport:
    """Caption the collection's images on Ray Data and write them back; see the module
    docstring. Ray must be initialised (``ray.init``) by the caller: a local instance or a
    cluster address. ``captioner_id`` saves building a captioner in the driver just to
    read its id."""
    ray = _ray()
    captioner_id = captioner_id or captioner_factory().id
    report = EnrichReport(dry_run=dry_run)
    # The driver keeps each object's properties (to write it back), not its decoded image:
    # actors decode the stored base64 again, so the driver's memory holds no pixels.
    properties: dict[str, dict[str, Any]] = {}
    rows = []
    for obj in pending_objects(collection, captioner_id, image_property, report, limit=limit):
        properties[obj.uuid] = obj.properties
        others = {k: v for k, v in obj.properties.items() if k != image_property}
        rows.append(
            {
                "uuid": obj.uuid,
                "image": blob_text(obj.properties[image_property]),
                # The other properties travel as JSON (captioners may use them, e.g. a name).
                "props": json.dumps(others, default=str),
            }
        )
    if rows:
        captioned = ray.data.from_items(rows).map_batches(
            _CaptionActor,
            fn_constructor_kwargs={"factory": captioner_factory},
            batch_size=batch_size,
            concurrency=concurrency,
            num_gpus=num_gpus or None,
            batch_format="numpy",
        )
        writer = CaptionWriter(
            collection,
            captioner_id,
            caption_property,
            report,
            dry_run,
            retries,
            backoff_s,
            journal,
        )
        for batch in captioned.iter_batches(batch_size=batch_size, batch_format="numpy"):
            done = [(str(u), properties[str(u)]) for u in batch["uuid"]]
            captions: list[str | Exception] = [
                RuntimeError(error) if error else caption
                for caption, error in zip(batch["caption"], batch["error"], strict=True)
            ]
            writer.write(done, captions)
    _log_report(collection.name, captioner_id, report)
    return report
