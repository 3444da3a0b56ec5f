"""Load report: 2 x NumCPU clients mixing /vectorize and /rerank against the real service.

    python benchmarks/load.py [--seconds 60] [--checkpoint <folder>]

Prints per endpoint the request count, errors, throughput and p50 / p95 / p99 latency, and the
service's resident memory after warm-up and at the end (growth would be a leak: the embedding
cache is bounded, so after warm-up it must stay flat). Loopback only.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import sys
import time
from pathlib import Path

import httpx
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.proc import memory
from cir_module import compose_query
from cir_module.checkpoints import shipped_checkpoint
from cir_module.data.shapes import random_images
from cir_module.images import encode_image_base64
from integration.service_process import ServiceProcess

QUANTILES = (50, 95, 99)


def rss_mib(pid: int) -> float:
    return memory(pid).get("rss", float("nan")) / 2**20


async def drive(url: str, pool: list[str], clients: int, seconds: float) -> dict:
    """``clients`` loops, each request a vectorize (3 in 4) or a rerank of 32 candidates."""
    stats: dict[str, dict] = {e: {"lat": [], "errors": 0} for e in ("vectorize", "rerank")}
    stop = time.perf_counter() + seconds

    async def client(k: int, http: httpx.AsyncClient) -> None:
        rng = random.Random(k)
        while time.perf_counter() < stop:
            if rng.random() < 0.75:
                endpoint, body = "vectorize", {"images": [rng.choice(pool)]}
            else:
                query = compose_query(rng.choice(pool), "make the small red circle blue")
                endpoint, body = "rerank", {"query": query, "documents": rng.sample(pool, 32)}
            start = time.perf_counter()
            r = await http.post(f"{url}/{endpoint}", content=json.dumps(body).encode())
            if r.status_code == 200:
                stats[endpoint]["lat"].append(time.perf_counter() - start)
            else:
                stats[endpoint]["errors"] += 1

    began = time.perf_counter()
    async with httpx.AsyncClient(timeout=120) as http:
        await asyncio.gather(*(client(k, http) for k in range(clients)))
    elapsed = time.perf_counter() - began
    report = {}
    for endpoint, s in stats.items():
        lat = np.array(s["lat"]) * 1000
        report[endpoint] = {
            "requests": len(lat),
            "errors": s["errors"],
            "per_s": len(lat) / elapsed,
            **{f"p{q}_ms": float(np.percentile(lat, q)) if len(lat) else None for q in QUANTILES},
        }
    return report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--clients", type=int, default=2 * (os.cpu_count() or 1))
    parser.add_argument("--checkpoint", default=str(shipped_checkpoint()))
    parser.add_argument("--json-out")
    args = parser.parse_args()
    pool = [encode_image_base64(im) for im in random_images(200)]
    with ServiceProcess(args.checkpoint) as service:
        pid = service.pid
        asyncio.run(drive(service.url, pool, args.clients, 10))  # warm-up: caches fill
        rss_start = rss_mib(pid)
        report = asyncio.run(drive(service.url, pool, args.clients, args.seconds))
        rss_end = rss_mib(pid)
    report["rss_mib"] = {"after_warmup": rss_start, "end": rss_end, "growth": rss_end - rss_start}
    print(f"{args.clients} clients, {args.seconds:.0f} s, {os.cpu_count()} CPU cores")
    for endpoint in ("vectorize", "rerank"):
        r = report[endpoint]
        print(
            f"{endpoint:10s} {r['requests']:6d} ok {r['errors']:4d} errors {r['per_s']:7.1f}/s "
            f"p50 {r['p50_ms']:7.1f} ms  p95 {r['p95_ms']:7.1f} ms  p99 {r['p99_ms']:7.1f} ms"
        )
    m = report["rss_mib"]
    print(f"resident memory: {m['after_warmup']:.0f} MiB after warm-up, {m['end']:.0f} MiB at end")
    if args.json_out:
        Path(args.json_out).write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
