"""The serving front of a model: input classification, decoding, batching, caching.

The model is a :class:`CIRModel` (torch) or an :class:`OnnxCIRModel` (onnxruntime); both
offer ``embed_images`` / ``embed_texts`` / ``embed_composed``. Model calls run on
``model_workers`` dedicated threads (``CIR_MODEL_WORKERS``, one by default: the runtimes
parallelise inside an op, and a lone request is fastest on every core), the reranker on one
thread of its own when there are more, fed by one :class:`MicroBatcher` per kind of input so
that concurrent requests share forwards. Image headers are read first, so that a request is admitted
(:class:`Admission`, in items and pixels) before any pixel is decoded. Small images (what
Weaviate sends, one per request) are read and decoded on the event loop, where that costs less
than a hop to a thread; larger ones on the default thread pool, off the loop.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
from collections import OrderedDict
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import partial
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

import anyio.to_thread
import numpy as np
from PIL import Image

from cir_module.errors import InputError
from cir_module.images import (
    MAX_IMAGE_PIXELS,
    ImageLimits,
    ProbedImage,
    decode_probed,
    image_signature,
    probe_base64_image,
    release_memory,
)
from cir_module.query import ComposedQuery, is_text, read_composed_query
from cir_module.rerank.fusion import DEFAULT_FUSION_LAMBDA, fuse_scores
from cir_module.service.admission import Admission, AdmissionLimits
from cir_module.service.batcher import MicroBatcher
from cir_module.service.singleflight import SingleFlight

if TYPE_CHECKING:
    from cir_module.enrich import QueryEnhancer
    from cir_module.rerank import LVLMReranker, OnnxReranker
    from cir_module.rerank.text import CrossEncoderScorer

__all__ = [
    "EMPTY_DOCUMENT_SCORE",
    "EmbeddingCache",
    "EmbeddingModel",
    "InputLimits",
    "QueryEncoder",
]

log = logging.getLogger(__name__)
T = TypeVar("T")

# The score of an empty rerank document (Weaviate sends "" for an object whose property is
# empty or missing), and of one that cannot be read (a corrupt image): below any score a
# model gives, so such objects sort last and the query's other objects are still ranked.
EMPTY_DOCUMENT_SCORE = -1.0e9
# After a request that decoded this many pixels, freed memory is handed back to the system.
_RELEASE_AFTER_PIXELS = 16_000_000
# Work this small is done on the event loop: a hop to a worker thread and back costs more
# than reading the headers of this much base64, or decoding this many pixels from this many
# bytes (about 0.3 ms for a 256 x 256 PNG), and Weaviate sends one image per request.
_INLINE_BYTES = 256 * 1024
_INLINE_PIXELS = 256 * 256


def _sha(data: str) -> str:
    return hashlib.sha256(data.encode("utf-8", "surrogatepass")).hexdigest()


class EmbeddingCache:
    """A small LRU of embeddings keyed by a hash of the encoded input."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self._items: OrderedDict[str, np.ndarray] = OrderedDict()

    @staticmethod
    def key(data: str) -> str:
        return _sha(data)

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
    """Bounds on what one input and one request may cost (see the settings of the same
    names)."""

    max_image_bytes: int | None = None
    max_image_pixels: int = MAX_IMAGE_PIXELS
    max_aspect_ratio: float = 20.0
    max_request_pixels: int = 128_000_000
    max_text_chars: int = 4096

    @property
    def image(self) -> ImageLimits:
        return ImageLimits(self.max_image_bytes, self.max_image_pixels, self.max_aspect_ratio)


class EmbeddingModel(Protocol):
    """What the service needs of a model (torch or onnxruntime)."""

    dim: Any

    def embed_images(self, images: Sequence[Image.Image]) -> np.ndarray: ...
    def embed_texts(self, texts: Sequence[str]) -> np.ndarray: ...
    def embed_composed(self, images: Sequence[Image.Image], texts: Sequence[str]) -> np.ndarray: ...
    def describe(self) -> dict[str, Any]: ...


@dataclass(frozen=True)
class QuerySide:
    """What every chunk of one rerank query shares: the reference image (composed queries),
    the query's text (the modification, or the plain query) and its first-stage vector."""

    text: str
    vector: np.ndarray
    reference: Image.Image | None = None
    caption: str | None = None  # the reference's stored caption, sent in the query


