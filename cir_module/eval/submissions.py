"""Submission files for the CIRR and CIRCO test servers, whose test splits have no targets.

* CIRR wants two files: ``{"version": "rc2", "metric": "recall", "<pairid>": [50 names]}``
  and ``{"version": "rc2", "metric": "recall_subset", "<pairid>": [3 names]}``.
* CIRCO wants ``{"<query id>": [50 image ids]}``, the ids as integers.

Rankings come from :func:`~cir_module.eval.metrics.rank_gallery` (with the references
excluded) and :func:`~cir_module.eval.metrics.cirr_subset_rankings`. The servers expect
exactly 50 (or 3) distinct names per query, so a shorter ranking is an error here rather
than a rejected upload later.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

__all__ = [
    "CIRCO_TOP",
    "CIRR_SUBSET_TOP",
    "CIRR_TOP",
    "circo_submission",
    "cirr_submission",
    "write_circo_submission",
    "write_cirr_submission",
]

CIRR_TOP = 50
CIRR_SUBSET_TOP = 3
CIRCO_TOP = 50
_CIRR_VERSION = "rc2"
_NUMERIC = re.compile(r"[0-9]+")


def _keyed_top(
    ids: Sequence[int | str], rankings: Sequence[Sequence[str]], top: int, what: str
) -> dict[str, list[str]]:
    """``{str(id): first top names}``, checking counts, unique ids and unique names."""
    if len(ids) != len(rankings):
        raise ValueError(f"{what}: {len(ids)} query ids but {len(rankings)} rankings")
    keyed: dict[str, list[str]] = {}
    for query_id, ranking in zip(ids, rankings, strict=True):
        key = str(query_id)
        if key in keyed:
            raise ValueError(f"{what}: query id {key!r} appears more than once")
        names = list(ranking[:top])
        if len(names) < top:
            raise ValueError(f"{what}: query {key!r} ranks {len(names)} images, needs {top}")
        if len(set(names)) < top:
            raise ValueError(f"{what}: query {key!r} ranks the same image more than once")
        keyed[key] = names
    return keyed


def _write_json(path: Path, payload: dict[str, Any]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(payload) + "\n", encoding="utf-8")
    return path


def cirr_submission(
    pairids: Sequence[int | str],
    rankings: Sequence[Sequence[str]],
    subset_rankings: Sequence[Sequence[str]],
) -> tuple[dict[str, Any], dict[str, Any]]:
    """The two CIRR test-server payloads: ``recall`` (top 50) and ``recall_subset`` (top 3).

    ``rankings[i]`` ranks the gallery for ``pairids[i]`` with its reference excluded;
    ``subset_rankings[i]`` ranks its ``img_set`` members, reference excluded as well.
    """
    recall = _keyed_top(pairids, rankings, CIRR_TOP, "CIRR recall")
    subset = _keyed_top(pairids, subset_rankings, CIRR_SUBSET_TOP, "CIRR recall_subset")
    return (
        {"version": _CIRR_VERSION, "metric": "recall", **recall},
        {"version": _CIRR_VERSION, "metric": "recall_subset", **subset},
    )


def write_cirr_submission(
    path_prefix: str | os.PathLike[str],
    pairids: Sequence[int | str],
    rankings: Sequence[Sequence[str]],
    subset_rankings: Sequence[Sequence[str]],
) -> tuple[Path, Path]:
    """Write ``<prefix>recall_submission.json`` and ``<prefix>recall_subset_submission.json``.

    The prefix is prepended as text (``"out/test1_"`` gives ``out/test1_recall_...``); a
    directory prefix needs its trailing separator. Returns the two paths written.
    """
    recall, subset = cirr_submission(pairids, rankings, subset_rankings)
    prefix = os.fspath(path_prefix)
    return (
        _write_json(Path(f"{prefix}recall_submission.json"), recall),
        _write_json(Path(f"{prefix}recall_subset_submission.json"), subset),
    )


def circo_submission(
    query_ids: Sequence[int | str], rankings: Sequence[Sequence[str]]
) -> dict[str, list[int | str]]:
    """The CIRCO test-server payload: ``{"<id>": [top 50 image ids]}``.

    Names made of digits (CIRCO's COCO ids, as
    :func:`~cir_module.eval.readers.read_circo` returns them) become integers, as the server
    expects; any other name is kept as it is.
    """
    keyed = _keyed_top(query_ids, rankings, CIRCO_TOP, "CIRCO")
    return {
        key: [int(name) if _NUMERIC.fullmatch(name) else name for name in names]
        for key, names in keyed.items()
    }


def write_circo_submission(
    path: str | os.PathLike[str],
    query_ids: Sequence[int | str],
    rankings: Sequence[Sequence[str]],
) -> Path:
    """Write :func:`circo_submission`'s payload as JSON to ``path``; returns the path."""
    return _write_json(Path(path), circo_submission(query_ids, rankings))
