"""Image vectorisation throughput: the reference container design against ours, same weights.

    python benchmarks/throughput.py [--seconds 20] [--clients 4] [--objects 256]
        [--checkpoint cir_module/checkpoints/shapes-minilm-conv] [--int8 static --calibration DATA]

One model (by default ViT-B/32-sized with random weights, ``clip-vit-b32-scratch``: 3-scale
pyramid, 70 visual tokens; or ``--checkpoint``) is exported once and served these ways, all
up at once, on this machine:

(a) ``reference``: torch eager, each request alone on one model thread (a lock, in effect):
    the design of Weaviate's reference multi2vec-clip container, behind the same HTTP contract.
(b) ``ours``: the ONNX export (fp32, and int8 where the export kept int8 image graphs) on
    onnxruntime, with cross-request batching.

Each is driven through HTTP by ``--clients`` concurrent single-image ``/vectorize`` requests
(Weaviate's batch import sends one object per request, up to 2 x NumCPU in flight) from a lean
load generator (``benchmarks/http_load.py``: it shares the cores with the service), then by a
real Weaviate batch import of ``--objects`` images with that service as its vectorizer. The
bare onnxruntime session, at the mean batch size the service formed, bounds what serving can
reach: the best of one caller at 1 thread, one caller at one thread per core, and one
single-thread caller per core at once (onnxruntime releases the GIL while it runs, so these
run in parallel); the gap is the serving overhead. The
machine is shared and its speed drifts, so every side is up at once and measured in
``--rounds`` interleaved windows (imports likewise); every ratio is measured in this one run.
Composed queries (reference image + modification text:
the image, text and fusion graphs) are driven the same way for ``--composed-seconds``.

The serving floor (``--floor-seconds``): what every request costs in any service of this
design, measured here: uvicorn with the service's parser and loop running an app that only
reads the body (``benchmarks/floor_app.py``), the load generator's share, and the request's
own JSON, decode and preprocessing. With the model's work at its most efficient bare form, it
bounds what HTTP can reach on these cores: the most images/s, the least overhead, the most
int8/fp32.

The roofline: the image graph's FLOPs per image are counted from the plain ONNX graph (every
Conv / MatMul / Gemm, shapes from one run); a GEMM microbenchmark (one large onnxruntime
MatMul, fp32 and u8 x s8 int8, same thread count) gives this machine's achievable GFLOP/s in
the same run; each form of the image graph (plain and fused fp32, dynamic and static int8) is
timed as a bare session at 1 and the default number of threads and several batch sizes, and
printed as a fraction of that peak.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

import httpx
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.http_load import encode_bodies, post_loop
from benchmarks.proc import cpu_seconds
from cir_module.data.shapes import random_images
from cir_module.images import encode_image_base64
from cir_module.models import create_model
from cir_module.models.onnx_model import MANIFEST_NAME
from cir_module.models.preprocess import ImagePreprocessor
from cir_module.query import compose_query
from integration.ingest import ingest_objects
from integration.schema import create_image_collection
from integration.service_process import ServiceProcess
from integration.stack import connect
from integration.weaviate_server import WeaviateServer
from onnx_export import export_checkpoint

log = logging.getLogger("benchmark")


def drive_http(url: str, bodies: list[bytes], clients: int, seconds: float) -> dict:
    """``clients`` connections posting one body each to ``url``'s ``/vectorize`` for
    ``seconds`` (one image, or one composed query), with the lean load generator."""
    run = asyncio.run(post_loop(url, "/vectorize", bodies, clients, seconds))
    return {
        "images": run.requests,  # items: images, or composed queries
        "seconds": run.seconds,
        "latencies": run.latencies,
        "errors": run.errors,
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


def bare_session_run(session, pixels: np.ndarray, seconds: float, callers: int = 1) -> dict:
    """Images and seconds of an onnxruntime image ``session`` run on ``pixels`` for
    ``seconds`` by ``callers`` threads at once (onnxruntime releases the GIL while it runs)."""
    done = [0] * callers
    start = time.perf_counter()

    def call(k: int) -> None:
        while time.perf_counter() - start < seconds:
            session.run(None, {"pixel_values": pixels})
            done[k] += len(pixels)

    threads = [threading.Thread(target=call, args=(k,)) for k in range(1, callers)]
    for t in threads:
        t.start()
    call(0)
    for t in threads:
        t.join()
    return {"images": sum(done), "seconds": time.perf_counter() - start}


def mean_batch(url: str) -> float:
    stats = httpx.get(f"{url}/meta").json()["batching"].get("stats", {})
    return stats.get("image", {}).get("mean_batch_size", 1.0)


def measure(sides: dict, export: Path, images: list[str], args) -> dict:
    """Every side up at once, measured in interleaved rounds so that drift in the machine's
    speed (it is shared) reaches every side alike; totals over the rounds."""
    from cir_module.images import decode_base64_image
    from cir_module.models.onnx_model import onnxruntime_module, serving_session_options

    window = args.seconds / args.rounds
    totals = {side: {"images": 0, "seconds": 0.0, "latencies": [], "errors": 0} for side in sides}
    bodies = encode_bodies([{"images": [b]} for b in images])
    with contextlib.ExitStack() as stack:
        urls = {
            side: stack.enter_context(ServiceProcess(target, env=env)).url
            for side, (target, env) in sides.items()
        }
        for url in urls.values():  # warm-up: first forwards, allocator, caches
            drive_http(url, bodies, args.clients, min(3.0, window))
        # The bare image session at the batch the service formed: one caller at 1 thread and
        # at one per core, and one single-thread caller per core at once (what the service
        # runs with CIR_MODEL_WORKERS = cores). The overhead is taken against the best.
        ort = onnxruntime_module()
        manifest = json.loads((export / MANIFEST_NAME).read_text())
        preprocess = ImagePreprocessor(**manifest["preprocessing"])
        cores = os.cpu_count() or 1
        bare = {}
        for side in [s for s in sides if s in ("ours-fp32", "ours-int8")]:
            batch = max(1, round(mean_batch(urls[side])))
            pixels = preprocess([decode_base64_image(b) for b in images[:batch]])
            path = str(export / manifest["variants"][side.split("-")[1]]["files"]["image"])
            for threads, callers in sorted({(1, 1), (cores, 1), (1, cores)}):
                session = ort.InferenceSession(
                    path, serving_session_options(threads), providers=["CPUExecutionProvider"]
                )
                session.run(None, {"pixel_values": pixels})
                key = f"bare_{callers}x{threads}t"
                bare[(side, key)] = (session, pixels, callers)
                totals[side][key] = {"images": 0, "seconds": 0.0, "batch": batch}
        for r in range(args.rounds):
            log.info("round %d of %d", r + 1, args.rounds)
            for side, url in urls.items():
                run = drive_http(url, bodies, args.clients, window)
                for key in ("images", "seconds", "latencies", "errors"):
                    totals[side][key] += run[key]
                for (bare_side, key), (session, pixels, callers) in bare.items():
                    if bare_side == side:
                        run = bare_session_run(session, pixels, window, callers)
                        totals[side][key]["images"] += run["images"]
                        totals[side][key]["seconds"] += run["seconds"]
        for side, url in urls.items():
            totals[side]["mean_batch"] = mean_batch(url)
        if args.composed_seconds > 0:  # the text and fusion graphs too: composed queries
            texts = modification_texts(len(images))
            composed = encode_bodies(
                [{"texts": [compose_query(b, t)]} for b, t in zip(images, texts, strict=True)]
            )
            for side in sides:
                totals[side]["composed"] = {"queries": 0, "seconds": 0.0, "errors": 0}
            composed_window = args.composed_seconds / args.rounds
            for _ in range(args.rounds):
                for side, url in urls.items():
                    run = drive_http(url, composed, args.clients, composed_window)
                    totals[side]["composed"]["queries"] += run["images"]
                    totals[side]["composed"]["seconds"] += run["seconds"]
                    totals[side]["composed"]["errors"] += run["errors"]
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


def serving_floor(images: list[str], manifest: dict, args) -> dict:
    """Core-milliseconds per request that no vectorizer of this design avoids, measured on
    this machine: uvicorn with the service's parser and loop running an app that only reads
    the body and answers one vector (``benchmarks/floor_app.py``), the load generator's own
    share, and the request's own work in the service's functions, one image per request as
    Weaviate sends them: the JSON body parsed, the image decoded and preprocessed, the vector
    written as JSON."""
    from cir_module.images import decode_base64_image
    from cir_module.settings import ServiceSettings
    from integration.processes import free_port

    settings = ServiceSettings()
    port = free_port()
    command = [sys.executable, "-m", "uvicorn", "benchmarks.floor_app:app", "--lifespan", "off"]
    command += ["--host", "127.0.0.1", "--port", str(port), "--log-level", "warning"]
    command += ["--http", settings.http_parser, "--loop", settings.event_loop]
    root = Path(__file__).resolve().parents[1]
    dim = int(manifest["model"]["dimension"])
    server = subprocess.Popen(command, cwd=root, env={**os.environ, "FLOOR_DIM": str(dim)})
    url = f"http://127.0.0.1:{port}"
    try:
        for _ in range(200):
            with contextlib.suppress(httpx.TransportError):
                httpx.post(url, content=b"{}")
                break
            time.sleep(0.05)
        bodies = encode_bodies([{"images": [b]} for b in images])
        drive_http(url, bodies, args.clients, 1.0)
        server_before, ours_before = cpu_seconds(server.pid), time.process_time()
        run = drive_http(url, bodies, args.clients, args.floor_seconds)
        server_cpu = cpu_seconds(server.pid) - server_before
        load_cpu = time.process_time() - ours_before
    finally:
        server.terminate()
        server.wait()
    preprocess = ImagePreprocessor(**manifest["preprocessing"])
    side = preprocess.image_size
    vector = np.full((1, dim), 0.1234567, dtype=np.float32)
    start, n = time.process_time(), 0
    while time.process_time() - start < 2.0:
        (image,) = json.loads(bodies[n % len(bodies)])["images"]
        preprocess([decode_base64_image(image, min_side=side)])
        json.dumps({"textVectors": [], "imageVectors": vector.tolist()}, separators=(",", ":"))
        n += 1
    work = (time.process_time() - start) / n
    floor = {
        "http_server_ms": 1000 * server_cpu / run["images"],
        "load_generator_ms": 1000 * load_cpu / run["images"],
        "request_work_ms": 1000 * work,
        "floor_requests_per_s": run["images"] / run["seconds"],
    }
    floor["total_ms"] = sum(v for k, v in floor.items() if k.endswith("_ms"))
    return floor


def serving_bounds(results: dict, floor: dict) -> dict:
    """Per ours side: the most images/s any service could reach through HTTP on these cores,
    if every core did only the model's work (its most efficient bare form) and the floor's,
    with nothing idle; the least overhead and the most int8/fp32 that follow from it."""
    cores = os.cpu_count() or 1
    bounds = {}
    for side in ("ours-fp32", "ours-int8"):
        if side not in results:
            continue
        forms = {k: v for k, v in results[side].items() if k.startswith("bare_")}
        # Core-ms per image of each bare form: its callers x threads cores, busy throughout.
        model_ms = min(1000 * _form_cores(k) / v["images_per_s"] for k, v in forms.items())
        best = cores / ((model_ms + floor["total_ms"]) / 1000)
        bounds[side] = {
            "model_core_ms": model_ms,
            "best_images_per_s": best,
            # Where the floor is small against the model, the best form's rate per core, times
            # the cores, may exceed the bare rate measured on all of them: no overhead is bound.
            "least_overhead": max(0.0, 1 - best / results[side]["bare"]["images_per_s"]),
            "most_x_reference": best / results["reference"]["images_per_s"],
        }
    if len(bounds) == 2:
        bounds["most_int8_over_fp32"] = (
            bounds["ours-int8"]["best_images_per_s"] / bounds["ours-fp32"]["best_images_per_s"]
        )
    return bounds


def _form_cores(key: str) -> int:
    """``bare_2x1t`` -> 2: the cores a bare form keeps busy (callers x threads)."""
    callers, threads = key.removeprefix("bare_").removesuffix("t").split("x")
    return int(callers) * int(threads)


def modification_texts(n: int, seed: int = 0) -> list[str]:
    """``n`` modification texts as the synthetic benchmark phrases them."""
    import random

    from cir_module.data.shapes import modify, random_scene

    rng = random.Random(seed)
    return [modify(random_scene(rng), rng)[1] for _ in range(n)]


def roofline(export: Path, manifest: dict, images: list[str], batches: list[int], args) -> dict:
    """Bare image sessions of every form of the image graph (plain and fused fp32, dynamic
    and static int8), at ``batches`` and at 1 and the default number of threads, against
    this machine's GEMM peak measured in the same run; interleaved windows, totals."""
    from cir_module.images import decode_base64_image
    from cir_module.models.onnx_model import onnxruntime_module, serving_session_options
    from onnx_export.optimize import (
        calibration_pairs,
        fuse_for_cpu,
        quantize_dynamic_int8,
        quantize_static_qdq,
    )
    from onnx_export.roofline import gemm_peak, graph_flops

    ort = onnxruntime_module()
    preprocess = ImagePreprocessor(**manifest["preprocessing"])
    pixels = preprocess([decode_base64_image(b) for b in images[: max(batches)]])
    plain = export / "image.onnx"
    flops = graph_flops(plain, {"pixel_values": pixels[:1]})
    work = export / "roofline"
    work.mkdir(exist_ok=True)
    quantize_dynamic_int8(plain, work / "image.dynamic.onnx")
    fuse_for_cpu(plain, work / "image.opt.onnx", *manifest["optimization"]["attention"]["image"])
    calibration, _, source = calibration_pairs(args.calibration, args.calibration_size)
    cal = preprocess(calibration)
    quantize_static_qdq(
        plain,
        work / "image.static.onnx",
        [{"pixel_values": cal[i : i + 16]} for i in range(0, len(cal), 16)],
    )
    served = {v: manifest["variants"][v]["files"]["image"] for v in ("fp32", "int8")}
    int8_method = manifest.get("optimization", {}).get("int8", {}).get("method")
    files = {
        "plain fp32": plain,
        "fused fp32": work / "image.opt.onnx",
        "int8 dynamic": work / "image.dynamic.onnx",
        "int8 static": work / "image.static.onnx",
    }
    if served["int8"].endswith(".int8.onnx"):  # what ours-int8 serves, by its method
        files[f"int8 {int8_method}"] = export / served["int8"]
    if served["fp32"].endswith(".opt.onnx"):
        files["fused fp32"] = export / served["fp32"]
    files = {n: p for n, p in files.items() if p.is_file()}
    # The rows the service runs are starred.
    ours = {n for n, p in files.items() if p.name in served.values()}
    default_threads = os.cpu_count() or 1
    sessions = {
        (name, threads): ort.InferenceSession(
            str(path), serving_session_options(threads), providers=["CPUExecutionProvider"]
        )
        for name, path in files.items()
        for threads in sorted({1, default_threads})
    }
    reference = sessions[("plain fp32", default_threads)].run(None, {"pixel_values": pixels})[0]
    cosine = {
        name: float((s.run(None, {"pixel_values": pixels})[0] * reference).sum(1).min())
        for (name, threads), s in sessions.items()
        if threads == default_threads
    }
    peaks = {
        threads: {"fp32": gemm_peak(threads), "int8": gemm_peak(threads, int8=True)}
        for threads in sorted({1, default_threads})
    }
    window = args.roofline_seconds / args.rounds / (len(sessions) * len(batches))
    totals = {(key, b): [0, 0.0] for key in sessions for b in batches}
    for _ in range(args.rounds):
        for b in batches:
            for key, session in sessions.items():
                run = bare_session_run(session, pixels[:b], window)
                totals[(key, b)][0] += run["images"]
                totals[(key, b)][1] += run["seconds"]
    for threads, peak in peaks.items():  # the best of both ends of the run
        peak["fp32"] = max(peak["fp32"], gemm_peak(threads))
        peak["int8"] = max(peak["int8"], gemm_peak(threads, int8=True))
    rows = []
    for ((name, threads), b), (done, seconds) in totals.items():
        rate = done / seconds
        gflops = rate * flops["total"] / 1e9
        rows.append(
            {
                "form": f"{name} *" if name in ours else name,
                "file": files[name].name,
                "threads": threads,
                "batch": b,
                "images_per_s": rate,
                "gflop_per_s": gflops,
                "of_fp32_peak": gflops / peaks[threads]["fp32"],
                "of_int8_peak": gflops / peaks[threads]["int8"],
                "min_cosine_vs_plain": cosine[name],
            }
        )
    return {"flops_per_image": flops, "peaks": peaks, "calibration": source, "rows": rows}


