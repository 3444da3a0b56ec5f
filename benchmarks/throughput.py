"""Image vectorisation throughput: the reference container design against ours, same weights.

    python benchmarks/throughput.py [--seconds 20] [--clients 4] [--objects 256]

One ViT-B/32-sized model with random weights (``clip-vit-b32-scratch``: 3-scale pyramid, 70
visual tokens) is saved once and served four ways, one at a time, on this machine:

(a) ``reference``: torch eager, each request alone on one model thread (a lock, in effect):
    the design of Weaviate's reference multi2vec-clip container, behind the same HTTP contract.
(b) ``ours``: the ONNX export (fp32, and int8 where the export kept int8 image graphs) on
    onnxruntime, with cross-request batching.

Each is driven through HTTP by ``--clients`` concurrent single-image ``/vectorize`` requests
(Weaviate's batch import sends one object per request, up to 2 x NumCPU in flight), then by a
real Weaviate batch import of ``--objects`` images with that service as its vectorizer. The
bare onnxruntime session, at the mean batch size the service formed, bounds what serving can
reach; the gap is the serving overhead. Every ratio is measured in this one run.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path

import httpx
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from cir_module.data.shapes import random_scene, render
from cir_module.models import create_model
from cir_module.models.onnx_model import OnnxCIRModel
from integration.ingest import ingest_objects
from integration.schema import create_image_collection
from integration.service_process import ServiceProcess
from integration.stack import connect
from integration.weaviate_server import WeaviateServer
from onnx_export import export_checkpoint

log = logging.getLogger("benchmark")


def sample_images(n: int, seed: int = 0) -> list[str]:
    """``n`` distinct rendered scenes as base64 PNG (what Weaviate sends for a blob)."""
    import base64
    import io
    import random

    rng = random.Random(seed)
    out = []
    for _ in range(n):
        buffer = io.BytesIO()
        render(random_scene(rng), rng).save(buffer, format="PNG")
        out.append(base64.b64encode(buffer.getvalue()).decode())
    return out


async def drive_http(url: str, images: list[str], clients: int, seconds: float) -> dict:
    """``clients`` loops posting one image each, for ``seconds`` after a short warm-up."""
    latencies: list[float] = []
    errors = 0
    stop_at = 0.0

    async def client(k: int, http: httpx.AsyncClient, record: bool) -> None:
        nonlocal errors
        i = k
        while time.perf_counter() < stop_at:
            start = time.perf_counter()
            r = await http.post(f"{url}/vectorize", json={"images": [images[i % len(images)]]})
            if r.status_code != 200:
                errors += 1
            elif record:
                latencies.append(time.perf_counter() - start)
            i += clients

    async with httpx.AsyncClient(timeout=120) as http:
        for record, duration in ((False, min(3.0, seconds / 4)), (True, seconds)):
            stop_at = time.perf_counter() + duration
            began = time.perf_counter()
            await asyncio.gather(*(client(k, http, record) for k in range(clients)))
            elapsed = time.perf_counter() - began
    return {
        "images_per_s": len(latencies) / elapsed,
        "p50_ms": 1000 * statistics.median(latencies),
        "p95_ms": 1000 * float(np.percentile(latencies, 95)),
        "errors": errors,
    }


def weaviate_import(service_url: str, images: list[str]) -> dict:
    """Objects/s of a real Weaviate batch import with ``service_url`` as the vectorizer."""
    with WeaviateServer(service_url) as server, connect(server) as client:
        name = f"Bench_{uuid.uuid4().hex[:8]}"
        try:
            collection = create_image_collection(client, name, text_properties=())
            objects = ((f"img-{i}", {"image": b64}) for i, b64 in enumerate(images))
            start = time.perf_counter()
            report = ingest_objects(collection, objects, batch_size=64, concurrent_requests=2)
            elapsed = time.perf_counter() - start
            stored = len(collection)
        finally:
            client.collections.delete(name)
    if report.failed or stored != len(images):
        raise RuntimeError(f"import lost objects: {report.failed[:3]}, stored {stored}")
    return {"objects_per_s": len(images) / elapsed, "seconds": elapsed}


def bare_session(export: Path, variant: str, images: list[str], batch: int, seconds: float):
    """Images/s of the bare image session at ``batch``, on already preprocessed pixels."""
    from cir_module.images import decode_base64_image

    model = OnnxCIRModel(export, variant, providers=["CPUExecutionProvider"])
    pixels = model.pixels([decode_base64_image(b) for b in images[:batch]])
    model.encode_image(pixels)  # warm-up
    done, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        model.encode_image(pixels)
        done += batch
    return {"images_per_s": done / (time.perf_counter() - start), "batch": batch}


def serve_and_measure(target: str, env: dict, images: list[str], args) -> dict:
    with ServiceProcess(target, env=env) as service:
        result = asyncio.run(drive_http(service.url, images, args.clients, args.seconds))
        stats = httpx.get(f"{service.url}/meta").json()["batching"].get("stats", {})
        result["mean_batch"] = stats.get("image", {}).get("mean_batch_size", 1.0)
        if not args.skip_weaviate:
            result["weaviate"] = weaviate_import(service.url, images[: args.objects])
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--clients", type=int, default=2 * (os.cpu_count() or 1))
    parser.add_argument("--objects", type=int, default=256, help="Weaviate import size")
    parser.add_argument("--model", default="clip-vit-b32-scratch")
    parser.add_argument("--skip-weaviate", action="store_true")
    parser.add_argument("--json-out")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)

    work = Path(tempfile.mkdtemp(prefix="cir-bench-"))
    create_model(args.model).save_pretrained(work / "ckpt")
    manifest = export_checkpoint(work / "ckpt", work / "onnx", variants=("fp32", "int8"))
    images = sample_images(max(args.objects, 4 * args.clients))

    int8_image = manifest["variants"]["int8"]["files"]["image"].endswith(".int8.onnx")
    sides = {
        "reference": (str(work / "ckpt"), {"CIR_CROSS_REQUEST_BATCHING": "false"}),
        "ours-fp32": (str(work / "onnx"), {"CIR_ONNX_EXPORT": str(work / "onnx")}),
    }
    if int8_image:
        sides["ours-int8"] = (
            str(work / "onnx"),
            {"CIR_ONNX_EXPORT": str(work / "onnx"), "CIR_ONNX_VARIANT": "int8"},
        )
    results = {}
    for side, (target, env) in sides.items():
        log.info("measuring %s", side)
        results[side] = serve_and_measure(target, env, images, args)
    for side in [s for s in sides if s.startswith("ours")]:
        variant = side.split("-")[1]
        batch = max(1, round(results[side]["mean_batch"]))
        results[side]["bare"] = bare_session(work / "onnx", variant, images, batch, args.seconds)

    report(results, args, manifest)
    if args.json_out:
        Path(args.json_out).write_text(json.dumps(results, indent=2))


def report(results: dict, args, manifest: dict) -> None:
    ref = results["reference"]
    print(f"\n{args.model}, {args.clients} concurrent clients, {os.cpu_count()} CPU cores")
    print(
        f"{'side':12s} {'img/s':>8s} {'p50 ms':>8s} {'p95 ms':>8s} {'batch':>6s} "
        f"{'x ref':>6s} {'wv obj/s':>9s} {'x ref':>6s} {'bare img/s':>10s} {'overhead':>8s}"
    )
    for side, r in results.items():
        wv = r.get("weaviate", {}).get("objects_per_s", float("nan"))
        ref_wv = ref.get("weaviate", {}).get("objects_per_s", float("nan"))
        bare = r.get("bare", {}).get("images_per_s", float("nan"))
        print(
            f"{side:12s} {r['images_per_s']:8.1f} {r['p50_ms']:8.1f} {r['p95_ms']:8.1f} "
            f"{r['mean_batch']:6.1f} {r['images_per_s'] / ref['images_per_s']:6.2f} "
            f"{wv:9.1f} {wv / ref_wv:6.2f} {bare:10.1f} {1 - r['images_per_s'] / bare:8.1%}"
        )
    kept = manifest.get("parity", {}).get("int8", {}).get("kept_fp32", {})
    if kept:
        print(f"int8 graphs kept in fp32 by the export's parity check: {kept}")
    errors = {side: r["errors"] for side, r in results.items() if r["errors"]}
    print(f"HTTP errors: {errors or 'none'}")


if __name__ == "__main__":
    main()
