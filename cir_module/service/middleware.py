"""What every request passes through: its id, the caller check, the size gate, the metrics
and the access log line."""

from __future__ import annotations

import hmac
import ipaddress
import logging
import time

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response

from cir_module.service.body import bounded
from cir_module.service.observability import REQUEST_ID, ServiceMetrics, new_request_id
from cir_module.settings import ServiceSettings

__all__ = ["OPEN_PATHS", "install_middleware"]

access_log = logging.getLogger("cir_module.service.access")

# Health probes answer without a token: orchestrators do not send one.
OPEN_PATHS = frozenset({"/.well-known/live", "/.well-known/ready"})


def _error(message: str, status: int, **headers: str) -> JSONResponse:
    return JSONResponse({"error": bounded(message)}, status_code=status, headers=headers)


class CallerCheck:
    """Bearer-token check for callers outside the trusted networks (Weaviate sends none)."""

    def __init__(self, settings: ServiceSettings) -> None:
        self.token = settings.api_token.get_secret_value() if settings.api_token else None
        self.trusted = [ipaddress.ip_network(n, strict=False) for n in settings.trusted_clients]

    def refusal(self, request: Request) -> JSONResponse | None:
        if self.token is None or request.url.path in OPEN_PATHS:
            return None
        host = request.client.host if request.client else None
        try:
            if host and any(ipaddress.ip_address(host) in net for net in self.trusted):
                return None
        except ValueError:  # not an IP (a test client's name): not trusted
            pass
        sent = request.headers.get("authorization", "")
        scheme, _, token = sent.partition(" ")
        if scheme.lower() == "bearer" and hmac.compare_digest(token.strip(), self.token):
            return None
        return _error(
            "missing or wrong bearer token (send Authorization: Bearer <CIR_API_TOKEN>)",
            401,
            **{"WWW-Authenticate": "Bearer"},
        )


def _too_large(request: Request, limit: int) -> JSONResponse | None:
    declared = request.headers.get("content-length")
    if declared is None:
        return None  # chunked: the body reader counts (read_json_body)
    if not declared.isdigit():
        return _error(f"Content-Length {declared[:40]!r} is not a number", 400)
    if int(declared) > limit:
        return _error(f"request body is {declared} bytes, more than the limit of {limit}", 413)
    return None


def install_middleware(app: FastAPI, settings: ServiceSettings, metrics: ServiceMetrics) -> None:
    """Request ids, caller check, size gate, metrics and access log on every request."""
    callers = CallerCheck(settings)

    @app.middleware("http")
    async def observe(request: Request, call_next) -> Response:
        request_id = new_request_id(request.headers.get("x-request-id"))
        token = REQUEST_ID.set(request_id)
        start = time.perf_counter()
        status = 500
        try:
            refusal = callers.refusal(request) or _too_large(request, settings.max_request_bytes)
            response = refusal or await call_next(request)
            status = response.status_code
            response.headers["X-Request-ID"] = request_id
            return response
        finally:
            seconds = time.perf_counter() - start
            route = request.scope.get("route")
            # Label by route template, never the raw path: unknown paths must not grow
            # the metric's label set.
            endpoint = getattr(route, "path", None) or "unmatched"
            metrics.observe_request(endpoint, request.method, status, seconds)
            access_log.info(
                "%s %s %d",
                request.method,
                request.url.path,
                status,
                extra={
                    "method": request.method,
                    "path": request.url.path,
                    "status": status,
                    "duration_ms": round(1000 * seconds, 2),
                    "client": request.client.host if request.client else None,
                },
            )
            REQUEST_ID.reset(token)