def summarise(t: dict) -> dict:
    lat = t.pop("latencies")
    out = {
        "images_per_s": t["images"] / t["seconds"],
        "p50_ms": 1000 * statistics.median(lat),
        "p95_ms": 1000 * float(np.percentile(lat, 95)),
        **t,
    }
    bare = {k: v for k, v in t.items() if k.startswith("bare_")}
    for b in bare.values():
        b["images_per_s"] = b["images"] / b["seconds"]
    if bare:
        best = max(bare, key=lambda k: bare[k]["images_per_s"])
        out["bare"] = {**bare[best], "form": best.removeprefix("bare_")}
    if "composed" in t:
        out["composed"]["queries_per_s"] = t["composed"]["queries"] / t["composed"]["seconds"]
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
    parser.add_argument("--model", default="clip-vit-b32-scratch", help="config, random weights")
    parser.add_argument("--checkpoint", help="serve this checkpoint instead of --model")
    parser.add_argument("--int8", choices=["dynamic", "static"], default="dynamic")
    parser.add_argument("--calibration", help="static int8: benchmark folder (train split)")
    parser.add_argument("--calibration-size", type=int, default=256)
    parser.add_argument("--optimize", action="store_true", help="serve the fused fp32 graphs")
    parser.add_argument("--composed-seconds", type=float, default=16.0, help="0: skip")
    parser.add_argument("--roofline-seconds", type=float, default=96.0, help="0: skip")
    parser.add_argument(
        "--floor-seconds", type=float, default=10.0, help="serving floor's HTTP window; 0: skip"
    )
    parser.add_argument("--skip-weaviate", action="store_true")
    parser.add_argument(
        "--also",
        action="append",
        default=[],
        metavar="NAME:VAR=VALUE[,VAR=VALUE]",
        help="one more side with these CIR_* settings (repeatable), named VARIANT:NAME "
        "(CIR_ONNX_VARIANT, fp32 unless set), e.g. "
        "workers-2:CIR_MODEL_WORKERS=2 or w2:CIR_ONNX_VARIANT=int8,CIR_MODEL_WORKERS=2",
    )
    parser.add_argument("--json-out")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)

    work = Path(tempfile.mkdtemp(prefix="cir-bench-"))
    if args.checkpoint:
        checkpoint = Path(args.checkpoint)
    else:
        checkpoint = work / "ckpt"
        create_model(args.model).save_pretrained(checkpoint)
    manifest = export_checkpoint(
        checkpoint,
        work / "onnx",
        variants=("fp32", "int8"),
        optimize=args.optimize,
        int8=args.int8,
        calibration=args.calibration,
        calibration_size=args.calibration_size,
    )
    images = [encode_image_base64(im) for im in random_images(max(args.objects, 4 * args.clients))]

    int8_image = manifest["variants"]["int8"]["files"]["image"].endswith(".int8.onnx")
    sides = {
        "reference": (str(checkpoint), {"CIR_CROSS_REQUEST_BATCHING": "false"}),
        "ours-fp32": (str(work / "onnx"), {"CIR_ONNX_EXPORT": str(work / "onnx")}),
    }
    if int8_image:
        sides["ours-int8"] = (
            str(work / "onnx"),
            {"CIR_ONNX_EXPORT": str(work / "onnx"), "CIR_ONNX_VARIANT": "int8"},
        )
    for spec in args.also:  # the same graphs under other settings: their share, measured
        name, _, assignments = spec.partition(":")
        env = dict(a.split("=", 1) for a in assignments.split(",") if a)
        variant = env.get("CIR_ONNX_VARIANT", "fp32")
        if f"ours-{variant}" not in sides:
            parser.error(f"--also {spec}: no ours-{variant} side to compare it with")
        sides[f"{variant}:{name}"] = (
            str(work / "onnx"),
            {"CIR_ONNX_EXPORT": str(work / "onnx"), **env},
        )
    results = measure(sides, work / "onnx", images, args)
    if args.floor_seconds > 0:
        results["floor"] = serving_floor(images, manifest, args)
        results["bounds"] = serving_bounds(results, results["floor"])
    if args.roofline_seconds > 0:
        served = round(results["ours-fp32"]["mean_batch"])
        batches = sorted({1, max(1, served), 32})
        results["roofline"] = roofline(work / "onnx", manifest, images, batches, args)
    report(results, args, manifest)
    if args.json_out:
        Path(args.json_out).write_text(json.dumps(results, indent=2))


