"""Cross-request batching: merged forwards, rows back in order, one bad input fails alone."""

from __future__ import annotations

import asyncio
import os

import httpx
import numpy as np
import pytest

from cir_module import compose_query
from cir_module.service.batcher import MicroBatcher
from integration.service_process import ServiceProcess
from tests.conftest import cross_fusion_conv_stem, png_b64, scene_images


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


class HeldModel:
    """A batch function whose calls all wait until released, counting how many run at once."""

    def __init__(self) -> None:
        self.calls: list[list[str]] = []
        self.release = asyncio.Event()
        self.running = self.most_running = 0

    def __call__(self, items: list[str]) -> np.ndarray:
        return np.array([[float(ord(s[0]))] for s in items])

    async def run(self, fn, *columns):
        self.calls.append(list(columns[0]))
        self.running += 1
        self.most_running = max(self.most_running, self.running)
        await self.release.wait()
        self.running -= 1
        return fn(*columns)


def test_batches_run_at_once_up_to_the_concurrency_and_share_out_what_waits():
    async def scenario(concurrency: int):
        model = HeldModel()
        batcher = MicroBatcher(model, model.run, max_wait_s=0.0, concurrency=concurrency)
        first = [asyncio.create_task(batcher.submit([w])) for w in "abcde"]
        await asyncio.sleep(0.01)  # every free slot now holds a batch, at the gate
        held = [list(c) for c in model.calls]
        later = [asyncio.create_task(batcher.submit([w])) for w in "fg"]
        await asyncio.sleep(0.01)
        model.release.set()
        results = await asyncio.gather(*first, *later)
        batcher.close()
        return model, held, results

    model, held, results = asyncio.run(scenario(2))
    # Five items waiting and two slots free: three go to the first batch, two to the second.
    # What arrives while both run waits, and is shared out again once both are free.
    assert held == [["a", "b", "c"], ["d", "e"]]
    assert model.calls == [["a", "b", "c"], ["d", "e"], ["f"], ["g"]]
    assert model.most_running == 2
    for result, word in zip(results, "abcdefg", strict=True):
        np.testing.assert_array_equal(result, [[float(ord(word))]])

    model, held, _ = asyncio.run(scenario(1))
    assert held == [["a", "b", "c", "d", "e"]]
    assert model.calls == [["a", "b", "c", "d", "e"], ["f", "g"]] and model.most_running == 1


def test_concurrency_below_one_is_refused():
    with pytest.raises(ValueError, match="concurrency"):
        MicroBatcher(GatedModel(), GatedModel().run, concurrency=0)


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


@pytest.mark.integration
def test_two_model_workers_answer_as_one_worker_does(tmp_path):
    """``CIR_MODEL_WORKERS=2`` on an export: each worker's session gets its share of the
    cores, and concurrent images and composed queries get the vectors the export gives."""
    pytest.importorskip("onnx", reason="the export extra is not installed")
    import torch

    from cir_module.models.onnx_model import OnnxCIRModel
    from onnx_export import export_checkpoint

    torch.manual_seed(0)
    cross_fusion_conv_stem().save_pretrained(tmp_path / "ckpt")
    export_checkpoint(tmp_path / "ckpt", tmp_path / "onnx", variants=("fp32",))
    images = scene_images(10, seed=5)
    b64 = [png_b64(img) for img in images]
    texts = [f"make shape {i} red" for i in range(len(images))]
    bodies = [{"images": [b]} for b in b64]
    bodies += [{"texts": [compose_query(b, t)]} for b, t in zip(b64, texts, strict=True)]

    async def send_all(url: str) -> list[httpx.Response]:
        async with httpx.AsyncClient(timeout=120) as http:
            return await asyncio.gather(*(http.post(f"{url}/vectorize", json=b) for b in bodies))

    env = {"CIR_ONNX_EXPORT": str(tmp_path / "onnx"), "CIR_MODEL_WORKERS": "2"}
    with ServiceProcess(tmp_path / "onnx", env=env) as service:
        meta = httpx.get(f"{service.url}/meta").json()
        answers = asyncio.run(send_all(service.url))
        stats = httpx.get(f"{service.url}/meta").json()["batching"]["stats"]
    assert meta["batching"]["model_workers"] == 2
    assert meta["model"]["intra_op_threads"] == max(1, (os.cpu_count() or 1) // 2)
    assert all(a.status_code == 200 for a in answers)
    assert stats["image"]["items"] == len(images) and stats["composed"]["items"] == len(texts)
    local = OnnxCIRModel(tmp_path / "onnx", "fp32", providers=["CPUExecutionProvider"])
    got_images = np.array([a.json()["imageVectors"][0] for a in answers[: len(images)]])
    got_queries = np.array([a.json()["textVectors"][0] for a in answers[len(images) :]])
    np.testing.assert_allclose(got_images, local.embed_images(images), atol=1e-5)
    np.testing.assert_allclose(got_queries, local.embed_composed(images, texts), atol=1e-5)
