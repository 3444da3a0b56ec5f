"""RAR query enhancement and the chat backends: classification, keyword distillation, the
cache, a tiny local VLM (batched = one by one), the service's OpenAI-compatible endpoint
used through :class:`OpenAIChat`, and enhanced composed queries served over HTTP."""

from __future__ import annotations

from pathlib import Path

import httpx
import numpy as np
import pytest

from cir_module import compose_query
from cir_module.enrich import (
    CAPTION_PROMPT,
    BackendEnhancer,
    CaptionItem,
    ChatCaptioner,
    KeywordDistiller,
    QueryEnhancer,
    classify_query,
)
from cir_module.enrich.captioners import clip_words
from cir_module.rerank.tiny import build_tiny_reranker
from cir_module.vlm.chat import ChatError, ChatRequest, OpenAIChat, TransformersChat
from integration.service_process import ServiceProcess
from tests.conftest import generate_in_weaviate, png_b64, scene_images

IMAGES = scene_images(6, seed=21)


def test_classify_query():
    assert classify_query("what brand is this logo?", True) == "question"
    assert classify_query("Is the dog asleep", True) == "question"
    assert classify_query("make the circle red", True) == "modification"
    assert classify_query("", True) == "image-only"
    assert classify_query("red circle", False) == "text-only"
    assert classify_query("  ", False) == "text-only"


def test_keyword_distiller_keeps_constraints_and_unifies_spelling():
    distil = KeywordDistiller().distil
    assert (
        distil("Make the small red circle at top-left blue") == "small red circle at top-left blue"
    )
    assert distil("I want the grey square in the centre removed") == "gray square in center removed"
    assert distil("the dress should be red, not blue, without sleeves") == (
        "dress red not blue without sleeves"
    )
    assert distil("make it") == "make it"  # nothing left: the text is kept


class CountingEnhancer(KeywordDistiller):
    """The distiller, counting what reaches it (to see what the cache keeps back)."""

    def __init__(self) -> None:
        self.seen: list[str] = []

    def modifications(self, texts, images):
        self.seen += list(texts)
        return super().modifications(texts, images)


def test_query_enhancer_rewrites_by_kind_and_caches_modifications_by_text():
    inner = CountingEnhancer()
    enhancer = QueryEnhancer(inner, cache_size=2)
    texts = ["make the circle red", "what is this?", "", "make the circle red"]
    images = [IMAGES[0], IMAGES[1], IMAGES[2], IMAGES[3]]
    out = enhancer.enhance(texts, images)
    assert out == ["circle red", "what is this?", "", "circle red"]
    assert inner.seen == ["make the circle red", "make the circle red"]  # both missed at once
    # Another reference image, same text: the image is withheld, so the cache answers.
    assert enhancer.enhance(["make the circle red"], [IMAGES[5]]) == ["circle red"]
    assert len(inner.seen) == 2 and enhancer.hits == 1
    enhancer.enhance(["add a square", "remove the cross"], [IMAGES[0], IMAGES[0]])
    assert enhancer.describe()["cache"] == 2  # LRU bound


PNG_URL = "data:image/png;base64," + png_b64(IMAGES[0])


@pytest.fixture(scope="module")
def tiny_chat_model(tmp_path_factory) -> Path:
    corpus = ["Describe this image factually", "red circle square keywords", "what is this"]
    return build_tiny_reranker(tmp_path_factory.mktemp("tiny-chat"), corpus, seed=3)


@pytest.fixture(scope="module")
def chat(tiny_chat_model) -> TransformersChat:
    return TransformersChat(tiny_chat_model, max_new_tokens=12, batch_size=3, image_side=56)


def test_local_chat_batches_equal_one_by_one_and_captions_are_bounded(chat):
    requests = [ChatRequest("Describe this image", (im,)) for im in IMAGES[:4]]
    requests += [ChatRequest("red circle keywords"), ChatRequest("what is this")]
    # Two images (a result and the reference, as Weaviate's generate sends them).
    pairs = [tuple(IMAGES[i : i + 2]) for i in (0, 2)]
    requests += [ChatRequest("does the first show the second changed?", p) for p in pairs]
    batched = chat.complete(requests)  # ragged: 4 with one image in batches of 3, 2 with two
    alone = [chat.complete([r])[0] for r in requests]
    assert batched == alone and all(isinstance(r, str) for r in batched)
    assert any(batched)  # a random model still says something
    captioner = ChatCaptioner(chat)
    captions = captioner.caption([CaptionItem(str(i), im, {}) for i, im in enumerate(IMAGES[:2])])
    expected = chat.complete([ChatRequest(CAPTION_PROMPT, (im,)) for im in IMAGES[:2]])
    assert captions == [clip_words(e) for e in expected] and all(
        len(c.split()) <= 100 for c in captions
    )
    assert captioner.id.startswith("transformers:") and "caption" in captioner.id


def test_backend_enhancer_withholds_the_image_from_modifications(chat):
    seen: list[ChatRequest] = []

    class Recording:
        id = "recording"

        def complete(self, requests):
            seen.extend(requests)
            return chat.complete(requests)

    enhancer = BackendEnhancer(Recording())
    out = QueryEnhancer(enhancer).enhance(
        ["make the circle red", "what is this?"], [IMAGES[0], IMAGES[1]]
    )
    assert len(out) == 2 and all(out)
    modification, question = seen
    assert modification.images == () and "make the circle red" in modification.text
    assert question.images == (IMAGES[1],)


