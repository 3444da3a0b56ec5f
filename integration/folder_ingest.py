"""``cir ingest``: a folder of your own images into a collection, safe to re-run.

Every file below the folder is looked at, in sorted path order. An object's UUID is derived
from the file's content (``generate_uuid5`` of its sha256), so the same picture is one object
however often it is ingested and wherever it lies; before a window of files is sent, the
collection is asked which of their UUIDs it holds already and those are left alone. A second
run therefore adds nothing, and a run that was stopped half-way continues where it stopped.

A file is skipped, with its reason in the report, when its extension is not one of the image
formats the service reads, when it is larger than the service accepts, when it cannot be read,
or when it does not decode as an image within the service's limits (checked here with the
service's own probe, so a corrupt file never reaches Weaviate). What Weaviate still refuses is
read from the batch's ``failed_objects`` (``integration.ingest``) and reported per file.
"""

from __future__ import annotations

import base64
import hashlib
import logging
import os
import re
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm
from weaviate import WeaviateClient
from weaviate.classes.config import DataType
from weaviate.collections import Collection

from cir_module.errors import InputError
from cir_module.images import ImageLimits, decode_probed, image_signature, probe_base64_image
from integration.ingest import ingest_objects, object_uuid
from integration.schema import create_image_collection

__all__ = [
    "IMAGE_EXTENSIONS",
    "TEXT_PROPERTIES",
    "FolderIngestReport",
    "content_key",
    "content_uuid",
    "ensure_folder_collection",
    "image_problem",
    "ingest_folder",
    "scan_folder",
    "title_from_filename",
]

log = logging.getLogger(__name__)

# The formats the service decodes (cir_module.images: PNG, JPEG, WebP, GIF, BMP, TIFF), by the
# extensions their files carry. Anything else is reported as skipped, never sent.
IMAGE_EXTENSIONS = frozenset(
    (".png", ".jpg", ".jpeg", ".jpe", ".webp", ".gif", ".bmp", ".tif", ".tiff")
)
# The property names a folder collection holds besides the image.
TEXT_PROPERTIES = ("path", "title")
# Files are read and sent in windows of at most this many bytes (one file larger than that is a
# window alone): every batch request is a part of one window, so with base64's 4/3 it stays
# well under the gRPC message limit of Weaviate and its client (about 100 MB).
WINDOW_BYTES = 48 * 2**20
# Decoding for the check stops at this side (JPEG scales while decoding): enough to find a
# truncated or corrupt file without paying for a full-size decode of every photo.
CHECK_SIDE = 64


@dataclass
class FolderIngestReport:
    """What one run did, per file (paths relative to the folder)."""

    root: str
    added: list[str] = field(default_factory=list)
    present: list[str] = field(default_factory=list)  # already in the collection
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (path, reason)
    failed: list[tuple[str, str]] = field(default_factory=list)  # (path, Weaviate's message)
    not_reached: int = 0  # image files left for a later run by ``limit``

    def as_dict(self) -> dict[str, Any]:
        """The report as JSON-ready data."""
        return asdict(self)


def content_key(data: bytes) -> str:
    """The key an image's object is stored under: the sha256 of the file's bytes (hex)."""
    return hashlib.sha256(data).hexdigest()


def content_uuid(data: bytes) -> str:
    """The UUID of the object holding the image ``data`` (as :func:`ingest_folder` writes
    it): :func:`~integration.ingest.object_uuid` of :func:`content_key`."""
    return object_uuid(content_key(data))


def title_from_filename(path: str | Path) -> str:
    """A title from a file name: the stem with ``_`` and ``-`` read as spaces."""
    stem = Path(path).stem
    return re.sub(r"[\s_-]+", " ", stem).strip() or Path(path).name


def scan_folder(root: Path) -> tuple[list[Path], list[tuple[str, str]]]:
    """The image files below ``root`` (sorted, extension matched case-insensitively) and the
    other files as ``(relative path, reason)``. Links to folders are not followed."""
    images: list[Path] = []
    others: list[tuple[str, str]] = []
    for folder, subfolders, names in os.walk(root):
        subfolders.sort()
        for name in sorted(names):
            path = Path(folder) / name
            suffix = path.suffix.lower()
            if suffix in IMAGE_EXTENSIONS:
                images.append(path)
            else:
                what = f"extension {suffix}" if suffix else "no extension"
                others.append((_relative(path, root), f"unsupported file type ({what})"))
    images.sort()
    return images, sorted(others)


def ensure_folder_collection(
    client: WeaviateClient, name: str, *, caption: bool = False
) -> Collection:
    """The collection ``name`` for :func:`ingest_folder`, created if absent (``image`` blob
    vectorised by the service, ``path`` and ``title`` texts; with ``caption``, a caption
    property that enrichment fills and the stored vector then mixes in). An existing
    collection must hold those properties; otherwise ``ValueError`` says which are missing."""
    if not client.collections.exists(name):
        return create_image_collection(
            client,
            name,
            text_properties=TEXT_PROPERTIES,
            caption_property="caption" if caption else None,
        )
    collection = client.collections.get(name)
    types = {p.name: p.data_type for p in collection.config.get().properties}
    wanted = {"image": DataType.BLOB, **dict.fromkeys(TEXT_PROPERTIES, DataType.TEXT)}
    if caption:
        wanted["caption"] = DataType.TEXT
    missing = [f"{n} ({t.value})" for n, t in wanted.items() if types.get(n) != t]
    if missing:
        raise ValueError(
            f"collection {name} exists without the properties {', '.join(missing)}; "
            "choose another name (a new collection is created with them)"
        )
    return collection


