"""Evaluation through a real Weaviate, with the real service as its vectorizer (and
reranker): the through-Weaviate runners of ``cir eval``, ``cir rar eval`` and
``cir rerank eval``.

The gallery is ingested into a new collection (:func:`gallery_collection`), every query runs
as a composed ``nearText`` from the v4 client, and the metrics are computed from the rankings
Weaviate returns by the same code as in-process (``cir_module.eval``):

* :func:`evaluate_through_weaviate` (``cir eval --weaviate``; ``cir rar eval``, with a
  captioner enriching the gallery): CIRR's metrics.
* :func:`weaviate_rerank_run` (``cir rerank eval --weaviate``): Weaviate's first stage for the
  reranker sweep (:func:`cir_module.eval.rerank_sweep.rerank_sweep`, one reranker pass per
  setting), plus one setting run end to end through Weaviate's ``rerank`` (the service fusing
  cosine + lambda * P(YES) at ``/rerank``), to compare with the sweep's row for that setting.

The collection uses a flat (exact) index so that the rankings can be compared with the
in-process ones; an HNSW index would add its own approximation on top.
"""

from __future__ import annotations

import base64
import logging
import time
import uuid
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm
from weaviate import WeaviateClient
from weaviate.classes.query import Filter, MetadataQuery, Rerank
from weaviate.collections import Collection

from cir_module.enrich.captioners import Captioner
from cir_module.eval.inprocess import EvalSplit, RankedResult
from cir_module.eval.metrics import cirr_metrics_from_rankings
from cir_module.eval.rerank_sweep import FirstStage
from cir_module.query import compose_query
from integration.enrich import enrich_collection
from integration.ingest import ingest_objects
from integration.schema import create_image_collection
from integration.stack import connect, local_stack

__all__ = [
    "QueryLatency",
    "composed_query",
    "evaluate_through_weaviate",
    "evaluate_with_client",
    "gallery_collection",
    "weaviate_rerank_run",
]

log = logging.getLogger(__name__)


def _b64(path: Path) -> str:
    return base64.b64encode(path.read_bytes()).decode("ascii")


@contextmanager
def gallery_collection(
    client: WeaviateClient,
    split: EvalSplit,
    captioner: Captioner | None = None,
    caption_weight: float = 0.5,
    stored_captions: Mapping[str, str] | None = None,
) -> Iterator[Collection]:
    """A new flat-index collection holding ``split``'s gallery (``image``, ``name``), deleted
    on exit.

    With ``stored_captions`` (image name -> caption) each object also holds its caption in a
    ``caption`` property that its vector recipe names at weight 0: the vector stays the
    image's, and Weaviate sends each caption to the service when the object is written, as it
    does when ``cir enrich`` writes one (the service keeps its text vector for the first-stage
    term of ``rerank(property: "caption")``).

    With a ``captioner`` the collection is RAR-enriched: its vector recipe gives
    ``caption_weight`` to a caption property, and ``cir enrich``'s job writes every caption,
    so that Weaviate re-vectorises each object."""
    name = f"CIREval_{uuid.uuid4().hex[:8]}"
    try:
        collection = create_image_collection(
            client,
            name,
            text_properties=("name",),
            index="flat",
            caption_property="caption" if captioner or stored_captions else None,
            caption_weight=caption_weight if captioner else 0.0,
        )
        captions = stored_captions or {}
        report = ingest_objects(
            collection,
            (
                (
                    n,
                    {"image": _b64(split.image_path(n)), "name": n}
                    | ({"caption": captions[n]} if n in captions else {}),
                )
                for n in split.gallery
            ),
        )
        if report.failed:
            raise RuntimeError(f"{len(report.failed)} gallery images failed: {report.failed[:3]}")
        if captioner is not None:
            enriched = enrich_collection(collection, captioner, batch_size=32)
            if enriched.failed or enriched.enriched != len(split.gallery):
                raise RuntimeError(f"enrichment incomplete: {enriched.as_dict()}")
        yield collection
    finally:
        client.collections.delete(name)


def composed_query(split: EvalSplit, triplet, caption: str | None = None) -> str:
    """The composed-query string of a triplet (reference image as base64 + its text; with
    ``caption``, the reference's stored caption, as a client sends for a stored reference)."""
    return compose_query(_b64(split.image_path(triplet.reference)), triplet.caption, caption)


