"""``cir serve``: the inference service under uvicorn, configured by the CIR_* settings."""

from __future__ import annotations

import argparse
import logging
import sys

__all__ = ["add_parser"]


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
