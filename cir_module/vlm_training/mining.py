"""Negatives mined from the first stage: for each training query, the gallery images the
first-stage retriever ranks highest that are not its target (``cir vlm mine``).

The reranker only ever sees the first stage's top K, so the negatives it must reject at
serving time are the first stage's near misses: members of the query's image set, but also
images of other sets that make the asked changes and more. Hard negatives drawn from the
image set alone never show the second kind. Mining ranks the training queries in chunks whose
gallery is the union of the chunk's image sets, so that each query competes with about as many
images as a validation query does (the validation gallery is the union of its image sets too).
"""

from __future__ import annotations

import json
import logging
from dataclasses import replace
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from cir_module.eval.inprocess import EvalSplit
from cir_module.eval.rerank_sweep import first_stage

__all__ = ["load_neighbours", "mine_neighbours"]

log = logging.getLogger(__name__)


def _chunk_split(split: EvalSplit, start: int, end: int) -> EvalSplit:
    """Queries ``start:end`` of ``split`` with the union of their image sets as the gallery."""
    triplets = split.triplets[start:end]
    names = {n for t in triplets for n in (*t.subset, t.target, t.reference)}
    return replace(split, triplets=triplets, paths={n: split.paths[n] for n in names})


def mine_neighbours(
    model: Any,
    data: str | Path,
    out: str | Path,
    k: int = 10,
    chunk: int = 500,
    limit: int | None = None,
    batch_size: int = 64,
) -> dict[int, list[str]]:
    """Rank the training split's queries (the first ``limit``) with ``model`` in chunks of
    ``chunk`` and write, per query (by ``pairid``), its top ``k`` without the target (the
    reference is excluded, as CIRR does) to ``out`` as JSON; ``batch_size`` images or queries
    per forward. Returns that mapping."""
    split = EvalSplit.load(data, "train", limit=limit)
    neighbours: dict[int, list[str]] = {}
    hits = 0
    quiet = not log.isEnabledFor(logging.INFO)
    for start in tqdm(range(0, len(split.triplets), chunk), desc="mine", disable=quiet):
        part = _chunk_split(split, start, start + chunk)
        stage = first_stage(model, part, k + 1, batch_size)
        for t, top in zip(part.triplets, stage.top, strict=True):
            hits += top[0] == t.target
            neighbours[t.pairid] = [n for n in top if n != t.target][:k]
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    Path(out).write_text(
        json.dumps(
            {
                "data": str(data),
                "k": k,
                "chunk": chunk,
                "train_r1": round(100 * hits / len(split.triplets), 2),
                "neighbours": {str(p): names for p, names in neighbours.items()},
            }
        )
    )
    return neighbours


def load_neighbours(path: str | Path) -> dict[int, list[str]]:
    """The mapping :func:`mine_neighbours` wrote: ``pairid`` -> mined negatives."""
    return {int(p): names for p, names in json.loads(Path(path).read_text())["neighbours"].items()}
