"""``cir enrich``: caption every stored image of a collection and write the captions back.

The collection is read with the client's cursor (``iterator``), in uuid order. Objects whose
``captioner`` property already names this captioner are skipped, so a run is idempotent and
a killed run resumes where it stopped (the state file also remembers the cursor, so the
resumed run does not re-read what was done). Captions go back in batches that replace each
object with its caption added, so Weaviate re-vectorises it with the enriched recipe; every
batch is checked through ``failed_objects`` and transient failures are retried with
backoff. Undecodable images are reported and skipped, never fatal.
"""

from __future__ import annotations

import base64
import json
import logging
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm
from weaviate.classes.data import DataObject
from weaviate.collections import Collection

from cir_module.enrich.captioners import Captioner, CaptionItem
from cir_module.errors import InputError
from cir_module.images import decode_base64_image

__all__ = [
    "CaptionWriter",
    "EnrichReport",
    "PendingObject",
    "blob_text",
    "caption_batch",
    "enrich_collection",
    "pending_objects",
]

log = logging.getLogger(__name__)

TRANSIENT = ("timeout", "timed out", "connection", "unavailable", "503", "502", "429", "reset")


@dataclass
class EnrichReport:
    """Counts of one run, and each failure with its reason."""

    seen: int = 0
    enriched: int = 0
    skipped: int = 0
    failed: list[tuple[str, str]] = field(default_factory=list)  # (uuid, reason)
    dry_run: bool = False

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "failed_count": len(self.failed)}


class _State:
    """The state file: cursor and counts, rewritten atomically after every batch."""

    def __init__(self, path: Path | None, collection: str, captioner: str) -> None:
        self.path, self.key = path, {"collection": collection, "captioner": captioner}
        self.after: str | None = None
        if path and path.exists():
            saved = json.loads(path.read_text())
            if {k: saved.get(k) for k in self.key} == self.key:
                self.after = saved.get("after")

    def save(self, after: str | None, report: EnrichReport) -> None:
        self.after = after
        if self.path is None:
            return
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps({**self.key, "after": after, "report": report.as_dict()}))
        tmp.replace(self.path)


def enrich_collection(
    collection: Collection,
    captioner: Captioner,
    *,
    image_property: str = "image",
    caption_property: str = "caption",
    state_file: str | Path | None = None,
    journal: str | Path | None = None,
    batch_size: int = 16,
    limit: int | None = None,
    dry_run: bool = False,
    retries: int = 4,
    backoff_s: float = 0.5,
    on_batch: Callable[[EnrichReport], None] | None = None,
) -> EnrichReport:
    """Caption the collection's images with ``captioner``; see the module docstring.

    ``journal`` (JSON lines) gets one line per object written, for audits and tests.
    ``limit`` bounds how many objects are captioned in this run.
    """
    report = EnrichReport(dry_run=dry_run)
    state = _State(Path(state_file) if state_file else None, collection.name, captioner.id)
    writer = CaptionWriter(
        collection, captioner.id, caption_property, report, dry_run, retries, backoff_s, journal
    )
    pending: list[PendingObject] = []

    def flush() -> None:
        nonlocal pending
        if pending:
            writer.write(
                [(p.uuid, p.properties) for p in pending],
                caption_batch(captioner, [p.item for p in pending]),
            )
            state.save(pending[-1].uuid, report)
            pending = []
            if on_batch:
                on_batch(report)

    for obj in pending_objects(
        collection, captioner.id, image_property, report, after=state.after, limit=limit
    ):
        pending.append(obj)
        if len(pending) >= batch_size:
            flush()
    flush()
    if limit is None:
        # A complete pass: the next run starts from the beginning again (skipping what is
        # enriched, retrying what failed); the cursor only serves a killed run.
        state.save(None, report)
    _log_report(collection.name, captioner.id, report)
    return report


@dataclass
class PendingObject:
    """An object to caption: its uuid, its properties and the decoded image."""

    uuid: str
    properties: dict[str, Any]
    item: CaptionItem


