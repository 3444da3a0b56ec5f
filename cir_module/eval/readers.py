"""Readers for the public composed-image-retrieval benchmarks, in their official formats.

Each reader turns one annotation file into a list of :class:`CIRTriplet`, the record the
metrics and submission writers work from:

* CIRR (``captions/cap.<name>.<split>.json`` and ``image_splits/split.<name>.<split>.json``).
  Our synthetic "shapes" benchmark writes the same layout under the name ``shapes``, so the
  file name is a parameter everywhere, never a constant.
* FashionIQ (``captions/cap.<category>.<split>.json`` and
  ``image_splits/split.<category>.<split>.json``).
* CIRCO (``annotations/<split>.json``).

Test splits (any split whose name starts with ``test``, e.g. CIRR's ``test1``) come without
targets; elsewhere a missing target is an error. Malformed files raise ``ValueError`` naming
the file, the entry and the problem; a missing file raises ``FileNotFoundError``.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = [
    "FASHIONIQ_CATEGORIES",
    "CIRTriplet",
    "read_circo",
    "read_cirr",
    "read_fashioniq",
    "read_fashioniq_split",
    "read_image_split",
    "resolve_image_path",
]

FASHIONIQ_CATEGORIES: tuple[str, ...] = ("dress", "shirt", "toptee")

StrPath = str | os.PathLike[str]


@dataclass(frozen=True)
class CIRTriplet:
    """One composed query: a reference image, a modification text and (if known) its target.

    ``pairid`` is CIRR's pairid, CIRCO's id, or the running index within a FashionIQ file.
    ``target_soft`` (CIRR), ``subset`` (CIRR ``img_set`` members), ``category`` (FashionIQ)
    and ``shared_concept`` (CIRCO) are only filled by the reader of the data set that has
    them. ``gt_targets`` holds every acceptable target: CIRCO's ``gt_img_ids``, otherwise
    ``(target,)`` when the target is known.
    """

    pairid: int | str
    reference: str
    caption: str
    target: str | None
    target_soft: dict[str, float] = field(default_factory=dict)
    subset: tuple[str, ...] = ()
    gt_targets: tuple[str, ...] = ()
    category: str | None = None
    shared_concept: str | None = None


# --------------------------------------------------------------------------- helpers


def _is_test_split(split: str) -> bool:
    # CIRR calls its test split "test1"; FashionIQ and CIRCO call it "test".
    return split.startswith("test")


_TYPE_NAMES: dict[type | tuple[type, ...], str] = {
    int: "an integer",
    (int, float): "a number",
    str: "a string",
    list: "a list",
    dict: "an object",
}


def _matches(value: Any, expected: type | tuple[type, ...]) -> bool:
    # JSON true/false load as bool, a subclass of int: never accept them as numbers.
    return isinstance(value, expected) and not isinstance(value, bool)


def _check_type(value: Any, expected: type | tuple[type, ...], where: str) -> Any:
    if not _matches(value, expected):
        raise ValueError(
            f"{where} should be {_TYPE_NAMES.get(expected, expected)}, got {type(value).__name__}"
        )
    return value


def _load_json(path: Path, expected: type[list] | type[dict]) -> Any:
    if not path.is_file():
        raise FileNotFoundError(f"{path}: annotation file not found")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path}: not valid JSON ({exc})") from exc
    return _check_type(data, expected, f"{path}: the top level")


def _entries(path: Path) -> Iterator[tuple[int, str, Mapping[str, Any]]]:
    """(index, location for messages, entry) for each object of a JSON list file."""
    for index, entry in enumerate(_load_json(path, list)):
        where = f"{path}: entry {index}"
        yield index, where, _check_type(entry, dict, where)


def _get(
    entry: Mapping[str, Any],
    key: str,
    expected: type | tuple[type, ...],
    where: str,
    *,
    required: bool = True,
) -> Any:
    """``entry[key]`` checked against ``expected``; ``None`` when absent and not required."""
    if key not in entry:
        if required:
            raise ValueError(f"{where}: missing key {key!r}")
        return None
    return _check_type(entry[key], expected, f"{where}: key {key!r}")


def _get_list(
    entry: Mapping[str, Any],
    key: str,
    item: type | tuple[type, ...],
    where: str,
    *,
    required: bool = True,
) -> list[Any] | None:
    """Like :func:`_get` for a list whose items must all be of type ``item``."""
    values = _get(entry, key, list, where, required=required)
    for i, value in enumerate(values or ()):
        _check_type(value, item, f"{where}: key {key!r} item {i}")
    return values


# --------------------------------------------------------------------------- CIRR


def read_cirr(root: StrPath, split: str, name: str = "rc2") -> list[CIRTriplet]:
    """Read ``root/captions/cap.<name>.<split>.json`` (CIRR format) into triplets.

    Entries carry ``pairid``, ``reference``, ``caption``, ``img_set.members`` and, outside the
    test split, ``target_hard`` and ``target_soft``. ``name`` is ``rc2`` for CIRR and
    ``shapes`` for our synthetic benchmark, which writes the same format.
    """
    path = Path(root) / "captions" / f"cap.{name}.{split}.json"
    targets_required = not _is_test_split(split)
    triplets = []
    for _, where, entry in _entries(path):
        target = _get(entry, "target_hard", str, where, required=targets_required)
        soft = _get(entry, "target_soft", dict, where, required=targets_required) or {}
        for soft_name, weight in soft.items():
            _check_type(weight, (int, float), f"{where}: target_soft[{soft_name!r}]")
        img_set = _get(entry, "img_set", dict, where)
        members = _get_list(img_set, "members", str, f"{where}: img_set")
        triplets.append(
            CIRTriplet(
                pairid=_get(entry, "pairid", int, where),
                reference=_get(entry, "reference", str, where),
                caption=_get(entry, "caption", str, where),
                target=target,
                target_soft={k: float(v) for k, v in soft.items()},
                subset=tuple(members),
                gt_targets=(target,) if target is not None else (),
            )
        )
    return triplets


def read_image_split(root: StrPath, split: str, name: str = "rc2") -> dict[str, str]:
    """Read ``root/image_splits/split.<name>.<split>.json``: image name -> path relative to root.

    Turn a path into a file with :func:`resolve_image_path`.
    """
    path = Path(root) / "image_splits" / f"split.{name}.{split}.json"
    mapping = _load_json(path, dict)
    for image_name, relpath in mapping.items():
        _check_type(relpath, str, f"{path}: the path of image {image_name!r}")
    return mapping


def resolve_image_path(root: StrPath, relpath: str) -> Path:
    """The file of an image-split entry: ``root`` joined with ``relpath`` minus its leading ``./``.

    CIRR writes paths like ``./train/34/train-10108-0-img0.png``, relative to the data root.
    """
    while relpath.startswith("./"):
        relpath = relpath[2:]
    if os.path.isabs(relpath):
        raise ValueError(f"image path {relpath!r} should be relative to the data root")
    return Path(root) / relpath


# --------------------------------------------------------------------------- FashionIQ


def read_fashioniq(root: StrPath, category: str, split: str) -> list[CIRTriplet]:
    """Read ``root/captions/cap.<category>.<split>.json`` (FashionIQ format) into triplets.

    Each entry has ``candidate`` (the reference), ``target`` (absent in test) and exactly two
    ``captions``. Following the protocol of CLIP4Cir, SEARLE and most later work, the query
    text is ``"<c0> and <c1>"`` with each caption stripped of surrounding spaces and
    ``.?,`` punctuation. ``pairid`` is the entry's index in the file.
    """
    path = Path(root) / "captions" / f"cap.{category}.{split}.json"
    targets_required = not _is_test_split(split)
    triplets = []
    for index, where, entry in _entries(path):
        captions = _get_list(entry, "captions", str, where)
        if len(captions) != 2:
            raise ValueError(f"{where}: key 'captions' should hold 2 captions, got {len(captions)}")
        target = _get(entry, "target", str, where, required=targets_required)
        triplets.append(
            CIRTriplet(
                pairid=index,
                reference=_get(entry, "candidate", str, where),
                caption=" and ".join(c.strip(".?, ") for c in captions),
                target=target,
                gt_targets=(target,) if target is not None else (),
                category=category,
            )
        )
    return triplets


def read_fashioniq_split(root: StrPath, category: str, split: str) -> list[str]:
    """Read ``root/image_splits/split.<category>.<split>.json``: the list of image names.

    For validation this list is the gallery the queries of ``category`` are ranked against.
    """
    path = Path(root) / "image_splits" / f"split.{category}.{split}.json"
    names = _load_json(path, list)
    for i, image_name in enumerate(names):
        _check_type(image_name, str, f"{path}: item {i}")
    return names


# --------------------------------------------------------------------------- CIRCO


def read_circo(root: StrPath, split: str) -> list[CIRTriplet]:
    """Read ``root/annotations/<split>.json`` (CIRCO format, split ``val`` or ``test``).

    Image ids become strings (the gallery names). Outside the test split ``target_img_id``
    and ``gt_img_ids`` are required; ``gt_targets`` holds all of ``gt_img_ids``.
    """
    path = Path(root) / "annotations" / f"{split}.json"
    targets_required = not _is_test_split(split)
    triplets = []
    for _, where, entry in _entries(path):
        target = _get(entry, "target_img_id", int, where, required=targets_required)
        gt_ids = _get_list(entry, "gt_img_ids", int, where, required=targets_required) or []
        triplets.append(
            CIRTriplet(
                pairid=_get(entry, "id", int, where),
                reference=str(_get(entry, "reference_img_id", int, where)),
                caption=_get(entry, "relative_caption", str, where),
                target=str(target) if target is not None else None,
                gt_targets=tuple(str(i) for i in gt_ids),
                shared_concept=_get(entry, "shared_concept", str, where),
            )
        )
    return triplets
