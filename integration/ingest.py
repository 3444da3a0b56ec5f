"""Batch ingestion of images, checked through ``failed_objects`` and safe to re-run."""

from __future__ import annotations

import logging
import time
import zlib
from collections.abc import Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from weaviate.collections import Collection
from weaviate.exceptions import WeaviateBaseError
from weaviate.util import generate_uuid5

__all__ = ["IngestReport", "ingest_objects", "ingest_spread", "ingest_until_stored", "object_uuid"]

log = logging.getLogger(__name__)


@dataclass
class IngestReport:
    """What a batch import did: how many objects were sent and which ones failed, and why."""

    sent: int = 0
    failed: list[tuple[str, str]] = field(default_factory=list)  # (key, message)

    @property
    def inserted(self) -> int:
        return self.sent - len(self.failed)


def object_uuid(key: str) -> str:
    """The UUID the object stored under ``key`` gets (``generate_uuid5``): the same key gives
    the same object, which is what makes a re-run add nothing twice."""
    return str(generate_uuid5(key))


def ingest_objects(
    collection: Collection,
    objects: Iterable[tuple[str, Mapping[str, Any]]],
    *,
    batch_size: int = 32,
    concurrent_requests: int = 2,
) -> IngestReport:
    """Insert ``(key, properties)`` pairs; the object UUID is derived from ``key``.

    Deterministic UUIDs make a re-run idempotent: objects already stored are overwritten
    with the same content, so a failed import is resumed by sending everything again.
    A batch that fails as a whole (Weaviate raises instead of listing failed objects) is
    reported with every object failed, so that a caller's retry covers it too.
    """
    report = IngestReport()
    keys: dict[str, str] = {}
    pending = iter(objects)
    try:
        with collection.batch.fixed_size(
            batch_size=batch_size, concurrent_requests=concurrent_requests
        ) as batch:
            for key, properties in pending:
                uuid = object_uuid(key)
                keys[uuid] = key
                batch.add_object(properties=dict(properties), uuid=uuid)
                report.sent += 1
    except WeaviateBaseError as error:
        # The batch as a whole failed, not an object: e.g. the collection's config could not
        # be read while a cluster elects a new leader. Nothing is confirmed, so every object
        # counts as failed (re-sending is safe: the UUIDs are deterministic).
        message = f"batch failed: {error}"
        unsent = [key for key, _ in pending]
        report.sent += len(unsent)
        report.failed = [(key, message) for key in [*keys.values(), *unsent]]
        log.warning("the batch failed before %d objects were confirmed: %s", report.sent, error)
        return report
    for failed in collection.batch.failed_objects:
        key = keys.get(str(failed.object_.uuid), str(failed.object_.uuid))
        report.failed.append((key, failed.message))
    if report.failed:
        log.warning(
            "%d of %d objects failed; first: %s", len(report.failed), report.sent, report.failed[0]
        )
    return report


def ingest_spread(
    collections: Sequence[Collection],
    objects: Iterable[tuple[str, Mapping[str, Any]]],
    *,
    offset: int = 0,
    **batch_options: Any,
) -> IngestReport:
    """Import through several nodes at once: ``collections`` holds one handle per node (a
    client each), the object under ``key`` goes through node ``(crc32(key) + offset) % n``,
    and the nodes' batches run side by side. One node failing (its inference service down)
    fails only its share; the report holds every node's failures."""
    shares: list[list[tuple[str, Mapping[str, Any]]]] = [[] for _ in collections]
    for key, properties in objects:
        # By key, not by position: the same object takes the same route in every call, and
        # offset + 1 moves every object to the next node.
        shares[(zlib.crc32(key.encode()) + offset) % len(collections)].append((key, properties))
    with ThreadPoolExecutor(len(collections)) as pool:
        reports = list(
            pool.map(
                lambda pair: ingest_objects(pair[0], pair[1], **batch_options),
                zip(collections, shares, strict=True),
            )
        )
    return IngestReport(
        sent=sum(r.sent for r in reports), failed=[f for r in reports for f in r.failed]
    )


def ingest_until_stored(
    collection: Collection | Sequence[Collection],
    objects: Iterable[tuple[str, Mapping[str, Any]]],
    *,
    rounds: int = 5,
    wait_s: float = 2.0,
    **batch_options: Any,
) -> tuple[IngestReport, list[IngestReport]]:
    """Import, then re-send the failed objects (same UUIDs, so nothing is duplicated) up to
    ``rounds`` times, waiting ``wait_s`` (doubling) between rounds: an inference service
    restarted mid-import loses nothing. Returns the final report (what still failed after
    the last round) and every round's report.

    Given one collection handle per node of a cluster, the import is spread over the nodes
    (:func:`ingest_spread`) and each round shifts every object to the next node, so what
    failed through a node whose service is down is re-sent through another one."""
    todo = {key: dict(props) for key, props in objects}
    reports: list[IngestReport] = []
    for attempt in range(rounds + 1):
        if isinstance(collection, Collection):
            report = ingest_objects(collection, todo.items(), **batch_options)
        else:
            report = ingest_spread(collection, todo.items(), offset=attempt, **batch_options)
        reports.append(report)
        if not report.failed or attempt == rounds:
            break
        log.warning(
            "round %d: %d objects failed, re-sending in %.1fs",
            attempt + 1,
            len(report.failed),
            wait_s * 2**attempt,
        )
        time.sleep(wait_s * 2**attempt)
        todo = {key: todo[key] for key, _ in report.failed}
    return reports[-1], reports
