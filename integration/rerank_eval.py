"""The reranking ablation through a real Weaviate.

The first stage is Weaviate's: every query runs as a composed ``nearText`` (reference
filtered out, as CIRR does) and its top K with their cosines (1 - distance) feed the sweep of
injection settings and fusion weights (:func:`cir_module.rerank.evaluate.rerank_sweep`, one
reranker pass per setting). One setting is then also run end to end through Weaviate's
``rerank`` (the service fusing cosine + lambda * P(YES) at ``/rerank``), and its recalls are
compared with the sweep's row for the same setting.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm
from weaviate.classes.query import Filter, MetadataQuery, Rerank

from cir_module.eval.inprocess import EvalSplit
from cir_module.rerank.evaluate import FirstStage, recall_at
from integration.evaluate import composed_query, gallery_collection
from integration.stack import connect, local_stack

__all__ = ["weaviate_rerank_run"]

log = logging.getLogger(__name__)


def weaviate_rerank_run(
    first_stage_checkpoint: str | Path,
    split: EvalSplit,
    k: int,
    reranker_env: dict[str, str],
) -> tuple[FirstStage, dict]:
    """Start the service (with the reranker settings in ``reranker_env``) and Weaviate; return
    Weaviate's first stage (top ``k`` per query) and the recalls of the same queries reranked
    by Weaviate's ``rerank`` with those settings."""
    quiet = not log.isEnabledFor(logging.INFO)
    top, cosine, reranked = [], [], []
    with (
        local_stack(first_stage_checkpoint, env=reranker_env) as stack,
        connect(stack.weaviate) as client,
        gallery_collection(client, split) as collection,
    ):
        for t in tqdm(split.triplets, desc="weaviate rerank", disable=quiet, leave=False):
            query = composed_query(split, t)
            not_reference = Filter.by_property("name").not_equal(t.reference)
            first = collection.query.near_text(
                query=query,
                limit=k,
                filters=not_reference,
                return_properties=["name"],
                return_metadata=MetadataQuery(distance=True),
            )
            top.append([o.properties["name"] for o in first.objects])
            cosine.append([1.0 - o.metadata.distance for o in first.objects])
            second = collection.query.near_text(
                query=query,
                limit=k,
                filters=not_reference,
                rerank=Rerank(prop="image", query=query),
                return_properties=["name"],
            )
            reranked.append([o.properties["name"] for o in second.objects])
    targets = [t.target for t in split.triplets]
    stage = FirstStage(top=top, cosine=np.array(cosine, dtype=np.float32), targets=targets)
    return stage, recall_at(reranked, targets)
