"""Weaviate's ``rerank`` against the service as its reranker-transformers container: text
properties, objects without an image, and Weaviate's fan-out of a large rerank (chunks of 32,
NumCPU at a time, several queries at once), through a real Weaviate server."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import httpx
import numpy as np
import pytest
from weaviate.classes.query import MetadataQuery, Rerank

from cir_module import compose_query
from cir_module.service.encoder import EMPTY_DOCUMENT_SCORE
from integration.ingest import ingest_objects
from integration.schema import create_image_collection
from integration.stack import connect
from tests.conftest import png_b64, scene_images

pytestmark = pytest.mark.integration

TITLES = ["a red circle", "two blue squares", "a green cross", "a small star", "a large circle"]


def rerank_meta(service) -> dict:
    return httpx.get(f"{service.url}/meta").json()["admission"]["rerank"]


@pytest.fixture
def titled(client, collection_name):
    images = [png_b64(img) for img in scene_images(10, seed=41)]
    collection = create_image_collection(client, collection_name, text_properties=("title",))
    objects = [(f"o{i}", {"image": b64, "title": TITLES[i % 5]}) for i, b64 in enumerate(images)]
    report = ingest_objects(collection, objects)
    assert report.failed == []
    return collection, images


def test_rerank_on_a_text_property(titled, service):
    collection, images = titled
    query = compose_query(images[0], "a red circle")
    result = collection.query.near_text(
        query=query,
        limit=10,
        rerank=Rerank(prop="title", query=query),
        return_properties=["title"],
        return_metadata=MetadataQuery(distance=True),
    )
    assert len(result.objects) == 10
    scores = [o.metadata.rerank_score for o in result.objects]
    assert scores == sorted(scores, reverse=True)
    titles = [o.properties["title"] for o in result.objects]
    # The score is the service's: the text tower's cosine of the modification and the title.
    ours = httpx.post(
        f"{service.url}/rerank", json={"query": query, "documents": titles}, timeout=60
    ).json()["scores"]
    np.testing.assert_allclose(scores, [s["score"] for s in ours], atol=1e-5)
    assert titles[0] == "a red circle"  # the exact text scores highest (cosine 1)


def texts_embedded(service) -> int:
    return httpx.get(f"{service.url}/meta").json()["batching"]["stats"]["text"]["items"]


def test_a_caption_at_weight_zero_reaches_the_service_and_leaves_the_vector_the_images(
    client, collection_name, service
):
    """A caption property in the vector recipe at weight 0 (what the benchmark's stored
    captions use): Weaviate sends each caption to /vectorize as the object is written, so the
    service holds its text vector before any rerank reads it, and the stored vector is the
    image's alone."""
    images = [png_b64(img) for img in scene_images(4, seed=44)]
    collection = create_image_collection(
        client, collection_name, text_properties=("key",), caption_property="caption",
        caption_weight=0.0,
    )  # fmt: skip
    before = texts_embedded(service)
    objects = [
        (f"img{i}", {"image": b64, "caption": f"{TITLES[i]} at row {i + 1}", "key": f"img{i}"})
        for i, b64 in enumerate(images)
    ]
    assert ingest_objects(collection, objects).failed == []
    assert texts_embedded(service) == before + len(images)
    alone = httpx.post(f"{service.url}/vectorize", json={"texts": [], "images": images}).json()
    stored = {
        o.properties["key"]: o.vector["default"]
        for o in collection.query.fetch_objects(include_vector=True, limit=10).objects
    }
    for i, vector in enumerate(alone["imageVectors"]):
        unit = np.asarray(vector) / np.linalg.norm(vector)
        got = np.asarray(stored[f"img{i}"])
        np.testing.assert_allclose(got / np.linalg.norm(got), unit, atol=1e-5)
    # The captions' vectors are cached: reranking on the property embeds none of them again
    # (only the modification, which this reranker-less service scores them against).
    query = compose_query(images[0], "make it blue")
    collection.query.near_text(query=query, limit=4, rerank=Rerank(prop="caption", query=query))
    assert texts_embedded(service) == before + len(images) + 1


def test_rerank_where_some_objects_have_no_image(client, collection_name, service):
    """A catalogue where some products have no photo: vectors from image and caption
    (multi2vec-clip's weighted sum), so the photo-less ones are found by their caption, and
    Weaviate sends "" to /rerank for their missing image."""
    images = [png_b64(img) for img in scene_images(6, seed=43)]
    collection = create_image_collection(
        client, collection_name, text_properties=("key",), caption_property="caption"
    )
    objects = [
        (f"img{i}", {"image": b64, "caption": TITLES[i % 5], "key": f"img{i}"})
        for i, b64 in enumerate(images)
    ]
    objects += [(f"bare{i}", {"caption": TITLES[i], "key": f"bare{i}"}) for i in range(3)]
    report = ingest_objects(collection, objects)
    assert report.failed == [] and len(collection) == 9
    query = compose_query(images[0], "make it blue")
    result = collection.query.near_text(
        query=query,
        limit=20,
        rerank=Rerank(prop="image", query=query),
        return_properties=["key"],
    )
    assert len(result.objects) == 9
    keys = [o.properties["key"] for o in result.objects]
    scores = [o.metadata.rerank_score for o in result.objects]
    # Objects without an image come last, with the lowest score; the others are scored.
    assert sorted(keys[-3:]) == ["bare0", "bare1", "bare2"]
    assert scores[-3:] == [EMPTY_DOCUMENT_SCORE] * 3
    assert all(-1.5 < s < 1.5 for s in scores[:-3])


def test_large_rerank_fans_out_without_a_failed_query(
    weaviate_server, client, collection_name, service
):
    """Twelve composed queries at once, each reranking 512 candidates: Weaviate sends 16
    chunks per query, NumCPU at a time, so 24 can be in flight. No query fails, at least 16
    chunks were in the service at once, and each query's side was computed once."""
    images = [png_b64(img) for img in scene_images(520, seed=45)]
    collection = create_image_collection(client, collection_name, text_properties=("key",))
    report = ingest_objects(
        collection, ((f"k{i}", {"image": b, "key": f"k{i}"}) for i, b in enumerate(images))
    )
    assert report.failed == [] and len(collection) == 520
    queries = [compose_query(images[i], f"make object {i} blue") for i in range(12)]
    before = rerank_meta(service)
    assert before["peak_in_flight"] < 16  # so the peak below is this test's own

    def run(query: str):
        return patient.collections.get(collection_name).query.near_text(
            query=query,
            limit=512,
            rerank=Rerank(prop="image", query=query),
            return_properties=["key"],
        )

    # The client's own 30 s query deadline is not what is tested: on a loaded 2-core machine
    # twelve 512-candidate reranks can take longer, while the service answers every chunk.
    with connect(weaviate_server, query_timeout_s=600) as patient, ThreadPoolExecutor(12) as pool:
        results = list(pool.map(run, queries))
    assert [len(r.objects) for r in results] == [512] * 12
    for r in results:
        scores = [o.metadata.rerank_score for o in r.objects]
        assert scores == sorted(scores, reverse=True)
    after = rerank_meta(service)
    chunks = after["requests"] - before["requests"]
    assert chunks == 12 * 16
    assert after["peak_in_flight"] >= 16, after
    # Single-flight: the 16 chunks of each query shared one computation of its query side.
    assert after["query_side"]["computed"] - before["query_side"]["computed"] == 12
    assert after["query_side"]["shared"] - before["query_side"]["shared"] == 12 * 15
