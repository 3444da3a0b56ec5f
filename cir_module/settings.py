"""Service settings: one pydantic-settings object, read from ``CIR_*`` environment variables."""

from __future__ import annotations

import ipaddress
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from cir_module.checkpoints import shipped_checkpoint, shipped_reranker_for

if TYPE_CHECKING:
    from cir_module.images import ImageLimits

__all__ = ["ServiceSettings"]


class ServiceSettings(BaseSettings):
    """Everything the inference service can be told. Tests build one directly."""

    model_config = SettingsConfigDict(env_prefix="CIR_", extra="ignore")

    checkpoint: str = Field(
        default_factory=lambda: str(shipped_checkpoint()),
        description="Model to serve: a checkpoint folder written by `cir` (or a plain CLIP / "
        "SigLIP checkpoint: hub id or folder). Default: the shipped shapes-minilm-conv model.",
    )
    device: str = Field(
        "cpu",
        description="torch device of every torch model the service loads (the first stage, the "
        "reranker, the chat model), e.g. cpu or cuda.",
    )
    host: str = Field("127.0.0.1", description="Address `cir serve` binds.")
    port: int = Field(8080, ge=1, le=65535, description="Port `cir serve` binds.")
    torch_threads: int | None = Field(None, ge=1, description="torch intra-op threads.")
    onnx_threads: int | None = Field(
        None,
        ge=1,
        description="onnxruntime intra-op threads per model worker. Default: the cores shared "
        "out among model_workers (onnxruntime's own default, one per core, for one worker). A "
        "change verifier's greedy caption steps (one token per row) always run on one.",
    )
    model_workers: int = Field(
        1,
        ge=1,
        le=64,
        description="Embedding batches that run at once, each on a model thread of its own; "
        "waiting requests are shared out among the free ones. On a small model, one "
        "single-thread forward per core uses the CPU better than one forward on every core; "
        "one worker keeps a single request's latency lowest.",
    )
    gil_switch_interval_ms: float = Field(
        0.2,
        gt=0,
        le=100,
        description="Python's thread switch interval (sys.setswitchinterval). Python's 5 ms "
        "keeps the model thread waiting for the HTTP loop after every forward; a short "
        "interval lets them overlap.",
    )
    http_parser: Literal["h11", "httptools"] = Field(
        "h11",
        description="`cir serve`'s HTTP/1.1 parser: h11 (pure Python) or httptools (llhttp, in "
        "C; the `http` extra). Both close connections whose headers are late "
        "(header_timeout_s); on the shipped model neither serves more images per second.",
    )
    event_loop: Literal["asyncio", "uvloop"] = Field(
        "asyncio",
        description="`cir serve`'s event loop: Python's asyncio or uvloop (libuv; the `http` "
        "extra).",
    )
    onnx_export: str | None = Field(
        None,
        description="Folder written by `cir export`: when set, the model runs on onnxruntime "
        "from this export instead of torch from `checkpoint`.",
    )
    onnx_variant: Literal["fp32", "fp16", "int8"] = Field(
        "fp32", description="Which exported variant to run (fp16 for GPU, int8 for CPU)."
    )
    onnx_providers: list[str] | None = Field(
        None,
        description="onnxruntime execution providers to try, best first (JSON list). Default: "
        "TensorRT, CUDA, CPU, among those installed.",
    )
    trt_cache_dir: str = Field(
        str(Path.home() / ".cache" / "weaviate-cir" / "trt"),
        description="TensorRT's engine and timing cache: engines built once, reused after a "
        "restart.",
    )
    trt_fp16: bool = Field(
        True,
        description="TensorRT builds fp16 engines (inputs and outputs stay fp32). Off: fp32 "
        "engines.",
    )
    trt_opt_batch: int = Field(
        8,
        ge=1,
        description="The batch size TensorRT tunes each engine for; every engine serves 1 to "
        "`CIR_MAX_BATCH_SIZE` items and texts up to the export's length (one optimisation "
        "profile per graph).",
    )
    max_batch_size: int = Field(32, ge=1, description="Most items in one model forward.")
    cross_request_batching: bool = Field(
        True,
        description="Merge concurrent requests' items into shared forwards. Off: each request "
        "runs alone (the reference containers' design).",
    )
    batch_wait_ms: float = Field(
        0.0,
        ge=0,
        le=1000,
        description="How long an idle model waits for more requests to join a batch. At 0 it "
        "runs at once; what arrives while it is busy still forms the next batch.",
    )
    embedding_cache_size: int = Field(
        8192,
        ge=0,
        description="Embeddings kept by content hash: candidate images for /rerank, and texts "
        "(a stored caption vectorised with its object is not embedded again when /rerank reads "
        "it). Size it to the gallery (images plus captions) for the second stage's speed.",
    )
    reranker_model: str | None = Field(
        None,
        description="Image-text-to-text checkpoint (hub id or folder, Qwen2-VL family), or a "
        "`cir rerank export` folder (served by onnxruntime), that rescores /rerank candidates "
        "by P(YES). Unset: the shipped change verifier when the shipped hard-tier first stage "
        "(shapes-hard-conv) is served, else none; `none`: no reranker (/rerank returns the "
        "first-stage cosine).",
    )
    reranker_runtime: Literal["auto", "torch", "onnx"] = Field(
        "auto",
        description="How `cir serve` runs a change verifier given as a checkpoint folder. "
        "onnx: on onnxruntime, through its export, made once (parity-checked) into "
        "`export_cache_dir` and reused; torch: on torch. auto: onnx on the CPU when the export "
        "extra and onnxruntime are installed and the export meets parity, else torch. An ONNX "
        "export folder always runs on "
        "onnxruntime; the P(YES) image judge always on what its folder is.",
    )
    reranker_precision: Literal["fp32", "int8"] | None = Field(
        None,
        description="Precision of a change verifier's verify rows on onnxruntime: fp32 (torch's "
        "P(YES) within 1e-4) or int8 (dynamic int8 matrix products: about 1.6x faster on a "
        "VNNI CPU, P(YES) within a few hundredths). Default: the precision the folder's lambda "
        "was calibrated with (`served_with`), else fp32. Captions are always fp32.",
    )
    export_cache_dir: str = Field(
        str(Path.home() / ".cache" / "weaviate-cir" / "exports"),
        description="Where `cir serve` keeps the exports it makes (reranker_runtime), one "
        "folder per checkpoint's contents.",
    )
    reranker_raug: str | None = Field(
        None, description="RAug-Rep vectors from `cir raug extract` to inject (safetensors)."
    )
    reranker_alpha: float = Field(0.6, description="Injection strength alpha (paper: 0.6).")
    reranker_lambda: float | None = Field(
        None,
        description="Fusion weight: score = cosine + lambda * P(YES). Default: the lambda the "
        "reranker's folder records (`served_with`, written by `cir vlm train --recipe`), else "
        "0.06 (PMTFR's).",
    )
    reranker_layers: str = Field(
        "all",
        description="Layers that receive the injection: all, first, middle, last, or a "
        "comma-separated list of indices.",
    )
    reranker_image_side: int | None = Field(
        None,
        ge=28,
        description="Side images are resized to for the reranker (multiple of 28). Default: "
        "the model folder's cir_reranker.json, else 224.",
    )
    reranker_batch_size: int = Field(16, ge=1, description="Candidates per reranker forward.")
    reranker_rationale: bool = Field(
        False,
        description="The reranker first writes its own reasoning path for each query (what "
        "the reference shows, what the text asks, what the target must show; CIR-CoT) and "
        "scores every candidate with it in the prompt. Needs a checkpoint folder, not an ONNX "
        "export, and a model trained to write one (the judge stage, research: "
        "`python -m research.cli vlm-train --stage judge`).",
    )
    text_reranker_model: str | None = Field(
        None,
        description="sentence-transformers CrossEncoder (hub id or folder) that scores text "
        "documents in /rerank against the query's text; unset: the text tower's cosine.",
    )
    rerank_single_flight: bool = Field(
        True,
        description="Compute a rerank query's side (composed embedding, LVLM prefix) once for "
        "all concurrent chunks of the same query.",
    )
    # -- RAR query enhancement and chat --------------------------------------------------------
    query_enhancement: Literal["off", "keywords", "chat", "vlm"] = Field(
        "off",
        description="Rewrite composed queries before encoding: a modification becomes "
        "constraint keywords, a question about the image has its references resolved. "
        "keywords: rules, no model; chat: `chat_model` or `enhancer_url`, from the text alone; "
        "vlm: a `chat_model` that distils queries itself, reading the reference (a plugin's "
        "kind: research's describe-and-verify).",
    )
    chat_model: str | None = Field(
        None,
        description="Image-text-to-text checkpoint (Qwen2-VL family) served at "
        "/v1/chat/completions (OpenAI-compatible) and used by query_enhancement=chat. A "
        "folder whose recorded kind a plugin registers a chat backend for is served by it.",
    )
    plugins: list[str] = Field(
        default_factory=list,
        description="Modules (JSON list) imported before any model loads, so that they "
        "register reranker kinds and chat backends of their own (e.g. `research.describe`).",
    )
    enhancer_url: str | None = Field(
        None,
        description="OpenAI-compatible base URL (…/v1) for query_enhancement=chat instead "
        "of a local chat_model.",
    )
    enhancer_api_model: str | None = Field(None, description="Model name sent to enhancer_url.")
    enhancer_api_key: SecretStr | None = Field(None, description="Bearer token for enhancer_url.")
    enhancement_cache_size: int = Field(
        4096, ge=0, description="Enhanced queries kept (LRU; modifications by text alone)."
    )
    log_level: str = Field("info", description="Python log level name.")
    log_format: Literal["json", "text"] = Field(
        "json", description="`cir serve` log lines: JSON objects (with request ids) or text."
    )
    # -- boundaries ------------------------------------------------------------------------
    max_request_bytes: int = Field(
        128 * 2**20, ge=1024, description="Largest request body accepted (413 above)."
    )
    max_json_values: int = Field(
        100_000,
        ge=16,
        description="Most JSON values (array items, object members) a request body may hold; "
        "counted before it is parsed (413 above), so that no body costs more memory than "
        "about twice its size.",
    )
    max_image_bytes: int = Field(
        32 * 2**20, ge=1, description="Largest decoded image file accepted (413 above)."
    )
    max_image_pixels: int = Field(
        64_000_000, ge=1, description="Most pixels an image may declare (decompression bombs)."
    )
    max_aspect_ratio: float = Field(
        20.0, ge=1, description="Largest ratio of an image's long side to its short side."
    )
    max_request_pixels: int = Field(
        128_000_000, ge=1, description="Most image pixels one request may decode in all."
    )
    max_text_chars: int = Field(
        4096,
        ge=1,
        description="Texts are truncated to this many characters before encoding "
        "(the tokenizer then keeps the model's maximum number of tokens).",
    )
    max_pending_items: int = Field(
        1024,
        ge=1,
        description="Items (images, texts) admitted at once; beyond it requests wait in line "
        "(see admission_timeout_s).",
    )
    max_pending_pixels: int = Field(
        128_000_000,
        ge=1,
        description="Image pixels admitted at once (decoded memory is about 3 bytes each); "
        "beyond it requests wait in line.",
    )
    admission_timeout_s: float = Field(
        30.0,
        gt=0,
        description="How long a request may wait for admission before a 503 with Retry-After "
        "(keep it under Weaviate's MODULES_CLIENT_TIMEOUT, 50 s by default).",
    )
    body_timeout_s: float = Field(
        30.0, gt=0, description="A request body that sends nothing for this long gets 408."
    )
    header_timeout_s: float = Field(
        10.0,
        gt=0,
        description="`cir serve` closes a connection whose request headers have not all "
        "arrived this long after it opened or after the request's first byte (a bound on "
        "the whole header, however slowly it trickles in).",
    )
    api_docs: bool = Field(
        True,
        description="Serve /docs, /redoc and /openapi.json (behind api_token when it is set).",
    )
    api_token: SecretStr | None = Field(
        None,
        description="When set, callers must send `Authorization: Bearer <token>`, except "
        "health probes and the addresses in `trusted_clients` (Weaviate sends no token).",
    )
    trusted_clients: list[str] = Field(
        default_factory=list,
        description="IP addresses or networks (CIDR, JSON list) that need no token: Weaviate's.",
    )
    trusted_proxies: list[str] = Field(
        default_factory=list,
        description="Proxies (IP addresses or CIDR, JSON list) whose X-Forwarded-For / "
        "X-Forwarded-Proto `cir serve` believes; from anyone else these headers are ignored.",
    )

    @field_validator("trusted_clients", "trusted_proxies")
    @classmethod
    def _networks(cls, value: list[str]) -> list[str]:
        for entry in value:
            try:
                ipaddress.ip_network(entry, strict=False)
            except ValueError:
                raise ValueError(f"{entry!r} is not an IP address or CIDR network") from None
        return value

    @model_validator(mode="after")
    def _enhancement_backend(self) -> ServiceSettings:
        if self.query_enhancement == "chat" and not (
            self.chat_model or (self.enhancer_url and self.enhancer_api_model)
        ):
            raise ValueError(
                "query_enhancement=chat needs chat_model, or enhancer_url and enhancer_api_model"
            )
        if self.query_enhancement == "vlm" and not self.chat_model:
            raise ValueError(
                "query_enhancement=vlm needs chat_model: a model that distils queries itself"
            )
        return self

    def reranker_folder(self) -> str | None:
        """The reranker to serve: ``reranker_model`` (``none``: no reranker); unset, the
        shipped change verifier when the shipped hard-tier first stage is served."""
        if self.reranker_model is not None:
            return None if self.reranker_model.strip().lower() == "none" else self.reranker_model
        return shipped_reranker_for(self.checkpoint)

    def reranker_layer_choice(self) -> str | list[int]:
        """``reranker_layers`` as :func:`choose_layers` takes it."""
        text = self.reranker_layers.strip()
        if text.replace(",", "").replace(" ", "").isdigit():
            return [int(x) for x in text.split(",") if x.strip()]
        return text

    def image_limits(self) -> ImageLimits:
        """The per-image bounds above as the decoder takes them; clients that check a file
        before sending it (``cir ingest``, ``cir ui``) apply the same."""
        from cir_module.images import ImageLimits  # PIL: not for every settings reader

        return ImageLimits(self.max_image_bytes, self.max_image_pixels, self.max_aspect_ratio)
