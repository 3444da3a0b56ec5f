"""The real service over HTTP: the requests Weaviate's reference containers are tested with,
the composed-query form, reranking, and malformed input."""

from __future__ import annotations

import asyncio
import base64
import json
from pathlib import Path

import httpx
import numpy as np
import pytest

from cir_module import compose_query
from cir_module.settings import ServiceSettings
from tests.conftest import png_b64, scene_images

pytestmark = pytest.mark.integration

IMAGES = [png_b64(img) for img in scene_images(5, seed=7)]


def post(service, path: str, body: object) -> httpx.Response:
    return httpx.post(f"{service.url}{path}", json=body, timeout=60)


def vectors(service, texts=(), images=()) -> tuple[np.ndarray, np.ndarray]:
    body = {}
    if texts:
        body["texts"] = list(texts)
    if images:
        body["images"] = list(images)
    r = post(service, "/vectorize", body)
    assert r.status_code == 200, r.text
    data = r.json()
    return np.array(data["textVectors"]), np.array(data["imageVectors"])


def test_health_and_meta(service):
    assert httpx.get(f"{service.url}/.well-known/live").status_code == 204
    assert httpx.get(f"{service.url}/.well-known/ready").status_code == 204
    meta = httpx.get(f"{service.url}/meta").json()
    assert meta["ready"] is True
    assert meta["model"]["scales"] == 3 and meta["model"]["dimension"] == 32
    # The checkpoint by name: /meta shows no absolute path of the server's.
    assert meta["checkpoint"] == Path(service.checkpoint).name
    assert "/tmp" not in json.dumps(meta) and service.checkpoint not in json.dumps(meta)
    assert {"torch", "transformers"} <= set(meta["versions"])
    # The serving process runs with the short GIL switch interval (Python's is 5 ms).
    default = ServiceSettings.model_fields["gil_switch_interval_ms"].default
    assert meta["gil_switch_interval_ms"] == default != 5.0


def test_texts_only(service, local_model):
    texts = ["a red circle", "two blue squares", "a red circle"]
    text_vecs, image_vecs = vectors(service, texts=texts)
    assert text_vecs.shape == (3, 32) and image_vecs.shape == (0,)
    np.testing.assert_allclose(text_vecs, local_model.embed_texts(texts), atol=1e-5)
    np.testing.assert_array_equal(text_vecs[0], text_vecs[2])


def test_images_only(service, local_model):
    text_vecs, image_vecs = vectors(service, images=IMAGES[:3] + IMAGES[:1])
    assert text_vecs.shape == (0,) and image_vecs.shape == (4, 32)
    np.testing.assert_array_equal(image_vecs[0], image_vecs[3])  # identical images
    assert not np.allclose(image_vecs[0], image_vecs[1])
    np.testing.assert_allclose(np.linalg.norm(image_vecs, axis=1), 1.0, atol=1e-5)


def test_texts_and_images_keep_their_order(service):
    texts = ["small yellow star", "large gray cross", "a purple diamond"]
    both_t, both_i = vectors(service, texts=texts, images=IMAGES[:3])
    for k in range(3):  # each item alone gives the same vector as in the mixed batch
        alone_t, _ = vectors(service, texts=[texts[k]])
        _, alone_i = vectors(service, images=[IMAGES[k]])
        np.testing.assert_allclose(both_t[k], alone_t[0], atol=1e-5)
        np.testing.assert_allclose(both_i[k], alone_i[0], atol=1e-5)


def test_composed_text_gets_the_composed_vector(service, local_model):
    reference = scene_images(5, seed=7)[0]
    composed = compose_query(IMAGES[0], "make the circle at top-left blue")
    text_vecs, _ = vectors(service, texts=["plain words", composed, "more words"])
    expected = local_model.embed_composed([reference], ["make the circle at top-left blue"])
    np.testing.assert_allclose(text_vecs[1], expected[0], atol=1e-5)
    np.testing.assert_allclose(text_vecs[0], local_model.embed_texts(["plain words"])[0], atol=1e-5)


def test_rerank_one_score_per_document_in_order(service, local_model):
    query = compose_query(IMAGES[0], "remove the square")
    r = post(service, "/rerank", {"query": query, "documents": IMAGES, "property": ""})
    assert r.status_code == 200, r.text
    scores = r.json()["scores"]
    assert [s["document"] for s in scores] == IMAGES
    q = vectors(service, texts=[query])[0][0]
    d = vectors(service, images=IMAGES)[1]
    np.testing.assert_allclose([s["score"] for s in scores], d @ q, atol=1e-5)


