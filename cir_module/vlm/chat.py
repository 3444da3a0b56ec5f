"""Chat backends shared by the captioners and the query enhancer: one request is a text and
at most one image, one reply is a text.

- :class:`TransformersChat`: a local image-text-to-text checkpoint (``from_pretrained``, hub
  id or folder; the Qwen2-VL family through its adapter in ``cir_module.vlm.family``),
  greedy batched generation, on the GPU when there is one.
- :class:`OpenAIChat`: any OpenAI-compatible ``/chat/completions`` endpoint (vLLM, Ollama,
  TGI, or this service's own ``/v1``), with at most ``concurrency`` requests in flight and
  retries with backoff on 429, 5xx and connection errors.

A checkpoint folder that records a kind of its own (``cir_reranker.json``) may be served as
chat by another class: :func:`register_chat_backend` maps the kind to it, and
:func:`load_chat_backend` opens a folder with the class of its kind, else
:class:`TransformersChat`. What a backend can do beside answering text is said by its
attributes (:class:`ChatBackend`), never by its id.
"""

from __future__ import annotations

import base64
import io
import logging
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol, TypeVar

from PIL import Image

from cir_module.vlm.folder import recorded_kind

__all__ = [
    "ChatBackend",
    "ChatError",
    "ChatRequest",
    "OpenAIChat",
    "TransformersChat",
    "load_chat_backend",
    "register_chat_backend",
]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ChatRequest:
    """One user turn: a text and its images, in the order the prompt shows them."""

    text: str
    images: tuple[Image.Image, ...] = ()


class ChatError(RuntimeError):
    """A backend could not answer (after its retries), with the reason."""


class ChatBackend(Protocol):
    """Answers chat requests. ``answers_text``: it answers a text prompt as asked (what a
    query enhancer that prompts it needs); a backend that answers in a fixed form of its own
    says False. A backend may also offer ``query_distiller()``: the query enhancer's rewriter
    it brings itself (:class:`~cir_module.enrich.enhance.Enhancer`)."""

    id: str
    answers_text: bool

    def complete(self, requests: Sequence[ChatRequest]) -> list[str]: ...


B = TypeVar("B", bound=type)

_BACKENDS: dict[str, Callable[..., ChatBackend]] = {}


def register_chat_backend(kind: str) -> Callable[[B], B]:
    """Class decorator: serve folders of ``kind`` as chat with the decorated class (built
    by its ``from_pretrained(path)``)."""

    def register(cls: B) -> B:
        _BACKENDS[kind] = cls.from_pretrained
        return cls

    return register


def load_chat_backend(path: str, device: str | None = None) -> ChatBackend:
    """The chat backend for the checkpoint at ``path`` on ``device`` (None: CUDA when there
    is one): the class registered for its recorded kind, else greedy generation
    (:class:`TransformersChat`)."""
    kind = recorded_kind(path)
    if kind in _BACKENDS:
        return _BACKENDS[kind](path, device=device)
    return TransformersChat(path, device=device)


_TEMPLATE = "<|im_start|>user\n{image_part}{{text}}<|im_end|>\n<|im_start|>assistant\n"