def pending_objects(
    collection: Collection,
    captioner_id: str,
    image_property: str,
    report: EnrichReport,
    *,
    after: str | None = None,
    limit: int | None = None,
) -> Iterator[PendingObject]:
    """The objects still to caption, in uuid order from ``after``: those already carrying
    ``captioner_id`` are counted as skipped, undecodable images as failed."""
    names = [p.name for p in collection.config.get().properties]
    quiet = not log.isEnabledFor(logging.INFO)
    taken = 0
    with tqdm(desc="enrich", unit="obj", disable=quiet) as bar:
        for obj in collection.iterator(return_properties=names, after=after):
            uuid = str(obj.uuid)
            report.seen += 1
            bar.update()
            props = dict(obj.properties)
            if props.get("captioner") == captioner_id:
                report.skipped += 1
                continue
            if limit is not None and taken >= limit:
                return
            try:
                image = decode_base64_image(
                    blob_text(props.get(image_property)), f"object {uuid} {image_property}"
                )
            except InputError as exc:
                report.failed.append((uuid, exc.message))
                continue
            taken += 1
            yield PendingObject(uuid, props, CaptionItem(uuid, image, props))


def blob_text(blob: str | bytes | None) -> str:
    """A blob property as base64 text (the client returns it as text, older ones as bytes)."""
    return blob if isinstance(blob, str) else base64.b64encode(blob or b"").decode()


def caption_batch(captioner: Captioner, items: list[CaptionItem]) -> list[str | Exception]:
    """Captions for ``items``; when the batch fails together, one by one, so that a failure
    is an exception in its item's place instead of the whole batch's."""
    try:
        return list(captioner.caption(items))
    except Exception as exc:
        log.warning("captioning a batch failed (%s); captioning one by one", exc)
    out: list[str | Exception] = []
    for item in items:
        try:
            out.extend(captioner.caption([item]))
        except Exception as single:
            out.append(single)
    return out


def _log_report(collection: str, captioner_id: str, report: EnrichReport) -> None:
    log.info(
        "enrich %s with %s: seen %d, enriched %d, skipped %d, failed %d",
        collection,
        captioner_id,
        report.seen,
        report.enriched,
        report.skipped,
        len(report.failed),
    )


class CaptionWriter:
    """Writes captioned objects back (replacing each with its caption and the captioner's
    id), retrying transient failures with backoff, journalling what was written."""

    def __init__(
        self,
        collection: Collection,
        captioner_id: str,
        caption_property: str,
        report: EnrichReport,
        dry_run: bool = False,
        retries: int = 4,
        backoff_s: float = 0.5,
        journal: str | Path | None = None,
    ) -> None:
        self.collection, self.captioner_id = collection, captioner_id
        self.caption_property, self.report = caption_property, report
        self.dry_run, self.retries, self.backoff_s = dry_run, retries, backoff_s
        self.journal = journal

    def write(
        self, objects: list[tuple[str, dict[str, Any]]], captions: list[str | Exception]
    ) -> list[str]:
        """Write one batch of (uuid, properties) with their captions; returns the uuids
        written."""
        report, todo = self.report, {}
        for (uuid, properties), caption in zip(objects, captions, strict=True):
            if isinstance(caption, Exception):
                report.failed.append((uuid, f"captioner: {caption}"))
                continue
            todo[uuid] = {
                **properties,
                self.caption_property: caption,
                "captioner": self.captioner_id,
            }
        if self.dry_run:
            report.enriched += len(todo)
            return []
        written: list[str] = []
        for attempt in range(self.retries + 1):
            failures = _write(self.collection, todo)
            transient = {u: m for u, m in failures.items() if _is_transient(m)}
            for uuid, message in failures.items():
                if uuid not in transient or attempt == self.retries:
                    report.failed.append((uuid, message))
            ok = [u for u in todo if u not in failures]
            written += ok
            report.enriched += len(ok)
            if not transient or attempt == self.retries:
                break
            todo = {u: todo[u] for u in transient}
            delay = self.backoff_s * 2**attempt
            log.warning("%d transient write failures; retrying in %.1fs", len(transient), delay)
            time.sleep(delay)
        if self.journal and written:
            with open(self.journal, "a") as f:
                f.writelines(
                    json.dumps({"uuid": u, "captioner": self.captioner_id}) + "\n" for u in written
                )
        return written


def _write(collection: Collection, objects: dict[str, dict[str, Any]]) -> dict[str, str]:
    """Replace ``objects`` (uuid -> properties) in one synchronous batch request; returns
    uuid -> message of the failures. One request, not the client's background batcher: when
    the server is gone that raises at once instead of retrying without bound."""
    if not objects:
        return {}
    uuids = list(objects)
    try:
        result = collection.data.insert_many(
            [DataObject(properties=objects[u], uuid=u) for u in uuids]
        )
    except Exception as exc:  # the whole request failed (server down): all transient
        return {uuid: f"connection: {exc}" for uuid in uuids}
    return {uuids[i]: error.message for i, error in result.errors.items()}


def _is_transient(message: str) -> bool:
    lowered = message.lower()
    return any(word in lowered for word in TRANSIENT)
