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
reach; the gap is the serving overhead. The machine is shared and its speed drifts, so every
side is up at once and measured in ``--rounds`` interleaved windows (imports likewise); every
ratio is measured in this one run.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
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

from cir_module.data.shapes import random_images
from cir_module.images import encode_image_base64
from cir_module.models import create_model
from cir_module.models.onnx_model import OnnxCIRModel
from integration.ingest import ingest_objects
from integration.schema import create_image_collection
from integration.service_process import ServiceProcess
from integration.stack import connect
from integration.weaviate_server import WeaviateServer
from onnx_export import export_checkpoint

log = logging.getLogger("benchmark")


async def drive_http(url: str, images: list[str], clients: int, seconds: float) -> dict:
    """``clients`` loops posting one image each to ``url`` for ``seconds``."""
    latencies: list[float] = []
    errors = 0
    stop_at = time.perf_counter() + seconds

    async def client(k: int, http: httpx.AsyncClient) -> None:
        nonlocal errors
        i = k
        while time.perf_counter() < stop_at:
            start = time.perf_counter()
            r = await http.post(f"{url}/vectorize", json={"images": [images[i % len(images)]]})
            if r.status_code != 200:
                errors += 1
            else:
                latencies.append(time.perf_counter() - start)
            i += clients

    began = time.perf_counter()
    async with httpx.AsyncClient(timeout=120) as http:
        await asyncio.gather(*(client(k, http) for k in range(clients)))
    return {
        "images": len(latencies),
        "seconds": time.perf_counter() - began,
        "latencies": latencies,
        "errors": errors,
    }


def weaviate_import(server: WeaviateServer, images: list[str]) -> dict:
    """Objects and seconds of one real Weaviate batch import through ``server``'s vectorizer."""
    with connect(server) as client:
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
    return {"objects": len(images), "seconds": elapsed}


def bare_session(model: OnnxCIRModel, pixels: np.ndarray, seconds: float) -> dict:
    """Images and seconds of the bare image session on already preprocessed ``pixels``."""
    done, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        model.encode_image(pixels)
        done += len(pixels)
    return {"images": done, "seconds": time.perf_counter() - start}


def mean_batch(url: str) -> float:
    stats = httpx.get(f"{url}/meta").json()["batching"].get("stats", {})
    return stats.get("image", {}).get("mean_batch_size", 1.0)


def measure(sides: dict, export: Path, images: list[str], args) -> dict:
    """Every side up at once, measured in interleaved rounds so that drift in the machine's
    speed (it is shared) reaches every side alike; totals over the rounds."""
    from cir_module.images import decode_base64_image

    window = args.seconds / args.rounds
    totals = {side: {"images": 0, "seconds": 0.0, "latencies": [], "errors": 0} for side in sides}
    with contextlib.ExitStack() as stack:
        urls = {
            side: stack.enter_context(ServiceProcess(target, env=env)).url
            for side, (target, env) in sides.items()
        }
        for url in urls.values():  # warm-up: first forwards, allocator, caches
            asyncio.run(drive_http(url, images, args.clients, min(3.0, window)))
        bare = {}
        for side in [s for s in sides if s.startswith("ours")]:
            batch = max(1, round(mean_batch(urls[side])))
            model = OnnxCIRModel(export, side.split("-")[1], providers=["CPUExecutionProvider"])
            pixels = model.pixels([decode_base64_image(b) for b in images[:batch]])
            model.encode_image(pixels)
            bare[side] = (model, pixels)
            totals[side]["bare"] = {"images": 0, "seconds": 0.0, "batch": batch}
        for r in range(args.rounds):
            log.info("round %d of %d", r + 1, args.rounds)
            for side, url in urls.items():
                run = asyncio.run(drive_http(url, images, args.clients, window))
                for key in ("images", "seconds", "latencies", "errors"):
                    totals[side][key] += run[key]
                if side in bare:
                    run = bare_session(*bare[side], window)
                    totals[side]["bare"]["images"] += run["images"]
                    totals[side]["bare"]["seconds"] += run["seconds"]
        for side, url in urls.items():
            totals[side]["mean_batch"] = mean_batch(url)
        if not args.skip_weaviate:
            servers = {side: stack.enter_context(WeaviateServer(url)) for side, url in urls.items()}
            per_round = images[: args.objects // args.import_rounds]
            for side in sides:
                totals[side]["weaviate"] = {"objects": 0, "seconds": 0.0}
            for _ in range(args.import_rounds):
                for side, server in servers.items():
                    run = weaviate_import(server, per_round)
                    totals[side]["weaviate"]["objects"] += run["objects"]
                    totals[side]["weaviate"]["seconds"] += run["seconds"]
    return {side: summarise(t) for side, t in totals.items()}


def summarise(t: dict) -> dict:
    lat = t.pop("latencies")
    out = {
        "images_per_s": t["images"] / t["seconds"],
        "p50_ms": 1000 * statistics.median(lat),
        "p95_ms": 1000 * float(np.percentile(lat, 95)),
        **t,
    }
    if "bare" in t:
        out["bare"]["images_per_s"] = t["bare"]["images"] / t["bare"]["seconds"]
    if "weaviate" in t:
        out["weaviate"]["objects_per_s"] = t["weaviate"]["objects"] / t["weaviate"]["seconds"]
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=40.0, help="HTTP time per side")
    parser.add_argument("--rounds", type=int, default=8, help="interleaved windows per side")
    parser.add_argument("--clients", type=int, default=2 * (os.cpu_count() or 1))
    parser.add_argument("--objects", type=int, default=256, help="Weaviate import size")
    parser.add_argument("--import-rounds", type=int, default=2)
    parser.add_argument("--model", default="clip-vit-b32-scratch")
    parser.add_argument("--skip-weaviate", action="store_true")
    parser.add_argument("--json-out")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)

    work = Path(tempfile.mkdtemp(prefix="cir-bench-"))
    create_model(args.model).save_pretrained(work / "ckpt")
    manifest = export_checkpoint(work / "ckpt", work / "onnx", variants=("fp32", "int8"))
    images = [encode_image_base64(im) for im in random_images(max(args.objects, 4 * args.clients))]

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
    results = measure(sides, work / "onnx", images, args)
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
