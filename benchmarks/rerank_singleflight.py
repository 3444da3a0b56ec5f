"""Weaviate's rerank fan-out: one query's candidates in concurrent chunks, with the query side
computed once (single-flight) against once per chunk, same weights, same scores.

    python benchmarks/rerank_singleflight.py [--candidates 256] [--chunks 8] [--queries 6]

Weaviate splits a rerank into chunks of 32 documents and sends them at once, each with the
whole query. Two real services (`cir serve`) with the shipped retriever and a small
Qwen2-VL-type LVLM reranker (random weights, RAug-Rep off) score the same composed queries,
``--candidates`` each in ``--chunks`` concurrent /rerank requests: one with single-flight on
(the default), one with ``CIR_RERANK_SINGLE_FLIGHT=false``. Printed, measured in this one run:
the query-side computations per query (composed embedding and LVLM prefix), the wall time per
query (median over ``--queries``, after a warm-up that fills the candidate embedding cache),
their ratio, and the largest score difference between the two.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from pathlib import Path

import httpx
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from cir_module import compose_query
from cir_module.checkpoints import shipped_checkpoint
from cir_module.data.shapes import random_images
from cir_module.images import encode_image_base64
from cir_module.rerank.tiny import build_tiny_reranker
from integration.service_process import ServiceProcess


async def one_query(url: str, query: str, documents: list[str], chunks: int) -> np.ndarray:
    size = -(-len(documents) // chunks)
    parts = [documents[i : i + size] for i in range(0, len(documents), size)]
    async with httpx.AsyncClient(timeout=300) as http:
        answers = await asyncio.gather(
            *(http.post(f"{url}/rerank", json={"query": query, "documents": p}) for p in parts)
        )
    for a in answers:
        a.raise_for_status()
    return np.array([s["score"] for a in answers for s in a.json()["scores"]])


def flights(url: str) -> int:
    return httpx.get(f"{url}/meta").json()["admission"]["rerank"]["query_side"]["computed"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--candidates", type=int, default=256)
    parser.add_argument("--chunks", type=int, default=8)
    parser.add_argument("--queries", type=int, default=6)
    parser.add_argument("--hidden", type=int, default=128)
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--image-side", type=int, default=112)
    args = parser.parse_args()

    folder = Path(tempfile.mkdtemp(prefix="cir-sf-bench-")) / "reranker"
    build_tiny_reranker(
        folder, hidden=args.hidden, layers=args.layers, heads=4, vision_depth=2, vision_width=64
    )
    images = [
        encode_image_base64(im) for im in random_images(args.candidates + args.queries + 1, seed=5)
    ]
    documents, references = images[: args.candidates], images[args.candidates :]
    queries = [compose_query(r, f"make object {i} blue") for i, r in enumerate(references)]
    env = {
        "CIR_RERANKER_MODEL": str(folder),
        "CIR_RERANKER_IMAGE_SIDE": str(args.image_side),
        "CIR_RERANKER_BATCH_SIZE": "32",
    }
    print(
        f"{args.candidates} candidates per query in {args.chunks} concurrent chunks, "
        f"{args.queries} queries; retriever {shipped_checkpoint().name}, LVLM reranker "
        f"hidden {args.hidden}, {args.layers} layers"
    )
    settings = {"single-flight": "true", "per chunk": "false"}
    services = {
        name: ServiceProcess(shipped_checkpoint(), env={**env, "CIR_RERANK_SINGLE_FLIGHT": flag})
        for name, flag in settings.items()
    }
    times: dict[str, list[float]] = {name: [] for name in settings}
    scores: dict[str, list[np.ndarray]] = {name: [] for name in settings}
    results = {}
    try:
        for svc in services.values():
            svc.start()
            asyncio.run(one_query(svc.url, queries[0], documents, args.chunks))  # warm-up
        before = {name: flights(svc.url) for name, svc in services.items()}
        for i, q in enumerate(queries[1:]):
            # Interleaved, the order alternating: drift of the machine reaches both alike.
            order = list(services) if i % 2 == 0 else list(reversed(services))
            for name in order:
                start = time.perf_counter()
                scores[name].append(
                    asyncio.run(one_query(services[name].url, q, documents, args.chunks))
                )
                times[name].append(time.perf_counter() - start)
        for name, svc in services.items():
            per_query = (flights(svc.url) - before[name]) / len(queries[1:])
            results[name] = (per_query, statistics.median(times[name]))
            print(
                f"{name:>14s}: {per_query:5.1f} query-side computations per query, "
                f"{statistics.median(times[name]):7.3f} s per query (median)"
            )
    finally:
        for svc in services.values():
            svc.stop()
    (c_on, t_on), (c_off, t_off) = results["single-flight"], results["per chunk"]
    diff = float(np.abs(np.stack(scores["single-flight"]) - np.stack(scores["per chunk"])).max())
    print(
        f"single-flight saves {c_off - c_on:.0f} of {c_off:.0f} query-side computations per "
        f"query; wall-time ratio per chunk / single-flight {t_off / t_on:.2f}x; "
        f"max |score diff| {diff:.2e}"
    )


if __name__ == "__main__":
    main()
