"""The FastAPI application: models loaded in ``lifespan``, one router per concern."""

from __future__ import annotations

import asyncio
import importlib
import logging
import os
import sys
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException

from cir_module.errors import ClientGone, InputError, Overloaded
from cir_module.lazy import missing_extra
from cir_module.rerank.fusion import DEFAULT_FUSION_LAMBDA
from cir_module.service import (
    routes_chat,
    routes_health,
    routes_metrics,
    routes_rerank,
    routes_vectorize,
)
from cir_module.service.admission import AdmissionLimits
from cir_module.service.body import bounded, describe_errors
from cir_module.service.encoder import EmbeddingModel, InputLimits, QueryEncoder
from cir_module.service.middleware import install_middleware
from cir_module.service.observability import ServiceMetrics
from cir_module.service.openapi import install_openapi
from cir_module.settings import ServiceSettings

__all__ = ["create_app"]

log = logging.getLogger("cir_module.service")


def _threads_per_worker(workers: int) -> int | None:
    """Intra-op threads for each of ``workers`` concurrent model threads: the cores shared out
    (None for one worker: onnxruntime's own default, one per core)."""
    return max(1, (os.cpu_count() or 1) // workers) if workers > 1 else None


def _load_model(settings: ServiceSettings) -> EmbeddingModel:
    if settings.onnx_export:
        from cir_module.models.onnx_model import load_onnx_model

        return load_onnx_model(
            settings.onnx_export,
            settings.onnx_variant,
            providers=settings.onnx_providers,
            trt_cache=settings.trt_cache_dir,
            threads=settings.onnx_threads or _threads_per_worker(settings.model_workers),
            trt_fp16=settings.trt_fp16,
            trt_opt_batch=settings.trt_opt_batch,
            max_batch=settings.max_batch_size,
        )
    try:
        import torch
    except ModuleNotFoundError as exc:
        raise missing_extra(exc, "serving a checkpoint without CIR_ONNX_EXPORT") from exc

    from cir_module.models import load_model

    if settings.torch_threads:
        torch.set_num_threads(settings.torch_threads)
    return load_model(settings.checkpoint).to(settings.device)


def _load_encoder(settings: ServiceSettings, metrics: ServiceMetrics) -> QueryEncoder:
    """The encoder with its model and rerankers."""
    start = time.perf_counter()
    model = _load_model(settings)
    facts = model.describe()
    log.info(
        "loaded %s from %s in %.1fs (runtime %s, %s scales, dim %d)",
        facts["name"],
        settings.onnx_export or settings.checkpoint,
        time.perf_counter() - start,
        facts.get("provider", f"torch on {settings.device}"),
        facts["scales"],
        model.dim,
    )
    reranker = _load_reranker(settings)
    text_reranker = _load_text_reranker(settings)
    metrics.model_info.labels(
        facts["name"],
        "onnxruntime" if settings.onnx_export else "torch",
        facts.get("provider", settings.device),
        reranker.describe()["family"] if reranker else "none",
    ).set(1)
    return QueryEncoder(
        model,
        settings.max_batch_size,
        settings.embedding_cache_size,
        cross_request=settings.cross_request_batching,
        max_wait_s=settings.batch_wait_ms / 1000,
        reranker=reranker,
        text_reranker=text_reranker,
        fusion_lambda=_fusion_lambda(settings, reranker),
        model_workers=settings.model_workers,
        limits=InputLimits(
            max_image_bytes=settings.max_image_bytes,
            max_image_pixels=settings.max_image_pixels,
            max_aspect_ratio=settings.max_aspect_ratio,
            max_request_pixels=settings.max_request_pixels,
            max_text_chars=settings.max_text_chars,
        ),
        admission=AdmissionLimits(
            max_items=settings.max_pending_items,
            max_pixels=settings.max_pending_pixels,
            timeout_s=settings.admission_timeout_s,
        ),
        single_flight=settings.rerank_single_flight,
        on_batch=metrics.observe_batch,
    )


def _load_chat(settings: ServiceSettings):
    """The local chat model (if any) and the query enhancer (if enabled)."""
    from cir_module.enrich import BackendEnhancer, KeywordDistiller, QueryEnhancer
    from cir_module.vlm.chat import OpenAIChat, load_chat_backend

    # The folder's recorded kind picks the backend (greedy generation unless registered).
    chat = load_chat_backend(settings.chat_model, settings.device) if settings.chat_model else None
    if settings.query_enhancement == "off":
        return chat, None
    distiller = getattr(chat, "query_distiller", None)
    if settings.query_enhancement == "chat" and chat is not None and not chat.answers_text:
        raise ValueError(
            f"CIR_CHAT_MODEL={settings.chat_model} answers in a form of its own and cannot "
            "distil queries from text: use CIR_QUERY_ENHANCEMENT=keywords or off"
        )
    if settings.query_enhancement == "keywords":
        rewriter = KeywordDistiller()
    elif settings.query_enhancement == "vlm":
        if distiller is None:
            raise ValueError(
                f"CIR_QUERY_ENHANCEMENT=vlm needs a CIR_CHAT_MODEL that distils queries "
                f"itself; {settings.chat_model} is a plain chat model"
            )
        rewriter = distiller()
    elif chat is not None:
        rewriter = BackendEnhancer(chat)
    else:
        key = settings.enhancer_api_key
        rewriter = BackendEnhancer(
            OpenAIChat(
                settings.enhancer_url,
                settings.enhancer_api_model,
                api_key=key.get_secret_value() if key else None,
            )
        )
    log.info("query enhancement: %s", rewriter.id)
    return chat, QueryEnhancer(rewriter, settings.enhancement_cache_size)


def _load_text_reranker(settings: ServiceSettings):
    """The cross-encoder for text documents in /rerank, if one is configured."""
    if not settings.text_reranker_model:
        return None
    from cir_module.rerank.text import CrossEncoderScorer

    scorer = CrossEncoderScorer(settings.text_reranker_model, device=settings.device)
    log.info("loaded text reranker %s", settings.text_reranker_model)
    return scorer


def _fusion_lambda(settings: ServiceSettings, reranker) -> float:
    """The setting, else the lambda the reranker's folder records, else PMTFR's 0.06."""
    if settings.reranker_lambda is not None:
        return settings.reranker_lambda
    served = getattr(reranker, "served_with", None) or {}
    return float(served.get("lambda", DEFAULT_FUSION_LAMBDA))


def _load_reranker(settings: ServiceSettings):
    folder = settings.reranker_folder()
    if not folder:
        return None
    from cir_module.rerank import load_reranker

    start = time.perf_counter()
    reranker = load_reranker(
        folder,
        raug=settings.reranker_raug,
        alpha=settings.reranker_alpha,
        layers=settings.reranker_layer_choice(),
        image_side=settings.reranker_image_side,
        batch_size=settings.reranker_batch_size,
        rationale=settings.reranker_rationale,
        device=settings.device,
        providers=settings.onnx_providers,
        threads=settings.onnx_threads or _threads_per_worker(settings.model_workers),
        trt_cache=settings.trt_cache_dir,
        trt_fp16=settings.trt_fp16,
        precision=settings.reranker_precision,
    )
    log.info(
        "loaded reranker %s in %.1fs: %s",
        folder,
        time.perf_counter() - start,
        reranker.describe(),
    )
    return reranker


def create_app(settings: ServiceSettings | None = None) -> FastAPI:
    """Build the service; ``settings`` defaults to the ``CIR_*`` environment."""
    settings = settings or ServiceSettings()
    metrics = ServiceMetrics()
    # Plugins register their reranker kinds and chat backends before any model is loaded.
    for name in settings.plugins:
        importlib.import_module(name)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        sys.setswitchinterval(settings.gil_switch_interval_ms / 1000)
        app.state.encoder = None
        start = time.perf_counter()
        # The chat model and the query enhancer are the app's, not the encoder's: the chat
        # route and the encoder's callers (vectorize, rerank) take them from app.state. Set
        # before the encoder, whose presence says the service is ready.
        app.state.chat, app.state.enhancer = await asyncio.to_thread(_load_chat, settings)
        app.state.encoder = await asyncio.to_thread(_load_encoder, settings, metrics)
        metrics.model_load_seconds.set(time.perf_counter() - start)
        try:
            yield
        finally:
            app.state.encoder.close()

    app = FastAPI(
        title="weaviate-cir",
        version="0.1.0",
        lifespan=lifespan,
        **({} if settings.api_docs else {"docs_url": None, "redoc_url": None, "openapi_url": None}),
    )
    app.state.settings = settings
    app.state.metrics = metrics
    app.state.encoder = None
    app.state.chat = None
    app.state.enhancer = None
    for module in (routes_health, routes_metrics, routes_vectorize, routes_rerank, routes_chat):
        app.include_router(module.router)
    install_middleware(app, settings, metrics)
    install_openapi(app)

    def error(message: str, status: int, **headers: str) -> JSONResponse:
        return JSONResponse({"error": bounded(message)}, status_code=status, headers=headers)

    @app.exception_handler(Overloaded)
    async def overloaded(_: Request, exc: Overloaded) -> JSONResponse:
        metrics.rejected.inc()
        return error(exc.message, 503, **{"Retry-After": str(exc.retry_after_s)})

    @app.exception_handler(InputError)
    async def input_error(_: Request, exc: InputError) -> JSONResponse:
        return error(exc.message, exc.status_code)

    @app.exception_handler(ClientGone)
    async def client_gone(request: Request, _: ClientGone) -> Response:
        # Nobody is there to read an answer; the status is what the metrics count.
        log.debug("client went away while sending %s %s", request.method, request.url.path)
        return Response(status_code=499)

    @app.exception_handler(RequestValidationError)
    async def validation_error(_: Request, exc: RequestValidationError) -> JSONResponse:
        return error(f"invalid request: {describe_errors(exc.errors())}", 422)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        message = exc.detail if isinstance(exc.detail, str) else str(exc.detail)
        if exc.status_code == 404:
            message = f"no route {request.method} {request.url.path}"
        # 405 carries Allow (the methods the path takes), as HTTP asks.
        return error(message, exc.status_code, **(exc.headers or {}))

    # Errors no handler takes are logged and answered by the middleware, once, while the
    # request id is set (Starlette's last-resort handler would log them twice, without it).

    return app
