"""``cir serve``: the inference service under uvicorn, configured by the CIR_* settings."""

from __future__ import annotations

import argparse
import importlib.util
import logging
import sys
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from cir_module.settings import ServiceSettings

log = logging.getLogger(__name__)

__all__ = ["add_parser", "verifier_export_wanted", "with_reranker_runtime"]


def add_parser(sub: argparse._SubParsersAction) -> None:
    """Register ``serve``."""
    serve = sub.add_parser("serve", help="run the inference service (CIR_* env settings)")
    serve.add_argument("--checkpoint", help="checkpoint folder or hub id (CIR_CHECKPOINT)")
    serve.add_argument("--host", help="bind address (CIR_HOST, default 127.0.0.1)")
    serve.add_argument("--port", type=int, help="port (CIR_PORT, default 8080)")
    serve.set_defaults(func=_serve)


def _serve(args: argparse.Namespace) -> None:
    import uvicorn
    from pydantic import ValidationError

    from cir_module.service import create_app
    from cir_module.settings import ServiceSettings

    overrides = {
        k: v
        for k, v in {"checkpoint": args.checkpoint, "host": args.host, "port": args.port}.items()
        if v is not None
    }
    try:
        settings = ServiceSettings(**overrides)
    except ValidationError as exc:
        from cir_module.service.body import describe_validation_error

        sys.exit(f"cir serve: invalid settings (CIR_* variables): {describe_validation_error(exc)}")
    root = logging.getLogger()
    root.setLevel(settings.log_level.upper())
    if settings.log_format == "json":
        from cir_module.service.observability import JsonLogFormatter

        for handler in root.handlers:
            handler.setFormatter(JsonLogFormatter())
    try:  # a refused kind, a missing extra, a failed parity check (ParityError: an AssertionError)
        settings = with_reranker_runtime(settings)
    except (ValueError, ImportError, AssertionError) as exc:
        sys.exit(f"cir serve: the reranker's runtime (CIR_RERANKER_RUNTIME): {exc}")
    from cir_module.service.protocol import guarded_protocol

    try:
        protocol = guarded_protocol(settings.http_parser, settings.header_timeout_s)
        if settings.event_loop == "uvloop":
            import uvloop  # noqa: F401  (uvicorn imports it by name; say which extra is missing)
    except ModuleNotFoundError as exc:
        from cir_module.lazy import missing_extra

        sys.exit(f"cir serve: {missing_extra(exc, 'CIR_EVENT_LOOP=uvloop')}")
    except ImportError as exc:
        sys.exit(f"cir serve: {exc}")
    uvicorn.run(
        create_app(settings),
        host=settings.host,
        port=settings.port,
        log_level=settings.log_level.lower(),
        log_config=None,  # uvicorn's loggers go through ours (JSON, request ids)
        access_log=False,  # the service writes its own access line, with the request id
        http=protocol,
        # No route speaks WebSocket: an upgrade request is an HTTP request, which the
        # middleware answers with a JSON 400 (uvicorn's WebSocket side would send a bare 403).
        ws="none",
        loop=settings.event_loop,
        # X-Forwarded-* rewrite the client address the token check trusts: only from the
        # proxies named in the settings (uvicorn's default trusts 127.0.0.1).
        proxy_headers=bool(settings.trusted_proxies),
        forwarded_allow_ips=settings.trusted_proxies or None,
    )


def verifier_export_wanted(settings: ServiceSettings) -> bool:
    """Whether the served reranker is a change verifier's checkpoint folder that
    ``reranker_runtime`` runs on onnxruntime: ``onnx``, or ``auto`` on the CPU with the export
    extra and onnxruntime installed and no RAug-Rep to inject (the export takes none). A folder
    of another kind under ``onnx`` is refused (only the change verifier is exported on start;
    ``cir rerank export`` exports the image judge)."""
    from cir_module.rerank.onnx_vlm import is_onnx_reranker
    from cir_module.vlm.folder import recorded_kind

    folder = settings.reranker_folder()
    if settings.reranker_runtime == "torch" or folder is None or is_onnx_reranker(folder):
        return False
    if not (Path(folder) / "config.json").is_file():  # a hub id: torch loads it as it is
        return False
    if recorded_kind(folder) != "changes":
        if settings.reranker_runtime == "onnx":
            raise ValueError(
                f"reranker_runtime=onnx exports a change verifier on start; {folder} is not one "
                "(export it with `cir rerank export` and serve the export)"
            )
        return False
    if settings.reranker_runtime == "onnx":
        return True
    if settings.reranker_raug:  # injection runs on torch
        return False
    installed = all(importlib.util.find_spec(m) for m in ("torch", "onnx", "onnxruntime"))
    return settings.device == "cpu" and installed


def with_reranker_runtime(settings: ServiceSettings) -> ServiceSettings:
    """``settings`` with the reranker replaced by its cached ONNX export where
    :func:`verifier_export_wanted` says so (made the first time, parity-checked). Under
    ``auto`` an export that misses parity leaves the folder to torch (a warning says why);
    under ``onnx`` it stops the service."""
    if not verifier_export_wanted(settings):
        return settings
    from onnx_export.served import cached_verifier_export
    from onnx_export.validate import ParityError

    try:
        export = cached_verifier_export(settings.reranker_folder(), settings.export_cache_dir)
    except ParityError as exc:
        if settings.reranker_runtime == "onnx":
            raise
        # auto: the export is a speed-up, never a change of answers; torch serves instead.
        log.warning("serving the verifier on torch: its export missed parity (%s)", exc)
        return settings
    return settings.model_copy(update={"reranker_model": str(export)})
