"""What operators see: Prometheus metrics, request ids, JSON log lines.

Every request gets an id (the caller's ``X-Request-ID`` when it sends a sane one), returned in
the response header and carried by every log line written while the request runs. Metrics
live in one registry per app, so that several apps in one process (tests) do not collide.
"""

from __future__ import annotations

import contextvars
import json
import logging
import re
import time
import uuid
from typing import Any

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)

__all__ = ["REQUEST_ID", "JsonLogFormatter", "ServiceMetrics", "new_request_id"]

REQUEST_ID: contextvars.ContextVar[str] = contextvars.ContextVar("request_id", default="-")
_SANE_ID = re.compile(r"^[A-Za-z0-9._:-]{1,64}$")
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128)
# Metric labels take only these methods: every unknown one is "other", so that a client
# inventing methods cannot grow the label set.
KNOWN_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})


def new_request_id(sent: str | None) -> str:
    """The caller's id if it is short and printable, else a fresh one."""
    return sent if sent and _SANE_ID.match(sent) else uuid.uuid4().hex[:16]


class ServiceMetrics:
    """The service's Prometheus metrics and their exposition."""

    def __init__(self) -> None:
        r = self.registry = CollectorRegistry()
        self.requests = Counter(
            "cir_requests", "HTTP requests", ["endpoint", "method", "status"], registry=r
        )
        self.latency = Histogram(
            "cir_request_seconds",
            "HTTP request latency",
            ["endpoint"],
            registry=r,
            buckets=LATENCY_BUCKETS,
        )
        self.batch_size = Histogram(
            "cir_batch_size",
            "Items per model forward",
            ["kind"],
            registry=r,
            buckets=BATCH_BUCKETS,
        )
        self.queue_depth = Gauge(
            "cir_queue_depth", "Requests waiting for the model", ["kind"], registry=r
        )
        self.pending_items = Gauge(
            "cir_pending_items", "Items admitted and not yet answered", registry=r
        )
        self.pending_pixels = Gauge(
            "cir_pending_pixels", "Image pixels admitted and not yet answered", registry=r
        )
        self.waiting_requests = Gauge(
            "cir_admission_waiting", "Requests waiting in line for admission", registry=r
        )
        self.rejected = Counter(
            "cir_rejected",
            "Requests refused with 503: the service stayed full past the admission deadline",
            registry=r,
        )
        self.model_load_seconds = Gauge(
            "cir_model_load_seconds", "Time to load the model(s) at start", registry=r
        )
        self.model_info = Gauge(
            "cir_model_info",
            "The model in use (value 1)",
            ["name", "runtime", "provider", "reranker"],
            registry=r,
        )

    def observe_request(self, endpoint: str, method: str, status: int, seconds: float) -> None:
        method = method if method in KNOWN_METHODS else "other"
        self.requests.labels(endpoint, method, str(status)).inc()
        self.latency.labels(endpoint).observe(seconds)

    def observe_batch(self, kind: str, size: int) -> None:
        self.batch_size.labels(kind).observe(size)

    def render(self, encoder: Any | None) -> tuple[bytes, str]:
        """The exposition text, gauges refreshed from ``encoder`` first."""
        if encoder is not None:
            for kind, stats in encoder.stats().items():
                self.queue_depth.labels(kind).set(stats["queue_depth"])
            self.pending_items.set(encoder.admission.items)
            self.pending_pixels.set(encoder.admission.pixels)
            self.waiting_requests.set(len(encoder.admission.waiting))
        return generate_latest(self.registry), CONTENT_TYPE_LATEST


class JsonLogFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message, request id, and the request
    fields the access log adds (method, path, status, duration_ms, client)."""

    FIELDS = ("method", "path", "status", "duration_ms", "client")

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
            "request_id": REQUEST_ID.get(),
        }
        for field in self.FIELDS:
            if hasattr(record, field):
                out[field] = getattr(record, field)
        if record.exc_info:
            out["exception"] = self.formatException(record.exc_info)
        return json.dumps(out, ensure_ascii=False)
