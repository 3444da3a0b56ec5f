"""Composed image retrieval through a real Weaviate server and the real service."""

from __future__ import annotations

import json

import httpx
import numpy as np
import pytest
from weaviate.classes.query import MetadataQuery, Rerank
from weaviate.exceptions import WeaviateBaseError

from cir_module import compose_query
from integration.ingest import ingest_objects
from integration.schema import create_image_collection
from integration.stack import connect
from integration.weaviate_server import WeaviateServer
from tests.conftest import png_b64, scene_images

pytestmark = pytest.mark.integration

GALLERY = [png_b64(img) for img in scene_images(24, seed=3)]


def service_vector(service, text: str) -> np.ndarray:
    r = httpx.post(f"{service.url}/vectorize", json={"texts": [text]}, timeout=60)
    r.raise_for_status()
    return np.array(r.json()["textVectors"][0])


@pytest.fixture
def gallery(client, collection_name):
    collection = create_image_collection(client, collection_name, text_properties=("key",))
    report = ingest_objects(
        collection,
        ((f"img-{i}", {"image": b64, "key": f"img-{i}"}) for i, b64 in enumerate(GALLERY)),
    )
    assert report.failed == [] and report.inserted == len(GALLERY)
    assert len(collection) == len(GALLERY)
    return collection


def keys_and_distances(result) -> tuple[list[str], np.ndarray]:
    return (
        [o.properties["key"] for o in result.objects],
        np.array([o.metadata.distance for o in result.objects]),
    )


def test_weaviate_version_is_the_pinned_release(client, weaviate_server):
    assert client.get_meta()["version"] == weaviate_server.version
    # Our /meta is merged into Weaviate's meta under the module's name.
    assert client.get_meta()["modules"]["multi2vec-clip"]["service"] == "weaviate-cir"


def test_stored_vectors_are_the_services_image_vectors(gallery, service):
    r = httpx.post(f"{service.url}/vectorize", json={"images": GALLERY[:3]}, timeout=60)
    expected = np.array(r.json()["imageVectors"])
    fetched = gallery.query.fetch_objects(limit=100, include_vector=True, return_properties=["key"])
    stored = {o.properties["key"]: o.vector["default"] for o in fetched.objects}
    for i in range(3):
        np.testing.assert_allclose(stored[f"img-{i}"], expected[i], atol=1e-5)


def test_near_image_finds_the_same_image(gallery):
    for i in (0, 7, 19):
        result = gallery.query.near_image(
            GALLERY[i],
            limit=3,
            return_properties=["key"],
            return_metadata=MetadataQuery(distance=True),
        )
        keys, distances = keys_and_distances(result)
        assert keys[0] == f"img-{i}"
        assert distances[0] < 1e-4


@pytest.mark.parametrize("kind", ["plain", "composed"])
def test_near_text_searches_with_the_services_vector(gallery, service, kind):
    query = "a small red circle" if kind == "plain" else compose_query(GALLERY[5], "make it blue")
    by_text = gallery.query.near_text(
        query=query,
        limit=10,
        return_properties=["key"],
        return_metadata=MetadataQuery(distance=True),
    )
    by_vector = gallery.query.near_vector(
        service_vector(service, query).tolist(),
        limit=10,
        return_properties=["key"],
        return_metadata=MetadataQuery(distance=True),
    )
    text_keys, text_dist = keys_and_distances(by_text)
    vec_keys, vec_dist = keys_and_distances(by_vector)
    assert len(text_keys) == 10
    assert text_keys == vec_keys
    np.testing.assert_allclose(text_dist, vec_dist, atol=1e-5)


def test_rerank_scores_are_ours_and_ordered(gallery, service):
    query = compose_query(GALLERY[2], "remove the square at top-left")
    result = gallery.query.near_text(
        query=query,
        limit=12,
        rerank=Rerank(prop="image", query=query),
        return_properties=["key", "image"],
        return_metadata=MetadataQuery(distance=True),
    )
    scores = [o.metadata.rerank_score for o in result.objects]
    assert len(scores) == 12 and scores == sorted(scores, reverse=True)
    docs = [o.properties["image"] for o in result.objects]
    ours = httpx.post(f"{service.url}/rerank", json={"query": query, "documents": docs}, timeout=60)
    np.testing.assert_allclose(scores, [s["score"] for s in ours.json()["scores"]], atol=1e-5)
    # Without an LVLM reranker configured, an image document scores the first-stage cosine.
    np.testing.assert_allclose(scores, [1 - o.metadata.distance for o in result.objects], atol=1e-4)


