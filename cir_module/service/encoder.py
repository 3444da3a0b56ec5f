"""The serving front of a model: input classification, decoding, batching, caching.

The model is a :class:`CIRModel` (torch) or an :class:`OnnxCIRModel` (onnxruntime); both
offer ``embed_images`` / ``embed_texts`` / ``embed_composed``. Model calls run on one
dedicated worker thread (the runtimes parallelise inside an op; two concurrent forwards on two
cores only fight), fed by one :class:`MicroBatcher` per kind of input so that concurrent
requests share forwards. Image decoding runs on the default thread pool, off the event loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
from collections import OrderedDict
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

import anyio.to_thread
import numpy as np
from PIL import Image

from cir_module.errors import InputError, Overloaded
from cir_module.images import MAX_IMAGE_PIXELS, decode_base64_image
from cir_module.query import looks_composed, parse_composed_query
from cir_module.rerank.fusion import fuse_scores
from cir_module.service.batcher import MicroBatcher

if TYPE_CHECKING:
    from cir_module.enrich import ChatBackend, QueryEnhancer
    from cir_module.rerank import LVLMReranker, OnnxReranker

__all__ = ["EmbeddingCache", "EmbeddingModel", "InputLimits", "QueryEncoder"]

log = logging.getLogger(__name__)
T = TypeVar("T")


class EmbeddingCache:
    """A small LRU of embeddings keyed by a hash of the encoded input."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self._items: OrderedDict[str, np.ndarray] = OrderedDict()

    @staticmethod
    def key(data: str) -> str:
        return hashlib.sha256(data.encode("utf-8", "surrogatepass")).hexdigest()

    def get(self, key: str) -> np.ndarray | None:
        vector = self._items.get(key)
        if vector is not None:
            self._items.move_to_end(key)
        return vector

    def put(self, key: str, vector: np.ndarray) -> None:
        if self.capacity <= 0:
            return
        self._items[key] = vector
        self._items.move_to_end(key)
        while len(self._items) > self.capacity:
            self._items.popitem(last=False)

    def __len__(self) -> int:
        return len(self._items)


@dataclass(frozen=True)
class InputLimits:
    """Bounds on what one input may cost (see the settings of the same names)."""

    max_image_bytes: int | None = None
    max_image_pixels: int = MAX_IMAGE_PIXELS
    max_text_chars: int = 4096
    max_pending_items: int = 1024


class EmbeddingModel(Protocol):
    """What the service needs of a model (torch or onnxruntime)."""

    dim: Any

    def embed_images(self, images: Sequence[Image.Image]) -> np.ndarray: ...
    def embed_texts(self, texts: Sequence[str]) -> np.ndarray: ...
    def embed_composed(self, images: Sequence[Image.Image], texts: Sequence[str]) -> np.ndarray: ...
    def describe(self) -> dict[str, Any]: ...


