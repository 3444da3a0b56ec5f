"""Batch ingestion of images, checked through ``failed_objects`` and safe to re-run."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from weaviate.collections import Collection
from weaviate.util import generate_uuid5

__all__ = ["IngestReport", "ingest_objects", "ingest_until_stored", "object_uuid"]

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
    """
    report = IngestReport()
    keys: dict[str, str] = {}
    with collection.batch.fixed_size(
        batch_size=batch_size, concurrent_requests=concurrent_requests
    ) as batch:
        for key, properties in objects:
            uuid = object_uuid(key)
            keys[uuid] = key
            batch.add_object(properties=dict(properties), uuid=uuid)
            report.sent += 1
    for failed in collection.batch.failed_objects:
        key = keys.get(str(failed.object_.uuid), str(failed.object_.uuid))
        report.failed.append((key, failed.message))
    if report.failed:
        log.warning(
            "%d of %d objects failed; first: %s", len(report.failed), report.sent, report.failed[0]
        )
    return report


def ingest_until_stored(
    collection: Collection,
    objects: Iterable[tuple[str, Mapping[str, Any]]],
    *,
    rounds: int = 5,
    wait_s: float = 2.0,
    **batch_options: Any,
) -> tuple[IngestReport, list[IngestReport]]:
    """Import, then re-send the failed objects (same UUIDs, so nothing is duplicated) up to
    ``rounds`` times, waiting ``wait_s`` (doubling) between rounds: an inference service
    restarted mid-import loses nothing. Returns the final report (what still failed after
    the last round) and every round's report."""
    todo = {key: dict(props) for key, props in objects}
    reports: list[IngestReport] = []
    for attempt in range(rounds + 1):
        report = ingest_objects(collection, todo.items(), **batch_options)
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