class TransformersChat:
    """A local vision-language model answering greedily, ``batch_size`` requests at a time
    (requests are batched by their number of images, so no batch mixes prompt shapes)."""

    answers_text = True

    def __init__(
        self,
        path: str | Path,
        *,
        max_new_tokens: int = 128,
        batch_size: int = 8,
        image_side: int | None = None,
        device: str | None = None,
        keep_aspect: bool | None = None,
    ) -> None:
        """Load the checkpoint at ``path`` onto ``device`` (None: CUDA when there is one).
        Images are read at ``image_side`` x ``image_side`` pixels (default: the side the
        folder records, else 448): squashed to that square for a model trained here on
        squares, kept at their aspect within that many pixels for any other checkpoint
        (``keep_aspect`` None: whether the folder records no side)."""
        import torch
        from transformers import AutoConfig, AutoTokenizer

        from cir_module.vlm.family import adapter_for, saved_settings
        from cir_module.vlm.prompt import PromptCodec

        # The side the checkpoint was trained at, when its folder says; else 448 px (Qwen2-VL:
        # 32 x 32 patches of 14 px, 256 tokens after the 2 x 2 merge).
        recorded = saved_settings(path).get("image_side")
        image_side = image_side or recorded or 448
        keep_aspect = recorded is None if keep_aspect is None else keep_aspect
        adapter = adapter_for(AutoConfig.from_pretrained(path).model_type)
        self.device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        dtype = torch.bfloat16 if self.device.startswith("cuda") else torch.float32
        self.model = adapter.load_model(str(path), dtype=dtype).to(self.device).eval()
        self.tokenizer = AutoTokenizer.from_pretrained(path)
        self.codec = PromptCodec(
            self.tokenizer,
            adapter.load_image_processor(str(path)),
            adapter.image_start,
            adapter.image_pad,
            adapter.image_end,
            adapter.image_tokens(self.model, image_side),
            image_side,
            keep_aspect=keep_aspect,
        )
        self.max_new_tokens = max_new_tokens
        self.batch_size = batch_size
        # The folder and its parent ("caption/model" of a stage, "Qwen/Qwen2-VL-2B" of a hub id).
        self.id = "transformers:" + "/".join(Path(str(path)).parts[-2:])
        # generate() is not safe to run concurrently on one model.
        self._lock = threading.Lock()

    def complete(
        self, requests: Sequence[ChatRequest], max_new_tokens: int | None = None
    ) -> list[str]:
        replies: list[str] = [""] * len(requests)
        for count in sorted({len(r.images) for r in requests}):
            rows = [i for i, r in enumerate(requests) if len(r.images) == count]
            for start in range(0, len(rows), self.batch_size):
                chunk = rows[start : start + self.batch_size]
                answers = self._generate([requests[i] for i in chunk], max_new_tokens)
                for i, reply in zip(chunk, answers, strict=True):
                    replies[i] = reply
        return replies

    def _generate(self, requests: Sequence[ChatRequest], max_new_tokens: int | None) -> list[str]:
        import torch

        # All requests of a batch hold as many images (see complete); each is one {image}.
        per_row = len(requests[0].images)
        template = _TEMPLATE.format(image_part="{image}\n" * per_row)
        images = [im for r in requests for im in r.images]
        counts: list[int] | None = None
        if images:
            pixels, grid = self.codec.pixels(images)
            counts = self.codec.tokens_per_image(grid)  # per image: its shape decides
        ids = [
            self.codec.encode(
                template,
                image_tokens=counts[i * per_row : (i + 1) * per_row] if counts else None,
                text=r.text,
            )
            for i, r in enumerate(requests)
        ]
        width = max(map(len, ids))
        pad = self.tokenizer.pad_token_id
        # Left padding, so that every row's next token follows its own prompt.
        inputs = {
            "input_ids": torch.tensor([[pad] * (width - len(i)) + i for i in ids]),
            "attention_mask": torch.tensor([[0] * (width - len(i)) + [1] * len(i) for i in ids]),
        }
        if images:
            inputs["pixel_values"] = torch.from_numpy(pixels).to(self.model.dtype)
            inputs["image_grid_thw"] = torch.from_numpy(grid)
        inputs = {k: v.to(self.device) for k, v in inputs.items()}
        with self._lock, torch.inference_mode():
            out = self.model.generate(
                **inputs,
                max_new_tokens=max_new_tokens or self.max_new_tokens,
                do_sample=False,
                pad_token_id=pad,
                eos_token_id=self.tokenizer.convert_tokens_to_ids("<|im_end|>"),
            )
        return [self.tokenizer.decode(row[width:], skip_special_tokens=True).strip() for row in out]


def _data_url(image: Image.Image) -> str:
    buffer = io.BytesIO()
    image.convert("RGB").save(buffer, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


class OpenAIChat:
    """An OpenAI-compatible chat-completions endpoint, ``concurrency`` requests at a time."""

    answers_text = True

    RETRY_STATUS = frozenset({408, 409, 429, 500, 502, 503, 504})

    def __init__(
        self,
        base_url: str,
        model: str,
        *,
        api_key: str | None = None,
        concurrency: int = 4,
        max_tokens: int = 160,
        timeout_s: float = 120.0,
        retries: int = 4,
        backoff_s: float = 0.5,
    ) -> None:
        import httpx

        if concurrency < 1:
            raise ValueError("concurrency must be at least 1")
        self.url = base_url.rstrip("/") + "/chat/completions"
        self.model = model
        self.concurrency = concurrency
        self.max_tokens = max_tokens
        self.retries, self.backoff_s = retries, backoff_s
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self._client = httpx.Client(
            timeout=timeout_s,
            headers=headers,
            limits=httpx.Limits(max_connections=concurrency),
        )
        self.id = f"openai:{model}"
        self._in_flight = 0
        self.max_in_flight = 0  # the most requests seen in flight at once
        self._lock = threading.Lock()

    def complete(self, requests: Sequence[ChatRequest]) -> list[str]:
        with ThreadPoolExecutor(max_workers=self.concurrency) as pool:
            return list(pool.map(self._one, requests))

    def _body(self, request: ChatRequest) -> dict:
        content: list[dict] = [{"type": "text", "text": request.text}]
        for image in request.images:
            content.append({"type": "image_url", "image_url": {"url": _data_url(image)}})
        return {
            "model": self.model,
            "messages": [{"role": "user", "content": content}],
            "max_tokens": self.max_tokens,
            "temperature": 0,
        }

    def _one(self, request: ChatRequest) -> str:
        import httpx

        body = self._body(request)
        for attempt in range(self.retries + 1):
            with self._lock:
                self._in_flight += 1
                self.max_in_flight = max(self.max_in_flight, self._in_flight)
            try:
                response = self._client.post(self.url, json=body)
            except httpx.TransportError as exc:
                reason = f"{type(exc).__name__}: {exc}"
            else:
                if response.status_code == 200:
                    return response.json()["choices"][0]["message"]["content"] or ""
                reason = f"HTTP {response.status_code}: {response.text[:300]}"
                if response.status_code not in self.RETRY_STATUS:
                    raise ChatError(f"{self.url} refused the request: {reason}")
            finally:
                with self._lock:
                    self._in_flight -= 1
            if attempt < self.retries:
                log.warning("chat request failed (%s); retry %d", reason, attempt + 1)
                time.sleep(self.backoff_s * 2**attempt)
        raise ChatError(f"{self.url} failed after {self.retries + 1} attempts: {reason}")

    def close(self) -> None:
        self._client.close()