def test_raw_graphql_composed_query(gallery, client, service):
    query = compose_query(GALLERY[9], "add a large green cross at center")
    literal = json.dumps(query)  # a GraphQL string literal, quotes escaped
    rerank = f'rerank(property: "image", query: {literal}) {{ score }}'
    gql = f"""{{ Get {{ {gallery.name}(nearText: {{concepts: [{literal}]}}, limit: 5) {{
        key _additional {{ distance {rerank} }} }} }} }}"""
    response = client.graphql_raw_query(gql)
    assert not response.errors, response.errors
    rows = response.get[gallery.name]
    assert len(rows) == 5
    expected = gallery.query.near_vector(
        service_vector(service, query).tolist(), limit=5, return_properties=["key"]
    )
    assert [r["key"] for r in rows] == [o.properties["key"] for o in expected.objects]
    assert all(r["_additional"]["rerank"][0]["score"] is not None for r in rows)


def test_malformed_composed_query_surfaces_our_error(gallery):
    with pytest.raises(WeaviateBaseError) as info:
        gallery.query.near_text(query='{"$cir": 1, "image": "abc", "text": "make it red"', limit=3)
    assert "composed query is not valid JSON" in str(info.value)
    with pytest.raises(WeaviateBaseError) as info:
        gallery.query.near_text(query=compose_query("bm90IGFuIGltYWdl", "make it red"), limit=3)
    assert "not a recognised image" in str(info.value)


def test_bad_image_in_batch_is_reported_not_fatal(client, collection_name):
    collection = create_image_collection(client, collection_name, text_properties=("key",))
    objects = [(f"ok-{i}", {"image": GALLERY[i], "key": f"ok-{i}"}) for i in range(3)]
    objects.insert(1, ("broken", {"image": "bm90IGFuIGltYWdl", "key": "broken"}))
    report = ingest_objects(collection, objects)
    assert report.sent == 4 and report.inserted == 3
    assert [key for key, _ in report.failed] == ["broken"]
    assert "not a recognised image" in report.failed[0][1]
    assert len(collection) == 3


@pytest.mark.parametrize("index", ["flat", "hnsw"])
def test_index_choice_reaches_weaviate_and_flat_search_is_exact(
    client, collection_name, service, index
):
    """The collection's vector index is the one asked for, read back from Weaviate; on the flat
    index nearText ranks the whole gallery exactly as brute-force cosine over the stored vectors."""
    collection = create_image_collection(
        client, collection_name, text_properties=("key",), index=index
    )
    config = collection.config.get().vector_config["default"].vector_index_config
    assert config.vector_index_type() == index
    if index == "hnsw":
        return
    report = ingest_objects(
        collection,
        ((f"img-{i}", {"image": b64, "key": f"img-{i}"}) for i, b64 in enumerate(GALLERY)),
    )
    assert report.failed == []
    query = compose_query(GALLERY[4], "make the large one small")
    result = collection.query.near_text(query=query, limit=len(GALLERY), return_properties=["key"])
    fetched = collection.query.fetch_objects(
        limit=100, include_vector=True, return_properties=["key"]
    )
    keys = [o.properties["key"] for o in fetched.objects]
    stored = np.array([o.vector["default"] for o in fetched.objects])
    q = service_vector(service, query)
    cosine = stored @ q / np.linalg.norm(stored, axis=1) / np.linalg.norm(q)
    assert [o.properties["key"] for o in result.objects] == [keys[i] for i in np.argsort(-cosine)]


def test_unknown_index_is_refused(client):
    with pytest.raises(ValueError, match="hnsw, flat"):
        create_image_collection(client, "CIRTest_never_created", index="ivf")


def test_a_batch_failing_as_a_whole_reports_every_object_failed(service):
    """Weaviate stopped before an import: the batch cannot even read the collection's config
    and raises; the report lists every object as failed, so that a caller's retry
    (``ingest_until_stored``) covers them, instead of raising."""
    with WeaviateServer(service.url) as server:
        client = connect(server)
        collection = create_image_collection(client, "CIRGone", text_properties=("key",))
    try:
        objects = [(f"img-{i}", {"image": b64}) for i, b64 in enumerate(GALLERY[:5])]
        report = ingest_objects(collection, iter(objects), batch_size=2)
    finally:
        client.close()
    assert report.sent == len(objects)
    assert [key for key, _ in report.failed] == [key for key, _ in objects]
    assert all(message.startswith("batch failed:") for _, message in report.failed)
