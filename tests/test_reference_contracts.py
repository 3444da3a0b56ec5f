"""The requests Weaviate's reference containers are smoke-tested with (multi2vec-clip
inference and reranker-transformers), sent to the real service over HTTP: written from their
documented behaviour, so that the service is a drop-in for both."""

from __future__ import annotations

import httpx
import numpy as np
import pytest
from PIL import Image

from cir_module import compose_query
from cir_module.service.encoder import EMPTY_DOCUMENT_SCORE
from integration.service_process import ServiceProcess
from tests.conftest import png_b64, scene_images

pytestmark = pytest.mark.integration

PLANE_JPEG = png_b64(scene_images(1, seed=21)[0].resize((256, 215)), "JPEG", quality=90)
REF2VEC = (
    "The ref2Vec-centroid module is used to calculate object vectors based on the centroid of "
    "referenced vectors. The idea is that this centroid vector would be calculated from the "
    "vectors of an object's references."
)
DOCUMENTS = [
    REF2VEC,
    "SpaceX is a global company that does projects for NASA",
    "Weaviate is a database.",
]


def build_tiny_cross_encoder(folder) -> str:
    """A BERT sequence classifier with one label and a word-level vocabulary, random weights:
    the shape of cross-encoder/ms-marco-MiniLM-L-6-v2, loadable by CrossEncoder(folder)."""
    from transformers import BertConfig, BertForSequenceClassification, BertTokenizerFast

    words = sorted(
        {w.strip(".,?'").lower() for t in [*DOCUMENTS, "What is ref2vec?"] for w in t.split()}
    )
    vocab = folder / "vocab.txt"
    vocab.write_text("\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *words]) + "\n")
    tokenizer = BertTokenizerFast(vocab_file=str(vocab))
    config = BertConfig(
        vocab_size=tokenizer.vocab_size,
        hidden_size=16,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=32,
        max_position_embeddings=128,
        num_labels=1,
    )
    BertForSequenceClassification(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return str(folder)


@pytest.fixture(scope="module")
def cross_encoder_dir(tmp_path_factory) -> str:
    return build_tiny_cross_encoder(tmp_path_factory.mktemp("tiny-cross-encoder"))


@pytest.fixture(scope="module")
def cross_encoder_service(tiny_checkpoint, cross_encoder_dir):
    with ServiceProcess(tiny_checkpoint, env={"CIR_TEXT_RERANKER_MODEL": cross_encoder_dir}) as s:
        yield s


def post(service, path: str, body: dict) -> httpx.Response:
    return httpx.post(f"{service.url}{path}", json=body, timeout=60)


@pytest.mark.parametrize("path, status", [("/.well-known/ready", 204), ("/.well-known/live", 204)])
def test_health_probes(service, path, status):
    assert httpx.get(f"{service.url}{path}").status_code == status


def test_meta_is_an_object(service):
    r = httpx.get(f"{service.url}/meta")
    assert r.status_code == 200 and isinstance(r.json(), dict)


def test_vectorize_smoke_requests(service):
    r = post(service, "/vectorize", {"texts": ["This is plane"], "images": [PLANE_JPEG]})
    assert r.status_code == 200
    body = r.json()
    assert len(body["textVectors"]) == 1 and len(body["imageVectors"]) == 1
    texts = ["This is plane", "Boeing 737", "Blue plane"]
    r = post(service, "/vectorize", {"texts": texts, "images": [PLANE_JPEG, PLANE_JPEG]})
    assert r.status_code == 200
    body = r.json()
    assert len(body["textVectors"]) == 3 and len(body["imageVectors"]) == 2
    # The same image twice, the same vector; three texts, three different vectors.
    np.testing.assert_allclose(body["imageVectors"][0], body["imageVectors"][1], atol=1e-6)
    assert len({tuple(np.round(v, 5)) for v in body["textVectors"]}) == 3


def test_empty_vectorize_request_gets_empty_lists(service):
    for body in ({}, {"texts": [], "images": []}):
        r = post(service, "/vectorize", body)
        assert r.status_code == 200, r.text
        assert r.json() == {"textVectors": [], "imageVectors": []}


def test_rerank_single_pair_mode(service):
    body = {"query": "What is ref2vec?", "property": REF2VEC}
    r = post(service, "/rerank", body)
    assert r.status_code == 200, r.text
    out = r.json()
    assert out["query"] == body["query"] and out["property"] == body["property"]
    assert out["scores"] is None and out["score"] != 0


def test_rerank_batch_mode(service):
    body = {"query": "What is ref2vec?", "property": REF2VEC, "documents": DOCUMENTS}
    r = post(service, "/rerank", body)
    assert r.status_code == 200, r.text
    out = r.json()
    assert out["query"] == body["query"]
    assert out["property"] is None and out["score"] is None
    assert [s["document"] for s in out["scores"]] == DOCUMENTS
    assert all(s["score"] != 0 for s in out["scores"])


def test_text_documents_score_the_text_towers_cosine(service):
    query = "What is ref2vec?"
    r = post(service, "/rerank", {"query": query, "documents": DOCUMENTS, "property": ""})
    scores = [s["score"] for s in r.json()["scores"]]
    vecs = post(service, "/vectorize", {"texts": [query, *DOCUMENTS]}).json()["textVectors"]
    expected = np.array(vecs[1:]) @ np.array(vecs[0])
    np.testing.assert_allclose(scores, expected, atol=1e-5)


def test_composed_query_scores_text_documents_with_its_modification(service):
    reference = scene_images(1, seed=4)[0]
    composed = compose_query(reference, "make the circle red")
    plain = post(service, "/rerank", {"query": "make the circle red", "documents": DOCUMENTS})
    mixed = post(service, "/rerank", {"query": composed, "documents": DOCUMENTS})
    assert mixed.status_code == 200, mixed.text
    np.testing.assert_allclose(
        [s["score"] for s in mixed.json()["scores"]],
        [s["score"] for s in plain.json()["scores"]],
        atol=1e-5,
    )


def test_mixed_and_empty_documents_in_one_list(service):
    images = [png_b64(img) for img in scene_images(3, seed=12)]
    composed = compose_query(images[0], "make it blue")
    documents = [images[1], "", "a red circle", images[2], "   "]
    r = post(service, "/rerank", {"query": composed, "documents": documents})
    assert r.status_code == 200, r.text
    scores = [s["score"] for s in r.json()["scores"]]
    assert [s["document"] for s in r.json()["scores"]] == documents
    # Empty documents score lowest, the others are real scores.
    assert scores[1] == scores[4] == EMPTY_DOCUMENT_SCORE
    assert all(-1.5 < scores[i] < 1.5 for i in (0, 2, 3))
    # An image document's score does not depend on what else is in the list.
    alone = post(service, "/rerank", {"query": composed, "documents": [images[1]]}).json()
    assert alone["scores"][0]["score"] == pytest.approx(scores[0], abs=1e-5)


def test_empty_document_list_and_empty_query(service):
    r = post(service, "/rerank", {"query": "q", "documents": []})
    assert r.status_code == 200 and r.json()["scores"] == []
    r = post(
        service,
        "/rerank",
        {"query": "", "documents": ["a text", png_b64(Image.new("RGB", (8, 8)))]},
    )
    assert r.status_code == 200 and len(r.json()["scores"]) == 2


def test_cross_encoder_scores_text_documents(cross_encoder_service, cross_encoder_dir):
    from sentence_transformers import CrossEncoder

    query = "What is ref2vec?"
    r = post(cross_encoder_service, "/rerank", {"query": query, "documents": DOCUMENTS})
    assert r.status_code == 200, r.text
    expected = CrossEncoder(cross_encoder_dir).predict([(query, d) for d in DOCUMENTS])
    np.testing.assert_allclose([s["score"] for s in r.json()["scores"]], expected, atol=1e-5)
    single = post(cross_encoder_service, "/rerank", {"query": query, "property": DOCUMENTS[1]})
    assert single.json()["score"] == pytest.approx(float(expected[1]), abs=1e-5)
    meta = httpx.get(f"{cross_encoder_service.url}/meta").json()
    assert meta["text_reranker"] == "tiny-cross-encoder0"
