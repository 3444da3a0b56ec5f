"""What every request passes through: its id, the caller check, the size gate, HEAD served
as GET, WebSocket upgrades refused, the last catch of unexpected errors, the metrics and the
access log line.

A plain ASGI middleware, not Starlette's ``BaseHTTPMiddleware`` (``@app.middleware``): that
one runs the application in a task group of its own and streams the response through memory
channels, which cost about as much per request as the shipped model's forward.
"""

from __future__ import annotations

import hmac
import ipaddress
import logging
import time

from fastapi import FastAPI
from fastapi.responses import JSONResponse
from starlette.datastructures import Headers
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from cir_module.service.body import bounded
from cir_module.service.observability import REQUEST_ID, ServiceMetrics, new_request_id
from cir_module.settings import ServiceSettings

__all__ = ["OPEN_PATHS", "install_middleware"]

access_log = logging.getLogger("cir_module.service.access")
log = logging.getLogger("cir_module.service")

# Health probes answer without a token: orchestrators do not send one.
OPEN_PATHS = frozenset({"/.well-known/live", "/.well-known/ready"})


def _error(message: str, status: int, **headers: str) -> JSONResponse:
    return JSONResponse({"error": bounded(message)}, status_code=status, headers=headers)


class CallerCheck:
    """Bearer-token check for callers outside the trusted networks (Weaviate sends none)."""

    def __init__(self, settings: ServiceSettings) -> None:
        self.token = settings.api_token.get_secret_value() if settings.api_token else None
        self.trusted = [ipaddress.ip_network(n, strict=False) for n in settings.trusted_clients]

    def refusal(self, path: str, host: str | None, headers: Headers) -> JSONResponse | None:
        if self.token is None or path in OPEN_PATHS:
            return None
        try:
            if host and any(ipaddress.ip_address(host) in net for net in self.trusted):
                return None
        except ValueError:  # not an IP (a test client's name): not trusted
            pass
        scheme, _, token = headers.get("authorization", "").partition(" ")
        if scheme.lower() == "bearer" and hmac.compare_digest(token.strip(), self.token):
            return None
        return _error(
            "missing or wrong bearer token (send Authorization: Bearer <CIR_API_TOKEN>)",
            401,
            **{"WWW-Authenticate": "Bearer"},
        )


def _too_large(headers: Headers, limit: int) -> JSONResponse | None:
    declared = headers.get("content-length")
    if declared is None:
        return None  # chunked: the body reader counts (read_json_body)
    if not declared.isdigit():
        return _error(f"Content-Length {declared[:40]!r} is not a number", 400)
    if int(declared) > limit:
        return _error(f"request body is {declared} bytes, more than the limit of {limit}", 413)
    return None


def _websocket_upgrade(headers: Headers) -> JSONResponse | None:
    if headers.get("upgrade", "").lower() != "websocket":
        return None
    return _error("this service speaks plain HTTP/1.1 JSON; WebSocket is not served", 400)


class ObserveRequests:
    """Request id (contextvar and ``X-Request-ID`` header), caller check, size gate, metrics
    by route template and one access log line per HTTP request.

    ``HEAD`` runs the ``GET`` of the same path (RFC 9110: the same headers, no body; the
    server drops the body, it reads the method from its own scope). An error no handler
    took is logged here, once, while the request id is still set, and answered with a JSON
    500 if nothing was sent yet.
    """

    def __init__(self, app: ASGIApp, settings: ServiceSettings, metrics: ServiceMetrics) -> None:
        self.app = app
        self.settings = settings
        self.metrics = metrics
        self.callers = CallerCheck(settings)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = Headers(scope=scope)
        request_id = new_request_id(headers.get("x-request-id"))
        token = REQUEST_ID.set(request_id)
        start = time.perf_counter()
        status = 500
        client = scope.get("client")
        host = client[0] if client else None
        path = scope["path"]

        started = False
        app_scope = {**scope, "method": "GET"} if scope["method"] == "HEAD" else scope

        async def send_with_id(message: Message) -> None:
            nonlocal status, started
            if message["type"] == "http.response.start":
                status, started = message["status"], True
                message["headers"] = [
                    *message.get("headers", ()),
                    (b"x-request-id", request_id.encode("latin-1")),
                ]
            await send(message)

        try:
            refusal = (
                self.callers.refusal(path, host, headers)
                or _too_large(headers, self.settings.max_request_bytes)
                or _websocket_upgrade(headers)
            )
            if refusal is not None:
                await refusal(scope, receive, send_with_id)
            else:
                await self.app(app_scope, receive, send_with_id)
        except Exception as exc:
            log.exception("unhandled error")
            if not started:
                await _error(f"internal error: {type(exc).__name__}: {exc}", 500)(
                    scope, receive, send_with_id
                )
        finally:
            seconds = time.perf_counter() - start
            # Label by route template, never the raw path: unknown paths must not grow
            # the metric's label set. The router leaves the matched route in the scope.
            endpoint = getattr(app_scope.get("route"), "path", None) or "unmatched"
            method = scope["method"]
            self.metrics.observe_request(endpoint, method, status, seconds)
            if access_log.isEnabledFor(logging.INFO):
                access_log.info(
                    "%s %s %d",
                    method,
                    path,
                    status,
                    extra={
                        "method": method,
                        "path": path,
                        "status": status,
                        "duration_ms": round(1000 * seconds, 2),
                        "client": host,
                    },
                )
            REQUEST_ID.reset(token)


def install_middleware(app: FastAPI, settings: ServiceSettings, metrics: ServiceMetrics) -> None:
    """Request ids, caller check, size gate, metrics and access log on every request."""
    app.add_middleware(ObserveRequests, settings=settings, metrics=metrics)
