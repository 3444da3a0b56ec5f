"""Collections for composed image retrieval: a ``blob`` image vectorised by our service."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from weaviate import WeaviateClient
from weaviate.classes.config import (
    Configure,
    DataType,
    Multi2VecField,
    Property,
    Tokenization,
    VectorDistances,
)
from weaviate.collections import Collection

__all__ = ["VECTOR_INDEXES", "create_image_collection"]

# ``flat`` searches exhaustively (exact: what the evaluations use, so that Weaviate's rankings
# can be compared with the in-process ones); ``hnsw`` is Weaviate's approximate graph index.
VECTOR_INDEXES = ("hnsw", "flat")


def create_image_collection(
    client: WeaviateClient,
    name: str,
    *,
    image_property: str = "image",
    text_properties: Sequence[str] = ("title",),
    vector_name: str = "default",
    inference_url: str | None = None,
    index: str = "hnsw",
    tokenization: Tokenization = Tokenization.FIELD,
    caption_property: str | None = None,
    caption_weight: float = 0.5,
    replication_factor: int | None = None,
    shards: int | None = None,
    catch_up_ms: int = 5000,
    vector_index_config: Any = None,
) -> Collection:
    """Create ``name`` with a ``blob`` image property, the multi2vec-clip vectorizer on it
    (cosine distance) and the transformers reranker.

    Only the image is vectorised: stored objects live in the image space that composed
    queries are trained to match. ``inference_url`` routes this named vector to another
    service (or path prefix) than the server-wide ``CLIP_INFERENCE_API``.

    With ``caption_property`` (RAR enrichment, ``cir enrich``) the stored vector becomes
    Weaviate's weighted average of the image vector and the caption's text vector
    (``caption_weight`` on the caption); objects are re-vectorised when the caption is written.
    A ``captioner`` property records who wrote each caption.

    ``index`` is the vector index: ``"hnsw"`` (approximate, Weaviate's default) or ``"flat"``
    (exact brute-force search); both with cosine distance. ``vector_index_config`` (a
    ``Configure.VectorIndex`` config, e.g. HNSW with a quantizer) replaces the one ``index``
    names.
    """
    if index not in VECTOR_INDEXES:
        raise ValueError(f"index must be one of {', '.join(VECTOR_INDEXES)}, not {index!r}")
    index_factory = Configure.VectorIndex.flat if index == "flat" else Configure.VectorIndex.hnsw
    properties = [Property(name=image_property, data_type=DataType.BLOB)]
    properties += [
        Property(
            name=p, data_type=DataType.TEXT, skip_vectorization=True, tokenization=tokenization
        )
        for p in text_properties
    ]
    image_fields: list = [image_property]
    text_fields: list | None = None
    if caption_property:
        properties += [
            Property(name=caption_property, data_type=DataType.TEXT),
            Property(name="captioner", data_type=DataType.TEXT, skip_vectorization=True),
        ]
        image_fields = [Multi2VecField(name=image_property, weight=1 - caption_weight)]
        text_fields = [Multi2VecField(name=caption_property, weight=caption_weight)]
    replication = None
    if replication_factor is not None and replication_factor > 1:
        replication = Configure.replication(
            factor=replication_factor,
            async_enabled=True,
            async_config=Configure.Replication.async_config(
                frequency=catch_up_ms,
                frequency_while_propagating=1000,
                # Weaviate holds back objects younger than this (30 s by default) so as not to
                # race writes in flight; a second is enough for batch writes to have landed.
                propagation_delay=1000,
            ),
        )
    sharding = Configure.sharding(desired_count=shards) if shards is not None else None
    return client.collections.create(
        name=name,
        properties=properties,
        vector_config=Configure.Vectors.multi2vec_clip(
            name=vector_name,
            image_fields=image_fields,
            text_fields=text_fields,
            inference_url=inference_url,
            vector_index_config=vector_index_config
            or index_factory(distance_metric=VectorDistances.COSINE),
        ),
        reranker_config=Configure.Reranker.transformers(),
        replication_config=replication,
        sharding_config=sharding,
    )