def evaluate_with_client(
    client: WeaviateClient,
    split: EvalSplit,
    captioner: Captioner | None = None,
    caption_weight: float = 0.5,
) -> RankedResult:
    """Ingest ``split``'s gallery (enriched by ``captioner`` when given; see
    :func:`gallery_collection`), run its queries, drop the collection."""
    quiet = not log.isEnabledFor(logging.INFO)
    with gallery_collection(client, split, captioner, caption_weight) as collection:
        rankings, subset_rankings = [], []
        for t in tqdm(split.triplets, desc="weaviate queries", disable=quiet, leave=False):
            query = composed_query(split, t)
            top = collection.query.near_text(query=query, limit=51, return_properties=["name"])
            names = [
                o.properties["name"] for o in top.objects if o.properties["name"] != t.reference
            ]
            rankings.append(names[:50])
            members = [m for m in t.subset if m != t.reference]
            within = collection.query.near_text(
                query=query,
                limit=len(members),
                filters=Filter.by_property("name").contains_any(members),
                return_properties=["name"],
            )
            subset_rankings.append([o.properties["name"] for o in within.objects])
        metrics = cirr_metrics_from_rankings(rankings, subset_rankings, split.triplets)
        return RankedResult(metrics, rankings, subset_rankings)


def evaluate_through_weaviate(
    checkpoint: str | Path,
    split: EvalSplit,
    env: dict[str, str] | None = None,
    captioner: Captioner | None = None,
    caption_weight: float = 0.5,
) -> RankedResult:
    """Start the service (``checkpoint``, extra ``CIR_*`` settings in ``env``) and a real
    Weaviate, then evaluate through them (enriched by ``captioner`` when given)."""
    with local_stack(checkpoint, env=env) as stack, connect(stack.weaviate) as client:
        log.info("evaluating through Weaviate %s", client.get_meta()["version"])
        return evaluate_with_client(client, split, captioner, caption_weight)


@dataclass
class QueryLatency:
    """Wall-clock seconds of each query's two ``nearText`` calls through Weaviate, as the
    client sees them: the first stage alone, and the same query with ``rerank``."""

    first_stage: list[float] = field(default_factory=list)
    with_rerank: list[float] = field(default_factory=list)

    def summary(self) -> dict[str, float]:
        """Median and 90th percentile of each, in milliseconds."""
        out = {}
        for name, values in (("first_stage", self.first_stage), ("with_rerank", self.with_rerank)):
            if values:
                out[f"{name}_median_ms"] = round(1000 * float(np.median(values)), 1)
                out[f"{name}_p90_ms"] = round(1000 * float(np.percentile(values, 90)), 1)
        return out


def weaviate_rerank_run(
    first_stage_checkpoint: str | Path,
    split: EvalSplit,
    k: int,
    reranker_env: dict[str, str],
    *,
    stored_captions: Mapping[str, str] | None = None,
    stored_reference: bool = True,
) -> tuple[FirstStage, list[list[str]], QueryLatency]:
    """Start the service (with the reranker settings in ``reranker_env``) and Weaviate; return
    Weaviate's first stage (top ``k`` per query), the same queries' top ``k`` reranked by
    Weaviate's ``rerank`` with those settings, and how long each call took.

    With ``stored_captions`` (image name -> caption) the gallery holds them and ``rerank``
    reads the ``caption`` property; ``stored_reference``: the query carries the reference's
    stored caption (a stored, enriched reference), else the service captions the uploaded
    reference. Without them ``rerank`` reads the ``image`` property."""
    quiet = not log.isEnabledFor(logging.INFO)
    top, cosine, reranked = [], [], []
    latency = QueryLatency()
    with (
        local_stack(first_stage_checkpoint, env=reranker_env) as stack,
        connect(stack.weaviate) as client,
        gallery_collection(client, split, stored_captions=stored_captions) as collection,
    ):
        prop = "caption" if stored_captions else "image"
        for t in tqdm(split.triplets, desc="weaviate rerank", disable=quiet, leave=False):
            known = (
                stored_captions.get(t.reference) if stored_captions and stored_reference else None
            )
            query = composed_query(split, t, known)
            not_reference = Filter.by_property("name").not_equal(t.reference)
            start = time.perf_counter()
            first = collection.query.near_text(
                query=query,
                limit=k,
                filters=not_reference,
                return_properties=["name"],
                return_metadata=MetadataQuery(distance=True),
            )
            latency.first_stage.append(time.perf_counter() - start)
            top.append([o.properties["name"] for o in first.objects])
            cosine.append([1.0 - o.metadata.distance for o in first.objects])
            start = time.perf_counter()
            second = collection.query.near_text(
                query=query,
                limit=k,
                filters=not_reference,
                rerank=Rerank(prop=prop, query=query),
                return_properties=["name"],
            )
            latency.with_rerank.append(time.perf_counter() - start)
            reranked.append([o.properties["name"] for o in second.objects])
    targets = [t.target for t in split.triplets]
    stage = FirstStage(top=top, cosine=np.array(cosine, dtype=np.float32), targets=targets)
    return stage, reranked, latency