class QueryEncoder:
    """Turns Weaviate's request payloads into vectors and scores with one model.

    With ``cross_request`` off, each request runs alone, in chunks of ``max_batch_size``: the
    design of Weaviate's reference inference containers, kept for comparison.
    """

    def __init__(
        self,
        model: EmbeddingModel,
        max_batch_size: int = 32,
        cache_size: int = 8192,
        *,
        cross_request: bool = True,
        max_wait_s: float = 0.002,
        reranker: LVLMReranker | OnnxReranker | None = None,
        fusion_lambda: float = 0.06,
        limits: InputLimits | None = None,
        on_batch: Callable[[str, int], None] | None = None,
        enhancer: QueryEnhancer | None = None,
        chat: ChatBackend | None = None,
    ) -> None:
        self.model = model
        self.max_batch_size = max_batch_size
        self.cross_request = cross_request
        self.cache = EmbeddingCache(cache_size)
        self.reranker = reranker
        self.fusion_lambda = fusion_lambda
        self.enhancer = enhancer
        self.chat = chat
        self.limits = limits or InputLimits()
        self.pending_items = 0
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="cir-model")
        self.batchers = {
            name: MicroBatcher(
                fn, self._on_model_thread, max_batch_size, max_wait_s, name, on_batch
            )
            for name, fn in (
                ("image", model.embed_images),
                ("text", model.embed_texts),
                ("composed", model.embed_composed),
            )
        }

    def close(self) -> None:
        for batcher in self.batchers.values():
            batcher.close()
        self._executor.shutdown(wait=False, cancel_futures=True)

    async def _on_model_thread(self, fn: Callable[..., T], *args: object) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._executor, fn, *args)

    async def _embed(self, kind: str, *columns: Sequence) -> np.ndarray:
        """Rows for ``columns`` from the ``kind`` embedding (image, text or composed)."""
        if not columns[0]:
            return np.zeros((0, self.model.dim), dtype=np.float32)
        batcher = self.batchers[kind]
        if self.cross_request:
            return await batcher.submit(*columns)
        return await batcher.run_alone(*columns)

    @contextlib.contextmanager
    def admitted(self, items: int) -> Iterator[None]:
        """Hold ``items`` of the service's capacity for the block, or raise
        :class:`Overloaded` when it is full: a bounded queue, not an unbounded one."""
        limit = self.limits.max_pending_items
        if items > limit:
            raise InputError(
                f"request holds {items} items; at most {limit} are accepted at once", 413
            )
        if self.pending_items + items > limit:
            raise Overloaded(f"the service is full ({self.pending_items} items in flight)")
        self.pending_items += items
        try:
            yield
        finally:
            self.pending_items -= items

    def _truncate(self, text: str) -> str:
        return text[: self.limits.max_text_chars]

    def _decode(self, data: str, what: str) -> Image.Image:
        return decode_base64_image(
            data,
            what,
            max_bytes=self.limits.max_image_bytes,
            max_pixels=self.limits.max_image_pixels,
        )

    def stats(self) -> dict[str, Any]:
        """Batching counters per kind, for ``/meta``."""
        return {
            name: {**b.stats.as_dict(), "queue_depth": b.queue_depth}
            for name, b in self.batchers.items()
        }

    # -- /vectorize ------------------------------------------------------------------------
    async def vectorize(
        self, texts: Sequence[str], images: Sequence[str]
    ) -> tuple[np.ndarray, np.ndarray]:
        """One vector per text (composed-query strings get the composed vector) and per image."""
        with self.admitted(len(texts) + len(images)):
            return await self._vectorize(texts, images)

    async def _vectorize(
        self, texts: Sequence[str], images: Sequence[str]
    ) -> tuple[np.ndarray, np.ndarray]:
        plain_idx, composed_idx, composed = [], [], []
        for i, text in enumerate(texts):
            if looks_composed(text):
                try:
                    composed.append(parse_composed_query(text))
                except InputError as exc:
                    raise InputError(f"texts[{i}]: {exc.message}") from None
                composed_idx.append(i)
            else:
                plain_idx.append(i)
        decoded = await anyio.to_thread.run_sync(
            self._decode_all,
            [q.image for q in composed] + list(images),
            [f"texts[{i}] (composed query image)" for i in composed_idx]
            + [f"images[{i}]" for i in range(len(images))],
        )
        ref_images, gallery_images = decoded[: len(composed)], decoded[len(composed) :]
        plain_texts = [self._truncate(texts[i]) for i in plain_idx]
        # Plain texts are left alone: stored captions arrive on the same path as text queries.
        mod_texts = await self._enhanced([self._truncate(q.text) for q in composed], ref_images)

        plain_vecs, composed_vecs, image_vecs = await asyncio.gather(
            self._embed("text", plain_texts),
            self._embed("composed", ref_images, mod_texts),
            self._embed("image", gallery_images),
        )
        text_vecs = np.zeros((len(texts), self.model.dim), dtype=np.float32)
        if plain_idx:
            text_vecs[plain_idx] = plain_vecs
        if composed_idx:
            text_vecs[composed_idx] = composed_vecs
        return text_vecs, image_vecs

    async def _enhanced(self, texts: list[str], images: Sequence[Image.Image]) -> list[str]:
        """Composed queries' texts as the query enhancer rewrites them (if one is set)."""
        if self.enhancer is None or not texts:
            return texts
        return await anyio.to_thread.run_sync(self.enhancer.enhance, texts, images)

    def _decode_all(self, data: Sequence[str], names: Sequence[str]) -> list[Image.Image]:
        return [self._decode(d, name) for d, name in zip(data, names, strict=True)]

    # -- /rerank ----------------------------------------------------------------------------
    async def rerank(self, query: str, documents: Sequence[str]) -> np.ndarray:
        """Per candidate image: the first-stage cosine with the query (composed or plain
        text), plus ``lambda`` x the LVLM reranker's P(YES) when one is configured and the
        query is composed (the reranker needs the reference image)."""
        with self.admitted(1 + len(documents)):
            return await self._rerank(query, documents)

    async def _rerank(self, query: str, documents: Sequence[str]) -> np.ndarray:
        reference = None
        if looks_composed(query):
            parsed = parse_composed_query(query)
            reference = await anyio.to_thread.run_sync(
                self._decode, parsed.image, "query (composed query image)"
            )
            text = await self._enhanced([self._truncate(parsed.text)], [reference])
            query_kind, query_columns = "composed", ([reference], text)
        else:
            query_kind, query_columns = "text", ([self._truncate(query)],)

        keys = [self.cache.key(d) for d in documents]
        # Take cached vectors now: a concurrent chunk may evict them before we are done.
        known = {i: v for i, k in enumerate(keys) if (v := self.cache.get(k)) is not None}
        # The reranker sees every candidate's pixels; without it only uncached ones decode.
        todo = [i for i in range(len(documents)) if i not in known]
        to_decode = range(len(documents)) if self.reranker and reference else todo
        decoded = await anyio.to_thread.run_sync(
            self._decode_all,
            [documents[i] for i in to_decode],
            [f"documents[{i}]" for i in to_decode],
        )
        images = dict(zip(to_decode, decoded, strict=True))

        query_vecs, new_vecs = await asyncio.gather(
            self._embed(query_kind, *query_columns),
            self._embed("image", [images[i] for i in todo]),
        )
        for i, vec in zip(todo, new_vecs, strict=True):
            self.cache.put(keys[i], vec)
            known[i] = vec
        match = np.stack([known[i] for i in range(len(documents))]) @ query_vecs[0]
        if self.reranker is None or reference is None:
            return match
        refine = await self._on_model_thread(
            self.reranker.score, reference, parsed.text, [images[i] for i in range(len(documents))]
        )
        return fuse_scores(match, refine, self.fusion_lambda)