@pytest.mark.integration
def test_openai_client_against_the_services_chat_endpoint(tiny_checkpoint, tiny_chat_model, chat):
    env = {"CIR_CHAT_MODEL": str(tiny_chat_model)}
    requests = [ChatRequest("Describe this image", (im,)) for im in IMAGES[:4]]
    requests.append(ChatRequest("red circle keywords"))
    requests.append(ChatRequest("is the first the second, changed?", tuple(IMAGES[:2])))
    with ServiceProcess(tiny_checkpoint, env=env) as service:
        meta = httpx.get(f"{service.url}/meta").json()
        assert meta["chat_model"].startswith("transformers:")
        client = OpenAIChat(f"{service.url}/v1", "tiny", concurrency=2, max_tokens=12)
        try:
            replies = client.complete(requests)
        finally:
            client.close()
        # Greedy decoding through HTTP equals the in-process model (at 448 px images there,
        # so compare with a backend at the service's default side).
        local = TransformersChat(tiny_chat_model, max_new_tokens=12)
        assert replies == local.complete(requests)
        assert 1 <= client.max_in_flight <= 2
        bad = [
            {"messages": []},
            {"messages": [{"role": "user", "content": [{"type": "video"}]}]},
            {
                "messages": [
                    {
                        "role": "user",
                        "content": [
                            {"type": "text", "text": "x"},
                            {
                                "type": "image_url",
                                "image_url": {"url": "https://example.com/a.png"},
                            },
                        ],
                    }
                ]
            },
            {"messages": [{"role": "system", "content": "hi"}]},
            {  # three images: one more than a result and its reference
                "messages": [
                    {
                        "role": "user",
                        "content": [{"type": "text", "text": "x"}]
                        + [{"type": "image_url", "image_url": {"url": PNG_URL}}] * 3,
                    }
                ]
            },
        ]
        for body in bad:
            response = httpx.post(f"{service.url}/v1/chat/completions", json=body)
            assert 400 <= response.status_code < 500 and response.json()["error"], body
        refusing = OpenAIChat(f"{service.url}/v1", "tiny", retries=0)
        with pytest.raises(ChatError, match="HTTP 4"):
            refusing.complete([ChatRequest("")])
        assert httpx.get(f"{service.url}/.well-known/live").is_success  # still up


@pytest.mark.integration
def test_chat_endpoint_is_off_without_a_chat_model(service):
    response = httpx.post(
        f"{service.url}/v1/chat/completions",
        json={"messages": [{"role": "user", "content": "hi"}]},
    )
    assert response.status_code == 404 and "CIR_CHAT_MODEL" in response.json()["error"]


@pytest.mark.integration
def test_service_enhances_composed_queries_only(tiny_checkpoint, local_model):
    reference = png_b64(IMAGES[0])
    text = "please make the grey circle in the centre red"
    with ServiceProcess(tiny_checkpoint, env={"CIR_QUERY_ENHANCEMENT": "keywords"}) as service:
        body = {"texts": [compose_query(reference, text), text], "images": []}
        vectors = httpx.post(f"{service.url}/vectorize", json=body).json()["textVectors"]
        meta = httpx.get(f"{service.url}/meta").json()["query_enhancement"]
    assert meta["enhancer"] == "keywords/1" and meta["misses"] == 1
    keywords = KeywordDistiller().distil(text)
    assert keywords == "gray circle in center red"
    expected = local_model.embed_composed([IMAGES[0]], [keywords])[0]
    plain = local_model.embed_composed([IMAGES[0]], [text])[0]
    np.testing.assert_allclose(vectors[0], expected, atol=1e-5)
    assert not np.allclose(vectors[0], plain, atol=1e-3)
    # A plain text (a stored caption takes this path too) is not rewritten.
    np.testing.assert_allclose(vectors[1], local_model.embed_texts([text])[0], atol=1e-5)


def test_settings_refuse_chat_enhancement_without_a_backend():
    from pydantic import ValidationError

    from cir_module.settings import ServiceSettings

    with pytest.raises(ValidationError, match="needs chat_model"):
        ServiceSettings(query_enhancement="chat")


@pytest.mark.integration
def test_weaviate_generate_asks_the_services_chat_model_about_each_result(
    tiny_checkpoint, tiny_chat_model
):
    # Weaviate's generative-openai pointed at this service: each result's stored image and the
    # query's reference image reach /v1/chat/completions (docs/weaviate-contracts.md), and the
    # chat model's answer comes back through `generate` from the unchanged v4 client.
    prompt = "Is the first image the second one changed as asked: make the circle red?"
    stored = {f"img{i}": im for i, im in enumerate(IMAGES[1:4])}
    objects, _ = generate_in_weaviate(
        tiny_checkpoint, tiny_chat_model, stored, IMAGES[0], "make the circle red", prompt,
        max_tokens=12,
    )  # fmt: skip
    assert len(objects) == 3
    local = TransformersChat(tiny_chat_model, max_new_tokens=12)
    for obj in objects:
        assert obj.generative is not None and obj.generative.text, obj
        # The candidate first, then the reference: the order Weaviate sends them in.
        images = (stored[obj.properties["title"]], IMAGES[0])
        assert obj.generative.text == local.complete([ChatRequest(prompt, images)])[0]


def test_vlm_enhancement_refuses_a_plain_chat_model(tiny_chat_model):
    from cir_module.service.app import _load_chat
    from cir_module.settings import ServiceSettings

    settings = ServiceSettings(query_enhancement="vlm", chat_model=str(tiny_chat_model))
    with pytest.raises(ValueError, match="distils queries itself"):
        _load_chat(settings)