@dataclass
class _File:
    """An image file read into memory, with its key and UUID."""

    path: Path
    relative: str
    data: bytes
    key: str

    @property
    def uuid(self) -> str:
        return object_uuid(self.key)

    @cached_property
    def encoded(self) -> str:
        """The bytes in base64, as checked and as sent (encoded once)."""
        return base64.b64encode(self.data).decode("ascii")

    def properties(self) -> dict[str, str]:
        return {
            "image": self.encoded,
            "path": str(self.path),
            "title": title_from_filename(self.path),
        }


def ingest_folder(
    collection: Collection,
    root: str | Path,
    *,
    limits: ImageLimits | None = None,
    batch_size: int = 16,
    limit: int | None = None,
    window_bytes: int = WINDOW_BYTES,
) -> FolderIngestReport:
    """Ingest the images below ``root`` into ``collection`` (see the module docstring).

    ``limits`` are the service's (``CIR_MAX_IMAGE_BYTES`` and the rest: a file beyond them is
    skipped); ``limit`` adds at most that many new images in this run, leaving the rest to
    the next one. The stored ``path`` is the file's absolute path.
    """
    root = Path(root).resolve()
    if not root.is_dir():
        raise NotADirectoryError(f"not a folder: {root}")
    limits = limits or ImageLimits()
    report = FolderIngestReport(root=str(root))
    files, others = scan_folder(root)
    report.skipped += others
    first_of: dict[str, str] = {}  # content key -> the first file seen with it
    quiet = not log.isEnabledFor(logging.INFO)
    with tqdm(total=len(files), desc="ingest", unit="img", disable=quiet) as bar:
        for n_done, window in _windows(files, limits, report, root, window_bytes):
            if limit is not None and len(report.added) >= limit:
                report.not_reached += len(files) - n_done + len(window)
                break
            fresh: list[_File] = []
            for item in window:
                if item.key in first_of:
                    report.skipped.append((item.relative, f"same content as {first_of[item.key]}"))
                else:
                    first_of[item.key] = item.relative
                    fresh.append(item)
            stored = _stored_ids(collection, [f.uuid for f in fresh])
            todo: list[_File] = []
            for item in fresh:
                if item.uuid in stored:
                    report.present.append(item.relative)
                elif (reason := _encoded_image_problem(item.encoded, limits)) is not None:
                    report.skipped.append((item.relative, reason))
                else:
                    todo.append(item)
            if limit is not None:
                kept = max(0, limit - len(report.added))
                report.not_reached += len(todo[kept:])
                todo = todo[:kept]
            _write(collection, todo, batch_size, report)
            bar.update(n_done - bar.n)  # the window and the files skipped while reading it
        else:
            bar.update(len(files) - bar.n)
    report.skipped.sort()
    return report


def _windows(
    files: Sequence[Path],
    limits: ImageLimits,
    report: FolderIngestReport,
    root: Path,
    window_bytes: int,
) -> Iterator[tuple[int, list[_File]]]:
    """Read ``files`` in windows of at most ``window_bytes``; yields (files looked at so far,
    window). Files too large or unreadable go to the report's skipped list on the way."""
    window: list[_File] = []
    size = 0
    for index, path in enumerate(files):
        relative = _relative(path, root)
        try:
            length = path.stat().st_size
            if limits.max_bytes is not None and length > limits.max_bytes:
                report.skipped.append(
                    (relative, f"too large: {length} bytes, the limit is {limits.max_bytes}")
                )
                continue
            if window and size + length > window_bytes:
                yield index, window
                window, size = [], 0
            data = path.read_bytes()
        except OSError as exc:
            report.skipped.append((relative, f"unreadable: {exc.strerror or exc}"))
            continue
        if not data:
            report.skipped.append((relative, "empty file"))
            continue
        window.append(_File(path, relative, data, content_key(data)))
        size += len(data)
    if window:
        yield len(files), window


def image_problem(data: bytes, limits: ImageLimits) -> str | None:
    """Why the service would refuse the image file ``data``, or None: its format, the
    service's own header probe and limits, then a (reduced) decode that finds truncated and
    corrupt files."""
    return _encoded_image_problem(base64.b64encode(data).decode("ascii"), limits)


def _encoded_image_problem(encoded: str, limits: ImageLimits) -> str | None:
    if image_signature(encoded) is None:
        return "not an image the service reads (PNG, JPEG, WebP, GIF, BMP, TIFF)"
    try:
        decode_probed(probe_base64_image(encoded, "the image", limits), min_side=CHECK_SIDE)
    except InputError as exc:
        return exc.message
    return None


def _stored_ids(collection: Collection, uuids: list[str]) -> set[str]:
    """Which of ``uuids`` the collection holds (one query, no properties returned)."""
    if not uuids:
        return set()
    found = collection.query.fetch_objects_by_ids(uuids, limit=len(uuids), return_properties=False)
    return {str(o.uuid) for o in found.objects}


def _write(
    collection: Collection, todo: list[_File], batch_size: int, report: FolderIngestReport
) -> None:
    """Send ``todo`` through ``ingest_objects`` (failures read from ``failed_objects``) and
    record each file as added or failed with Weaviate's message."""
    if not todo:
        return
    by_key = {item.key: item.relative for item in todo}
    result = ingest_objects(
        collection, ((item.key, item.properties()) for item in todo), batch_size=batch_size
    )
    failed = {key: message for key, message in result.failed}
    report.failed += [(by_key.get(key, key), message) for key, message in failed.items()]
    report.added += [item.relative for item in todo if item.key not in failed]


def _relative(path: Path, root: Path) -> str:
    return path.relative_to(root).as_posix()