def test_rerank_concurrent_chunks(service):
    """Weaviate splits documents into chunks of 32 and sends them at once; each chunk must
    get its own scores back, in order, whatever the interleaving."""
    docs = [png_b64(img) for img in scene_images(70, seed=11)]
    query = compose_query(docs[0], "make it larger")
    chunks = [docs[i : i + 32] for i in range(0, len(docs), 32)]

    async def send_all() -> list[list[float]]:
        async with httpx.AsyncClient(timeout=120) as http:
            answers = await asyncio.gather(
                *(
                    http.post(
                        f"{service.url}/rerank", content=_json({"query": query, "documents": c})
                    )
                    for c in chunks
                )
            )
        return [[s["score"] for s in a.json()["scores"]] for a in answers]

    concurrent = asyncio.run(send_all())
    whole = post(service, "/rerank", {"query": query, "documents": docs}).json()["scores"]
    np.testing.assert_allclose(np.concatenate(concurrent), [s["score"] for s in whole], atol=1e-5)


def _json(body: object) -> bytes:
    import json

    return json.dumps(body).encode()  # sent without Content-Type, as Weaviate's reranker does


BAD_B64 = "!!!not base64***"
NOT_IMAGE = base64.b64encode(b"plain bytes, no image").decode()


@pytest.mark.parametrize(
    "path, body, status, message",
    [
        ("/vectorize", {"images": [BAD_B64]}, 400, "images[0] is not valid base64"),
        ("/vectorize", {"images": [IMAGES[0], NOT_IMAGE]}, 400, "images[1] is not a recognised"),
        (
            "/vectorize",
            {"texts": ['{"$cir": 1, "image": "abc", "text": ']},
            400,
            "texts[0]: composed query",
        ),
        ("/vectorize", {"texts": [compose_query(NOT_IMAGE, "x")]}, 400, "composed query image"),
        ("/vectorize", {"texts": "not a list"}, 422, "texts"),
        ("/vectorize", {"texts": [1, 2]}, 422, "texts.0"),
        ("/vectorize", [1, 2], 400, "must be a JSON object"),
        ("/rerank", {"query": "q"}, 422, "'documents'"),
        ("/rerank", {"query": "q", "documents": None}, 422, "'documents'"),
        (
            "/rerank",
            {"query": '{"$cir": 1, "image": 1}', "documents": [IMAGES[0]]},
            400,
            "composed query",
        ),
    ],
)
def test_malformed_input_gets_4xx_json_error(service, path, body, status, message):
    r = post(service, path, body)
    assert r.status_code == status, r.text
    assert message in r.json()["error"]
    assert httpx.get(f"{service.url}/.well-known/live").status_code == 204


def test_non_json_body_and_unknown_route(service):
    r = httpx.post(f"{service.url}/vectorize", content=b"\xff\xfe not json")
    assert r.status_code == 400 and "not valid JSON" in r.json()["error"]
    r = httpx.post(f"{service.url}/vectorize", content=b"")
    assert r.status_code == 400 and "empty" in r.json()["error"]
    r = httpx.get(f"{service.url}/no/such/route")
    assert r.status_code == 404 and "no route" in r.json()["error"]
    r = httpx.get(f"{service.url}/vectorize")
    assert r.status_code == 405 and r.json()["error"]


def _refs(node: object) -> list[str]:
    """Every ``$ref`` under ``node``."""
    if isinstance(node, dict):
        return [v for k, v in node.items() if k == "$ref"] + [
            r for v in node.values() for r in _refs(v)
        ]
    if isinstance(node, list):
        return [r for v in node for r in _refs(v)]
    return []


def test_openapi_describes_the_bodies_the_routes_take_and_give(service):
    """/openapi.json names the request and response body of every route with a body, and the
    error body; the names match what the service really sends."""
    doc = httpx.get(f"{service.url}/openapi.json").json()
    schemas = doc["components"]["schemas"]
    for ref in _refs(doc):  # every reference resolves
        assert ref.removeprefix("#/components/schemas/") in schemas, ref

    def body(schema: dict) -> set[str]:
        return set(schemas[schema["$ref"].rsplit("/", 1)[1]]["properties"])

    routes = {
        "/vectorize": ({"texts", "images"}, {"textVectors", "imageVectors"}),
        "/rerank": ({"query", "documents", "property"}, {"query", "scores", "property", "score"}),
        "/v1/chat/completions": (
            {"model", "messages", "max_tokens", "max_completion_tokens"},
            {"id", "object", "created", "model", "choices"},
        ),
    }
    for path, (request, response) in routes.items():
        operation = doc["paths"][path]["post"]
        assert body(operation["requestBody"]["content"]["application/json"]["schema"]) == request
        answers = operation["responses"]
        assert body(answers["200"]["content"]["application/json"]["schema"]) == response
        for status in ("400", "413", "422", "503"):
            assert body(answers[status]["content"]["application/json"]["schema"]) == {"error"}
    assert "text/plain" in doc["paths"]["/metrics"]["get"]["responses"]["200"]["content"]

    # What the service sends has the documented keys.
    vectorized = post(service, "/vectorize", {"texts": ["a red circle"]}).json()
    assert set(vectorized) == routes["/vectorize"][1]
    reranked = post(service, "/rerank", {"query": "a red circle", "documents": ["x"]}).json()
    assert set(reranked) == routes["/rerank"][1]
    assert set(post(service, "/vectorize", {"texts": 1}).json()) == {"error"}
