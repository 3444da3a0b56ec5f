"""Cross-request batching: merged forwards, rows back in order, one bad input fails alone."""

from __future__ import annotations

import asyncio

import httpx
import numpy as np
import pytest

from cir_module.service.batcher import MicroBatcher
from tests.conftest import png_b64, scene_images


class GatedModel:
    """A batch function whose first call waits until released, so that the requests sent
    meanwhile queue up and must be merged into the next call."""

    def __init__(self) -> None:
        self.calls: list[list[str]] = []
        self.release = asyncio.Event()

    def __call__(self, items: list[str]) -> np.ndarray:
        if "bad" in items:
            raise ValueError("bad item")
        self.calls.append(list(items))
        return np.array([[float(len(s)), float(ord(s[0]))] for s in items])

    async def run(self, fn, *columns):
        if not self.calls:
            await self.release.wait()
        return fn(*columns)


def _batcher(model: GatedModel, max_batch_size: int = 32) -> MicroBatcher:
    return MicroBatcher(model, model.run, max_batch_size=max_batch_size, max_wait_s=0.0)


def test_concurrent_requests_share_one_forward_and_get_their_own_rows():
    async def scenario():
        model = GatedModel()
        batcher = _batcher(model)
        first = asyncio.create_task(batcher.submit(["a"]))
        await asyncio.sleep(0.01)  # the first batch is now running (held at the gate)
        rest = [asyncio.create_task(batcher.submit(list(w))) for w in ("bb", "ccc", "dddd")]
        await asyncio.sleep(0.01)
        model.release.set()
        results = await asyncio.gather(first, *rest)
        batcher.close()
        return model, batcher, results

    model, batcher, results = asyncio.run(scenario())
    assert model.calls == [["a"], ["b", "b", "c", "c", "c", "d", "d", "d", "d"]]
    for result, word in zip(results, ("a", "bb", "ccc", "dddd"), strict=True):
        np.testing.assert_array_equal(result, [[1.0, ord(word[0])]] * len(word))
    assert batcher.stats.batches == 2 and batcher.stats.requests == 4
    assert batcher.stats.mean_batch_size == pytest.approx(5.0)


def test_batches_respect_the_size_limit():
    async def scenario():
        model = GatedModel()
        batcher = _batcher(model, max_batch_size=3)
        first = asyncio.create_task(batcher.submit(["x"]))
        await asyncio.sleep(0.01)
        rest = [asyncio.create_task(batcher.submit(list(w))) for w in ("pq", "r", "stu", "v")]
        await asyncio.sleep(0.01)
        model.release.set()
        await asyncio.gather(first, *rest)
        batcher.close()
        return model

    model = asyncio.run(scenario())
    # pq + r fill a batch of 3, stu fills the next, v comes last: no request is split.
    assert model.calls == [["x"], ["p", "q", "r"], ["s", "t", "u"], ["v"]]


def test_one_bad_input_fails_only_its_own_request():
    async def scenario():
        model = GatedModel()
        batcher = _batcher(model)
        first = asyncio.create_task(batcher.submit(["a"]))
        await asyncio.sleep(0.01)
        jobs = [asyncio.create_task(batcher.submit(w)) for w in (["ok"], ["bad"], ["fine"])]
        await asyncio.sleep(0.01)
        model.release.set()
        results = await asyncio.gather(first, *jobs, return_exceptions=True)
        later = await batcher.submit(["after"])  # the worker survived
        batcher.close()
        return results, later

    results, later = asyncio.run(scenario())
    assert isinstance(results[2], ValueError)
    np.testing.assert_array_equal(results[1], [[2.0, ord("o")]])
    np.testing.assert_array_equal(results[3], [[4.0, ord("f")]])
    np.testing.assert_array_equal(later, [[5.0, ord("a")]])


@pytest.mark.integration
def test_concurrent_http_requests_are_batched_and_match_single_requests(service, local_model):
    images = scene_images(12, seed=21)
    b64 = [png_b64(img) for img in images]
    corrupt = png_b64(images[0])[:200]  # a truncated PNG

    async def send_all() -> list[httpx.Response]:
        async with httpx.AsyncClient(timeout=120) as http:
            bodies = [{"images": [b]} for b in b64]
            bodies.insert(5, {"images": [corrupt]})
            return await asyncio.gather(
                *(http.post(f"{service.url}/vectorize", json=body) for body in bodies)
            )

    before = httpx.get(f"{service.url}/meta").json()["batching"]["stats"]["image"]
    answers = asyncio.run(send_all())
    after = httpx.get(f"{service.url}/meta").json()["batching"]["stats"]["image"]
    bad = answers.pop(5)
    assert bad.status_code == 400 and "images[0]" in bad.json()["error"]
    got = np.array([a.json()["imageVectors"][0] for a in answers])
    np.testing.assert_allclose(got, local_model.embed_images(images), atol=1e-5)
    # 12 good requests arrived together: fewer forwards than requests.
    assert after["items"] - before["items"] == 12
    assert after["batches"] - before["batches"] < 12