@dataclass
class _RerankJob:
    """One /rerank request as it goes through: documents classified (image / text / empty,
    and unreadable once an image fails to probe or decode), image keys, cached vectors, the
    images to decode, their probed headers and why those that failed did."""

    query: str
    composed: ComposedQuery | None
    documents: Sequence[str]
    kinds: list[str] = field(init=False)
    key: str = field(init=False)
    keys: dict[int, str] = field(default_factory=dict)
    known: dict[int, np.ndarray] = field(default_factory=dict)
    to_decode: list[int] = field(default_factory=list)
    probes: list[ProbedImage] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.kinds = [
            "empty" if not d.strip() else "image" if image_signature(d) else "text"
            for d in self.documents
        ]
        self.key = _sha(self.query)  # the query side is shared under this key

    @property
    def image_idx(self) -> list[int]:
        return [i for i, k in enumerate(self.kinds) if k == "image"]

    def keep_probed(self, probes: Sequence[ProbedImage | None]) -> None:
        """Keep the documents of ``to_decode`` whose header was read; the others are
        unreadable."""
        to_decode, self.probes = [], []
        for i, probe in zip(self.to_decode, probes, strict=True):
            if probe is None:
                self.kinds[i] = "unreadable"
            else:
                to_decode.append(i)
                self.probes.append(probe)
        self.to_decode = to_decode

    def keep_decoded(self, images: Sequence[Image.Image | None]) -> dict[int, Image.Image]:
        """The decoded images by document index; those that failed are unreadable."""
        decoded = {}
        for i, img in zip(self.to_decode, images, strict=True):
            if img is None:
                self.kinds[i] = "unreadable"
            else:
                decoded[i] = img
        return decoded