def report(results: dict, args, manifest: dict) -> None:
    sides = {k: v for k, v in results.items() if k not in ("roofline", "floor", "bounds")}
    ref = sides["reference"]
    print(
        f"\n{args.checkpoint or args.model}, {args.clients} concurrent clients, "
        f"{os.cpu_count()} CPU cores, int8 {args.int8}"
    )
    print(
        f"{'side':20s} {'img/s':>8s} {'p50 ms':>8s} {'p95 ms':>8s} {'batch':>6s} "
        f"{'x ref':>6s} {'x fp32':>6s} {'wv obj/s':>9s} {'x ref':>6s} {'bare img/s':>10s} "
        f"{'overhead':>8s} {'cq/s':>7s} {'x ref':>6s}"
    )
    nan = float("nan")
    for side, r in sides.items():
        wv = r.get("weaviate", {}).get("objects_per_s", nan)
        ref_wv = ref.get("weaviate", {}).get("objects_per_s", nan)
        # An extra side serves the graphs of its variant's ours side: that bare session
        # bounds it too.
        variant, extra, _ = side.partition(":")
        bound = sides[f"ours-{variant}"] if extra else r
        bare = bound.get("bare", {}).get("images_per_s", nan)
        composed = r.get("composed", {}).get("queries_per_s", nan)
        ref_composed = ref.get("composed", {}).get("queries_per_s", nan)
        fp32 = sides["ours-fp32"]["images_per_s"]
        print(
            f"{side:20s} {r['images_per_s']:8.1f} {r['p50_ms']:8.1f} {r['p95_ms']:8.1f} "
            f"{r['mean_batch']:6.1f} {r['images_per_s'] / ref['images_per_s']:6.2f} "
            f"{r['images_per_s'] / fp32:6.2f} {wv:9.1f} {wv / ref_wv:6.2f} {bare:10.1f} "
            f"{1 - r['images_per_s'] / bare:8.1%} {composed:7.1f} {composed / ref_composed:6.2f}"
        )
    print("(cq/s: composed queries per second through HTTP: the image, text and fusion graphs)")
    for side, r in sides.items():
        forms = {k.removeprefix("bare_"): v for k, v in r.items() if k.startswith("bare_")}
        if forms:
            batch = next(iter(forms.values()))["batch"]
            listed = ", ".join(f"{k} {v['images_per_s']:.1f}" for k, v in forms.items())
            print(f"bare {side} at batch {batch} (callers x threads): {listed} img/s")
    for variant in ("fp32", "int8"):
        parity = manifest.get("parity", {}).get(variant, {})
        kept = {**parity.get("kept_fp32", {}), **parity.get("kept_plain", {})}
        if kept:
            print(f"{variant} graphs kept in a safer form by the export's parity check: {kept}")
    print(f"fusions: {manifest.get('optimization', {}).get('fusions', {})}")
    errors = {side: r["errors"] for side, r in sides.items() if r["errors"]}
    errors.update(
        {
            f"{s} composed": r["composed"]["errors"]
            for s, r in sides.items()
            if r.get("composed", {}).get("errors")
        }
    )
    print(f"HTTP errors: {errors or 'none'}")
    if "floor" in results:
        report_floor(results["floor"], results["bounds"])
    if "roofline" in results:
        report_roofline(results["roofline"])


