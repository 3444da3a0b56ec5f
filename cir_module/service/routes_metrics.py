"""``GET /metrics``: Prometheus exposition (requests, latency, batches, queue, model)."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import PlainTextResponse, Response

__all__ = ["router"]

router = APIRouter(tags=["operations"])


@router.get("/metrics", response_class=PlainTextResponse)
async def metrics(request: Request) -> Response:
    """Counters and histograms per endpoint, batch sizes, queue depth, the model in use."""
    state = request.app.state
    body, content_type = state.metrics.render(state.encoder)
    return Response(body, media_type=content_type)
