"""``POST /v1/chat/completions``: the local chat model (``chat_model``), OpenAI-compatible.

So that a captioning or enhancement job elsewhere can use the vision-language model this
service holds, with the same client as for vLLM, Ollama or TGI; and so that Weaviate's
``generative-openai`` module, pointed at this service, can ask it about a result. At most
:data:`MAX_IMAGES` images per request, each a ``data:`` URL (the service fetches nothing from
the network).
"""

from __future__ import annotations

import time
import uuid

import anyio
from fastapi import APIRouter, Request

from cir_module.errors import InputError
from cir_module.images import decode_base64_image
from cir_module.service.body import read_json_body
from cir_module.service.openapi import ERROR_RESPONSES, request_body
from cir_module.service.schemas import (
    ChatCompletionRequest,
    ChatCompletionResponse,
    ChatMessage,
    ErrorResponse,
)
from cir_module.vlm.chat import ChatRequest

__all__ = ["router"]

router = APIRouter(tags=["chat"])

# Two: Weaviate's generative-openai sends a result's stored image and the query's reference
# (docs/weaviate-contracts.md), which is what a rationale of a composed query needs.
MAX_IMAGES = 2


def _parse(message: ChatMessage, limits) -> ChatRequest:
    if isinstance(message.content, str):
        return ChatRequest(message.content)
    texts, images = [], []
    for i, part in enumerate(message.content):
        kind = part.get("type")
        if kind == "text" and isinstance(part.get("text"), str):
            texts.append(part["text"])
        elif kind == "image_url":
            url = (part.get("image_url") or {}).get("url", "")
            if not isinstance(url, str) or not url.startswith("data:image/") or "," not in url:
                raise InputError(f"content[{i}]: image_url must be a data:image/...;base64 URL")
            images.append(
                decode_base64_image(
                    url.split(",", 1)[1],
                    f"content[{i}] image",
                    max_bytes=limits.max_image_bytes,
                    max_pixels=limits.max_image_pixels,
                    max_aspect_ratio=limits.max_aspect_ratio,
                )
            )
        else:
            raise InputError(f"content[{i}]: expected a text or image_url part")
    if len(images) > MAX_IMAGES:
        raise InputError(f"at most {MAX_IMAGES} images per request, not {len(images)}")
    return ChatRequest(" ".join(texts), tuple(images))


@router.post(
    "/v1/chat/completions",
    response_model=ChatCompletionResponse,
    responses={
        **ERROR_RESPONSES,
        404: {"model": ErrorResponse, "description": "No chat model is set (CIR_CHAT_MODEL)."},
    },
    openapi_extra=request_body(ChatCompletionRequest),
)
async def chat_completions(request: Request) -> dict:
    """Greedy completion of the last user message by the local chat model."""
    encoder, backend = request.app.state.encoder, request.app.state.chat
    if encoder is None or backend is None:
        raise InputError("chat completions are not enabled: set CIR_CHAT_MODEL", 404)
    body = await read_json_body(request, ChatCompletionRequest)
    users = [m for m in body.messages if m.role == "user"]
    if not users:
        raise InputError("messages hold no user message")
    async with encoder.admission.hold(1):
        chat_request = await anyio.to_thread.run_sync(_parse, users[-1], encoder.limits)
        if not chat_request.text.strip():
            raise InputError("the user message has no text")
        limit = body.max_tokens or body.max_completion_tokens
        reply = await anyio.to_thread.run_sync(_complete, backend, chat_request, limit)
    return {
        "id": f"chatcmpl-{uuid.uuid4().hex}",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": body.model or backend.id,
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": reply},
                "finish_reason": "stop",
            }
        ],
    }


def _complete(backend, chat_request: ChatRequest, max_new_tokens: int | None) -> str:
    return backend.complete([chat_request], max_new_tokens=max_new_tokens)[0]
