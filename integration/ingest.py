"""Batch ingestion of images, checked through ``failed_objects`` and safe to re-run."""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from weaviate.collections import Collection
from weaviate.util import generate_uuid5

__all__ = ["IngestReport", "ingest_objects"]

log = logging.getLogger(__name__)


@dataclass
class IngestReport:
    """What a batch import did: how many objects were sent and which ones failed, and why."""

    sent: int = 0
    failed: list[tuple[str, str]] = field(default_factory=list)  # (key, message)

    @property
    def inserted(self) -> int:
        return self.sent - len(self.failed)


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
            uuid = generate_uuid5(key)
            keys[str(uuid)] = key
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