def report_floor(floor: dict, bounds: dict) -> None:
    print(
        f"\nserving floor per request, core-ms: HTTP server {floor['http_server_ms']:.3f} "
        f"(an app that only reads the body: {floor['floor_requests_per_s']:.0f} req/s), load "
        f"generator {floor['load_generator_ms']:.3f}, the request's own work (JSON in and out, "
        f"decode, preprocess) {floor['request_work_ms']:.3f}; total {floor['total_ms']:.3f}"
    )
    for side in ("ours-fp32", "ours-int8"):
        if side in bounds:
            b = bounds[side]
            print(
                f"  {side}: model {b['model_core_ms']:.3f} core-ms per image at best; through "
                f"HTTP at most {b['best_images_per_s']:.1f} img/s ({b['most_x_reference']:.2f}x "
                f"the reference), so overhead at least {b['least_overhead']:.1%}"
            )
    if "most_int8_over_fp32" in bounds:
        print(f"  int8 / fp32 through HTTP at most {bounds['most_int8_over_fp32']:.2f}x")


def report_roofline(roof: dict) -> None:
    flops = roof["flops_per_image"]
    parts = ", ".join(f"{k} {v / 1e9:.3f}" for k, v in flops.items() if k != "total")
    print(f"\nroofline: image graph {flops['total'] / 1e9:.3f} GFLOP per image ({parts})")
    for threads, peak in roof["peaks"].items():
        print(
            f"  GEMM peak, {threads} thread(s): fp32 {peak['fp32']:.1f} GFLOP/s, "
            f"int8 {peak['int8']:.1f} GOP/s"
        )
    print(f"  static int8 calibrated on {roof['calibration']}; * = the graph the service runs")
    print(
        f"{'form':13s} {'file':20s} {'thr':>3s} {'batch':>5s} {'img/s':>8s} {'GFLOP/s':>8s} "
        f"{'%fp32pk':>7s} {'%int8pk':>7s} {'min cos':>8s}"
    )
    for r in sorted(roof["rows"], key=lambda r: (r["threads"], r["batch"])):
        print(
            f"{r['form']:13s} {r['file']:20s} {r['threads']:3d} {r['batch']:5d} "
            f"{r['images_per_s']:8.1f} {r['gflop_per_s']:8.1f} {r['of_fp32_peak']:7.1%} "
            f"{r['of_int8_peak']:7.1%} {r['min_cosine_vs_plain']:8.5f}"
        )


if __name__ == "__main__":
    main()