@dataclass
class RerankStats:
    """Rerank requests in flight now and at most, for ``/meta`` and the fan-out test."""

    in_flight: int = 0
    peak_in_flight: int = 0
    requests: int = 0
    documents: dict[str, int] = field(
        default_factory=lambda: {"image": 0, "text": 0, "empty": 0, "unreadable": 0}
    )


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
        text_reranker: CrossEncoderScorer | None = None,
        fusion_lambda: float = DEFAULT_FUSION_LAMBDA,
        limits: InputLimits | None = None,
        admission: AdmissionLimits | None = None,
        single_flight: bool = True,
        on_batch: Callable[[str, int], None] | None = None,
        model_workers: int = 1,
    ) -> None:
        self.model = model
        self.max_batch_size = max_batch_size
        self.cross_request = cross_request
        self.cache = EmbeddingCache(cache_size)
        self.reranker = reranker
        self.text_reranker = text_reranker
        self.fusion_lambda = fusion_lambda
        self.limits = limits or InputLimits()
        self.admission = Admission(admission or AdmissionLimits())
        # The query side of /rerank, shared by the concurrent chunks of one query.
        self.flights = SingleFlight(capacity=64 if single_flight else 0)
        self.rerank_stats = RerankStats()
        # Images may be reduced at decode down to the largest side a model looks at.
        sides = [int(model.describe().get("image_size") or 0)]
        if reranker is not None:
            sides.append(int(getattr(reranker, "image_side", 0) or 0))
        self.decode_side = max(sides) or None
        # Embedding batches run on ``model_workers`` threads, as many at once. The reranker
        # keeps to one thread: its model holds per-query state (prefix caches, injection
        # hooks). With one worker it shares that thread, so the two never compete for cores.
        self._executor = ThreadPoolExecutor(model_workers, thread_name_prefix="cir-model")
        self._rerank_executor = (
            self._executor
            if model_workers == 1
            else ThreadPoolExecutor(1, thread_name_prefix="cir-rerank")
        )
        self.batchers = {
            name: MicroBatcher(
                fn,
                self._on_model_thread,
                max_batch_size,
                max_wait_s,
                name,
                on_batch,
                concurrency=model_workers,
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
        self._rerank_executor.shutdown(wait=False, cancel_futures=True)

    @property
    def pending_items(self) -> int:
        """Items admitted and not yet answered."""
        return self.admission.items

    async def _on_model_thread(self, fn: Callable[..., T], *args: object) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._executor, fn, *args)

    async def _on_rerank_thread(self, fn: Callable[..., T], *args: object) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._rerank_executor, fn, *args)

    async def _embed(self, kind: str, *columns: Sequence) -> np.ndarray:
        """Rows for ``columns`` from the ``kind`` embedding (image, text or composed)."""
        if not columns[0]:
            return np.zeros((0, self.model.dim), dtype=np.float32)
        batcher = self.batchers[kind]
        if self.cross_request:
            return await batcher.submit(*columns)
        return await batcher.run_alone(*columns)

    def _truncate(self, text: str) -> str:
        """``text`` as the tokenizer gets it: cut to the limit, and checked, whatever JSON
        layer it came from (the body's own strings are checked as they are parsed)."""
        text = text[: self.limits.max_text_chars]
        if not is_text(text):
            raise InputError("a text holds a lone UTF-16 surrogate (not a character)")
        return text

    def stats(self) -> dict[str, Any]:
        """Batching counters per kind, for ``/meta``."""
        return {
            name: {**b.stats.as_dict(), "queue_depth": b.queue_depth}
            for name, b in self.batchers.items()
        }

    def admission_stats(self) -> dict[str, Any]:
        """What is admitted and waiting now, and the rerank fan-out seen, for ``/meta``."""
        a = self.admission
        return {
            "items": a.items,
            "pixels": a.pixels,
            "waiting": len(a.waiting),
            "timed_out": a.timed_out,
            "rerank": {
                "in_flight": self.rerank_stats.in_flight,
                "peak_in_flight": self.rerank_stats.peak_in_flight,
                "requests": self.rerank_stats.requests,
                "documents": dict(self.rerank_stats.documents),
                "query_side": self.flights.stats.as_dict(),
            },
        }

    # -- images ----------------------------------------------------------------------------
    @staticmethod
    def _each(
        step: Callable[[Any], T],
        inputs: Sequence[Any],
        fallible: Sequence[bool],
        failures: list[str] | None,
    ) -> list[T | None]:
        """``step`` of each input; a failure raises, except where ``fallible`` (a legacy
        composed query, which then counts as a plain text; a rerank document, which then
        ranks last): None there, and its message added to ``failures``."""
        out: list[T | None] = []
        for item, may_fail in zip(inputs, fallible, strict=True):
            try:
                out.append(step(item))
            except InputError as exc:
                if not may_fail:
                    raise
                if failures is not None:
                    failures.append(exc.message)
                out.append(None)
        return out

    def _probe_all(self, data, names, fallible, failures=None) -> list[ProbedImage | None]:
        """Headers read and checked (:meth:`_each`)."""
        limits = self.limits.image
        pairs = list(zip(data, names, strict=True))
        return self._each(lambda p: probe_base64_image(*p, limits), pairs, fallible, failures)

    def _decode_all(self, probes, fallible, failures=None) -> list[Image.Image | None]:
        """Probed images decoded, reduced for the largest side a model reads (:meth:`_each`)."""
        return self._each(lambda p: decode_probed(p, self.decode_side), probes, fallible, failures)

    async def _probe(
        self,
        data: Sequence[str],
        names: Sequence[str],
        fallible: Sequence[bool],
        failures: list[str] | None = None,
    ) -> list[ProbedImage | None]:
        """:meth:`_probe_all`, on the event loop when the base64 is small, else off it."""
        if sum(len(d) for d in data) <= _INLINE_BYTES:
            return self._probe_all(data, names, fallible, failures)
        return await anyio.to_thread.run_sync(self._probe_all, data, names, fallible, failures)

    async def _decode(
        self,
        probes: Sequence[ProbedImage],
        fallible: Sequence[bool],
        failures: list[str] | None = None,
    ) -> list[Image.Image | None]:
        """:meth:`_decode_all`, on the event loop when pixels and bytes are few, else off it."""
        few_bytes = sum(len(p.raw) for p in probes) <= _INLINE_BYTES
        if few_bytes and sum(p.pixels for p in probes) <= _INLINE_PIXELS:
            return self._decode_all(probes, fallible, failures)
        return await anyio.to_thread.run_sync(self._decode_all, probes, fallible, failures)

    def _check_request_pixels(self, probes: Sequence[ProbedImage | None]) -> int:
        pixels = sum(p.pixels for p in probes if p is not None)
        if pixels > self.limits.max_request_pixels:
            raise InputError(
                f"request decodes {pixels} pixels in all, more than the limit of "
                f"{self.limits.max_request_pixels}",
                413,
            )
        return pixels

    def _read_query(self, text: str, what: str) -> ComposedQuery | None:
        try:
            return read_composed_query(text)
        except InputError as exc:
            raise InputError(f"{what}: {exc.message}") from None

    @staticmethod
    async def _enhanced(
        enhancer: QueryEnhancer | None, texts: list[str], images: Sequence[Image.Image]
    ) -> list[str]:
        """Composed queries' texts as the query enhancer rewrites them (if one is given)."""
        if enhancer is None or not texts:
            return texts
        return await anyio.to_thread.run_sync(enhancer.enhance, texts, images)

    # -- /vectorize ------------------------------------------------------------------------
    async def vectorize(
        self,
        texts: Sequence[str],
        images: Sequence[str],
        *,
        enhancer: QueryEnhancer | None = None,
    ) -> tuple[np.ndarray, np.ndarray]:
        """One vector per text (composed-query strings get the composed vector) and per image;
        ``enhancer`` (the app's) rewrites composed queries' texts first."""
        queries = [self._read_query(t, f"texts[{i}]") for i, t in enumerate(texts)]
        composed_idx = [i for i, q in enumerate(queries) if q is not None]
        data = [queries[i].image for i in composed_idx] + list(images)
        names = [f"texts[{i}] (composed query image)" for i in composed_idx] + [
            f"images[{i}]" for i in range(len(images))
        ]
        fallible = [not queries[i].marked for i in composed_idx] + [False] * len(images)
        probes = await self._probe(data, names, fallible)
        pixels = self._check_request_pixels(probes)
        async with self.admission.hold(len(texts) + len(images), pixels):
            try:
                return await self._vectorize(
                    texts, queries, composed_idx, probes, fallible, enhancer
                )
            finally:
                if pixels > _RELEASE_AFTER_PIXELS:
                    release_memory()

    async def _vectorize(self, texts, queries, composed_idx, probes, fallible, enhancer):
        decoded = await self._decode(
            [p for p in probes if p is not None],
            [f for p, f in zip(probes, fallible, strict=True) if p is not None],
        )
        images_iter = iter(decoded)
        decoded_all = [next(images_iter) if p is not None else None for p in probes]
        n_refs = len(composed_idx)
        refs, gallery_images = decoded_all[:n_refs], decoded_all[n_refs:]
        # A legacy composed query whose image does not decode is a plain text after all.
        composed = [(i, img) for i, img in zip(composed_idx, refs, strict=True) if img is not None]
        composed_set = {i for i, _ in composed}
        plain_idx = [i for i in range(len(texts)) if i not in composed_set]
        ref_images = [img for _, img in composed]
        # Plain texts are left alone: stored captions arrive on the same path as text queries.
        mod_texts = await self._enhanced(
            enhancer, [self._truncate(queries[i].text) for i, _ in composed], ref_images
        )
        plain_vecs, composed_vecs, image_vecs = await asyncio.gather(
            self._text_vectors([texts[i] for i in plain_idx]),
            self._embed("composed", ref_images, mod_texts),
            self._embed("image", gallery_images),
        )
        text_vecs = np.zeros((len(texts), self.model.dim), dtype=np.float32)
        if plain_idx:
            text_vecs[plain_idx] = plain_vecs
        if composed:
            text_vecs[[i for i, _ in composed]] = composed_vecs
            # Weaviate sends the same query to /rerank after nearText: keep its vector.
            for (i, _), vector in zip(composed, composed_vecs, strict=True):
                self.cache.put(self._query_key(texts[i]), vector)
        return text_vecs, image_vecs

    def _query_key(self, query: str) -> str:
        return self.cache.key("query:" + query)

    # -- /rerank ----------------------------------------------------------------------------
    async def rerank(
        self, query: str, documents: Sequence[str], *, enhancer: QueryEnhancer | None = None
    ) -> np.ndarray:
        """One score per document, in order. Image documents: the first-stage cosine with
        the query (composed or plain text; ``enhancer``, the app's, rewrites a composed
        query's text first), plus ``lambda`` x the LVLM reranker's P(YES) when one is
        configured and the query is composed. Text documents: the cross-encoder's
        score of the query's text (a composed query's modification) against the document,
        or the text tower's cosine without one. Empty documents: :data:`EMPTY_DOCUMENT_SCORE`.
        """
        job = _RerankJob(query, self._read_query(query, "query"), documents)
        job.keys = {i: self.cache.key(documents[i]) for i in job.image_idx}
        # Take cached vectors now: a concurrent chunk may evict them before we are done.
        job.known = {i: v for i, k in job.keys.items() if (v := self.cache.get(k)) is not None}
        # The reranker sees every candidate's pixels; without it only uncached ones decode.
        lvlm = self.reranker is not None and job.composed is not None
        job.to_decode = [i for i in job.image_idx if lvlm or i not in job.known]
        # A document that cannot be read ranks last; the query's others are still ranked
        # (a 4xx would fail the user's whole query in Weaviate).
        job.keep_probed(
            await self._probe(
                [documents[i] for i in job.to_decode],
                [f"documents[{i}]" for i in job.to_decode],
                [True] * len(job.to_decode),
                job.failures,
            )
        )
        pixels = self._check_request_pixels(job.probes)
        stats = self.rerank_stats
        async with self.admission.hold(1 + len(documents), pixels):
            stats.requests += 1
            stats.in_flight += 1
            stats.peak_in_flight = max(stats.peak_in_flight, stats.in_flight)
            try:
                return await self._rerank(job, enhancer)
            finally:
                stats.in_flight -= 1
                for kind in job.kinds:
                    stats.documents[kind] += 1
                if job.failures:
                    log.warning(
                        "%d of %d rerank documents could not be read and rank last; first: %s",
                        len(job.failures),
                        len(documents),
                        job.failures[0],
                    )
                if pixels > _RELEASE_AFTER_PIXELS:
                    release_memory()

    async def _rerank(self, job: _RerankJob, enhancer: QueryEnhancer | None) -> np.ndarray:
        side = await self.flights.get(
            f"query:{job.key}", lambda: self._query_side(job.query, job.composed, enhancer)
        )
        scores = np.full(len(job.documents), EMPTY_DOCUMENT_SCORE, dtype=np.float32)
        text_idx = [i for i, k in enumerate(job.kinds) if k == "text"]
        (image_idx, image_scores), text_scores = await asyncio.gather(
            self._score_images(job, side),
            self._score_texts(job.key, side, [job.documents[i] for i in text_idx]),
        )
        scores[image_idx] = image_scores
        scores[text_idx] = text_scores
        return scores

    async def _query_side(
        self, query: str, composed: ComposedQuery | None, enhancer: QueryEnhancer | None
    ) -> QuerySide:
        """The reference image decoded, the text enhanced and the first-stage query vector
        (composed, or the text tower's for a plain query)."""
        reference = None
        if composed is not None:
            (probe,) = await self._probe(
                [composed.image], ["query (composed query image)"], [not composed.marked]
            )
            if probe is not None:
                (reference,) = await self._decode([probe], [not composed.marked])
        if reference is None:  # a plain text (or a legacy query whose image did not decode)
            text = self._truncate(query)
            return QuerySide(text, (await self._embed("text", [text]))[0])
        modification = self._truncate(composed.text)
        vector = self.cache.get(self._query_key(query))  # computed by nearText's /vectorize
        if vector is None:
            enhanced = await self._enhanced(enhancer, [modification], [reference])
            vector = (await self._embed("composed", [reference], enhanced))[0]
        return QuerySide(modification, vector, reference, composed.caption)

    @property
    def reads_captions(self) -> bool:
        """Whether the reranker judges captions (the change verifier): text documents are
        then the candidates' stored captions, verified as their images' would be."""
        return bool(getattr(self.reranker, "reads_captions", False))

    async def _prefix(self, key: str, side: QuerySide):
        """The reranker's per-query state, once per query however many chunks ask (single-
        flight): from the reference's stored caption when the query carries it (nothing is
        captioned), else from the reference image."""
        if side.caption is not None and self.reads_captions:
            compute = partial(self.reranker.prefix_from_caption, side.caption, side.text)
        else:
            compute = partial(self.reranker.prefix, side.reference, side.text)
        return await self.flights.get(f"prefix:{key}", lambda: self._on_rerank_thread(compute))

    async def _score_images(self, job: _RerankJob, side: QuerySide) -> tuple[list[int], np.ndarray]:
        """The image documents that could be read, and their scores."""
        decoded = await self._decode(job.probes, [True] * len(job.probes), job.failures)
        images = job.keep_decoded(decoded)
        if not job.image_idx:
            return [], np.zeros(0, dtype=np.float32)
        if self.reads_captions and side.reference is not None:
            # One ranking whichever property Weaviate sends: an image is scored as its stored
            # caption would be (the verifier captions it anyway, cached by its pixels).
            captions = await self._on_rerank_thread(
                self.reranker.captions, [images[i] for i in job.image_idx]
            )
            return job.image_idx, await self._score_captions(job.key, side, captions)
        keys = {i: job.keys[i] for i in job.image_idx}
        vectors = await self._cached("image", keys, images.__getitem__, job.known)
        match = np.stack([vectors[i] for i in job.image_idx]) @ side.vector
        if self.reranker is None or side.reference is None:
            return job.image_idx, match
        prefix = await self._prefix(job.key, side)
        refine = await self._on_rerank_thread(
            self.reranker.score_prefixed, prefix, [images[i] for i in job.image_idx]
        )
        return job.image_idx, fuse_scores(match, refine, self.fusion_lambda)

    async def _cached(
        self,
        kind: str,
        keys: dict[int, str],
        item: Callable[[int], Any],
        known: dict[int, np.ndarray],
    ) -> dict[int, np.ndarray]:
        """Vectors by index: the ``known`` ones (taken from the cache), and the others of
        ``keys`` embedded from ``item(i)`` and put into the cache under their key."""
        todo = [i for i in keys if i not in known]
        fresh = await self._embed(kind, [item(i) for i in todo])
        vectors = dict(known)
        for i, vector in zip(todo, fresh, strict=True):
            self.cache.put(keys[i], vector)
            vectors[i] = vector
        return vectors

    async def _score_texts(self, key: str, side: QuerySide, texts: list[str]) -> np.ndarray:
        if not texts:
            return np.zeros(0, dtype=np.float32)
        if side.reference is not None and self.reads_captions:
            return await self._score_captions(key, side, texts)
        if self.text_reranker is not None:
            texts = [self._truncate(t) for t in texts]
            return await self._on_rerank_thread(self.text_reranker.score, side.text, texts)
        if side.reference is None:
            query_vec = side.vector  # a plain query: its vector is the text tower's already
        else:
            query_vec = await self.flights.get(f"text:{key}", self._text_vector(side.text))
        return await self._text_vectors(texts) @ query_vec

    async def _score_captions(self, key: str, side: QuerySide, captions: list[str]) -> np.ndarray:
        """Stored captions of the candidates (``rerank(property: "caption")``): the verifier
        judges the changes from the reference's caption to each, fused with the cosine of
        the composed query with the caption's text embedding (Weaviate sends no image, and
        the first stage's text tower maps a description next to the image it describes).
        Caption vectors are cached by content (:meth:`_text_vectors`): a caption Weaviate sent
        to /vectorize when its object was written is not embedded again."""
        match = await self._text_vectors(captions) @ side.vector
        prefix = await self._prefix(key, side)
        refine = await self._on_rerank_thread(self.reranker.score_captions, prefix, captions)
        return fuse_scores(match, refine, self.fusion_lambda)

    async def _text_vectors(self, texts: Sequence[str]) -> np.ndarray:
        """The text tower's vectors of ``texts`` (truncated), cached by content. A collection
        whose vector recipe names its caption property (RAR's weight, or weight 0: the vector
        stays the image's) makes Weaviate send each caption to /vectorize when the enrichment
        job writes it, so /rerank on that property finds its first-stage term here instead
        of running the text tower on the query's path."""
        if not texts:
            return np.zeros((0, self.model.dim), dtype=np.float32)
        # Keyed by the text as the tokenizer gets it: a huge body costs no copy of itself.
        texts = [self._truncate(t) for t in texts]
        keys = {i: self.cache.key("text:" + t) for i, t in enumerate(texts)}
        known = {i: v for i, k in keys.items() if (v := self.cache.get(k)) is not None}
        vectors = await self._cached("text", keys, texts.__getitem__, known)
        return np.stack([vectors[i] for i in range(len(texts))])

    def _text_vector(self, text: str):
        async def compute() -> np.ndarray:
            return (await self._embed("text", [text]))[0]

        return compute
