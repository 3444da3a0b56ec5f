"""Operations, against the real service over HTTP: metrics, request ids in JSON logs, the
bearer token, size limits, text truncation, a bounded queue, settings errors."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys

import httpx
import numpy as np
import pytest
from PIL import Image

from integration.service_process import ServiceProcess
from tests.conftest import png_b64, scene_images

pytestmark = pytest.mark.integration

IMAGES = [png_b64(im) for im in scene_images(8, seed=21)]


@pytest.fixture(scope="module")
def guarded(tiny_checkpoint):
    """A service with a token, tight limits and a small admission bound."""
    env = {
        "CIR_API_TOKEN": "s3cret",
        "CIR_MAX_REQUEST_BYTES": "200000",
        "CIR_MAX_IMAGE_BYTES": "50000",
        "CIR_MAX_IMAGE_PIXELS": "40000",
        "CIR_MAX_TEXT_CHARS": "12",
        "CIR_MAX_PENDING_ITEMS": "4",
        "CIR_ADMISSION_TIMEOUT_S": "0.05",
        "CIR_BATCH_WAIT_MS": "20",
    }
    with ServiceProcess(tiny_checkpoint, env=env) as proc:
        yield proc


AUTH = {"Authorization": "Bearer s3cret"}


def test_metrics_count_requests_batches_and_model(service):
    for _ in range(3):
        r = httpx.post(f"{service.url}/vectorize", json={"images": IMAGES[:2]}, timeout=60)
        assert r.status_code == 200
    httpx.post(f"{service.url}/vectorize", json={"texts": 5}, timeout=60)
    httpx.get(f"{service.url}/no/such/route/{np.random.randint(1e9)}")
    text = httpx.get(f"{service.url}/metrics").text

    def value(prefix: str) -> float:
        lines = [ln for ln in text.splitlines() if ln.startswith(prefix)]
        assert lines, f"no metric line starts with {prefix}"
        return float(lines[0].rsplit(" ", 1)[1])

    ok = 'cir_requests_total{endpoint="/vectorize",method="POST",status="200"}'
    assert value(ok) >= 3
    assert value('cir_requests_total{endpoint="/vectorize",method="POST",status="422"}') >= 1
    assert value('cir_requests_total{endpoint="unmatched",method="GET",status="404"}') >= 1
    assert value('cir_request_seconds_count{endpoint="/vectorize"}') >= 4
    assert value('cir_batch_size_count{kind="image"}') >= 3
    assert value('cir_batch_size_sum{kind="image"}') >= 6
    assert value('cir_queue_depth{kind="image"}') == 0
    assert value("cir_model_load_seconds") > 0
    assert 'runtime="torch"' in text and "cir_model_info{" in text


def test_request_id_is_returned_and_logged_as_json(service):
    r = httpx.post(
        f"{service.url}/vectorize",
        json={"images": ["not base64!"]},
        headers={"X-Request-ID": "trace-abc-123"},
    )
    assert r.status_code == 400 and r.headers["x-request-id"] == "trace-abc-123"
    fresh = httpx.get(f"{service.url}/meta").headers["x-request-id"]
    assert len(fresh) == 16 and fresh != "trace-abc-123"
    records = [
        json.loads(line)
        for line in service.log_path.read_text().splitlines()
        if line.startswith("{")
    ]
    mine = [rec for rec in records if rec["request_id"] == "trace-abc-123"]
    assert mine and mine[-1]["path"] == "/vectorize" and mine[-1]["status"] == 400
    assert {"time", "level", "logger", "message", "duration_ms"} <= set(mine[-1])


def test_token_is_required_except_for_probes(guarded):
    url = guarded.url
    r = httpx.post(f"{url}/vectorize", json={"texts": ["a red circle"]})
    assert r.status_code == 401 and "bearer token" in r.json()["error"]
    assert r.headers["www-authenticate"] == "Bearer"
    wrong = {"Authorization": "Bearer nope"}
    assert httpx.post(f"{url}/vectorize", json={"texts": ["x"]}, headers=wrong).status_code == 401
    assert httpx.get(f"{url}/.well-known/ready").status_code == 204
    assert httpx.get(f"{url}/metrics").status_code == 401
    ok = httpx.post(f"{url}/vectorize", json={"texts": ["a red circle"]}, headers=AUTH)
    assert ok.status_code == 200


def test_trusted_network_needs_no_token(tiny_checkpoint):
    env = {"CIR_API_TOKEN": "s3cret", "CIR_TRUSTED_CLIENTS": '["127.0.0.0/8"]'}
    with ServiceProcess(tiny_checkpoint, env=env) as proc:
        r = httpx.post(f"{proc.url}/vectorize", json={"texts": ["a red circle"]})
        assert r.status_code == 200


@pytest.mark.parametrize(
    ("body", "status", "message"),
    [
        ({"images": ["A" * 250_000]}, 413, "more than the limit of 200000"),
        ({"images": ["A" * 80_000]}, 413, "more than the limit of 50000 bytes"),
        ({"images": [png_b64(Image.new("RGB", (300, 300), "white"))]}, 413, "40000 pixels"),
        ({"images": IMAGES[:5]}, 413, "at most 4 are accepted"),
    ],
)
def test_size_limits(guarded, body, status, message):
    r = httpx.post(f"{guarded.url}/vectorize", json=body, headers=AUTH, timeout=60)
    assert r.status_code == status and message in r.json()["error"]
    assert httpx.get(f"{guarded.url}/.well-known/live").status_code == 204


def test_chunked_body_is_counted_too(guarded):
    def chunks():
        yield b'{"texts": ["'
        for _ in range(30):
            yield b"x" * 10_000
        yield b'"]}'

    r = httpx.post(f"{guarded.url}/vectorize", content=chunks(), headers=AUTH, timeout=60)
    assert r.status_code == 413 and "limit of 200000 bytes" in r.json()["error"]


def test_long_texts_are_truncated_to_the_stated_limit(guarded, service):
    long = "a red circle and a blue square at the top left"
    body = {"texts": [long, long[:12]]}

    def vectors(proc) -> list:
        r = httpx.post(f"{proc.url}/vectorize", json=body, headers=AUTH, timeout=60)
        return r.json()["textVectors"]

    cut = vectors(guarded)  # CIR_MAX_TEXT_CHARS=12
    np.testing.assert_allclose(cut[0], cut[1], atol=1e-6)
    kept = vectors(service)  # the default limit keeps the whole text, and it matters
    assert not np.allclose(kept[0], kept[1], atol=1e-4)


def test_service_full_past_the_deadline_answers_503_with_retry_after(guarded):
    pairs = [IMAGES[i % 7 : i % 7 + 2] for i in range(24)]

    async def burst() -> list[httpx.Response]:
        async with httpx.AsyncClient(timeout=60, headers=AUTH) as http:
            return await asyncio.gather(
                *(http.post(f"{guarded.url}/vectorize", json={"images": pair}) for pair in pairs)
            )

    responses = asyncio.run(burst())
    codes = [r.status_code for r in responses]
    assert set(codes) <= {200, 503} and 200 in codes and 503 in codes, codes
    refused = next(r for r in responses if r.status_code == 503)
    assert refused.headers["retry-after"] == "1"
    assert "full" in refused.json()["error"] and "waited 0.05s" in refused.json()["error"]
    metrics = httpx.get(f"{guarded.url}/metrics", headers=AUTH).text
    assert "cir_rejected_total" in metrics
    # Nothing stays admitted after the burst, and the service still answers.
    assert "cir_pending_items 0.0" in metrics
    ok = httpx.post(f"{guarded.url}/vectorize", json={"images": IMAGES[:2]}, headers=AUTH)
    assert ok.status_code == 200


def test_invalid_settings_stop_the_service_with_a_clear_message(tiny_checkpoint):
    env = {
        "CIR_CHECKPOINT": str(tiny_checkpoint),
        "CIR_TRUSTED_CLIENTS": '["10.0.0.0/33"]',
        "CIR_MAX_PENDING_ITEMS": "0",
        "PATH": "/usr/bin:/bin",
    }
    done = subprocess.run(
        [sys.executable, "-m", "cir_module.cli", "serve"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode != 0
    assert "invalid settings" in done.stderr and "10.0.0.0/33" in done.stderr
    assert "max_pending_items" in done.stderr
