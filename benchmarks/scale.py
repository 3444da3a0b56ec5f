"""How cost grows with the gallery, through a real Weaviate 1.39.0 (issue 45): import, memory
and disk per index, composed-query latency with and without the second stage, recall of each
index against the exact ranking, and quality as distractors are added. One command, sizes as
flags, resumable.

    # 1k and 10k in one command (the issue's target: under 30 minutes on the 2-core machine)
    .venv/bin/python benchmarks/scale.py --data .cache/data/hard-s0 --sizes 1000 10000
    # 100k, once, separately, into the same folder (its rows join the others in the tables)
    .venv/bin/python benchmarks/scale.py --data .cache/data/hard-s0 --sizes 100000
    # tables (and, with --plots, the PNGs in docs/images/) from what runs/scale/ holds
    .venv/bin/python benchmarks/scale.py --report-only --plots
    # a smoke run (tiny sizes, its own folder; docs/images/ untouched without --plots)
    .venv/bin/python benchmarks/scale.py --sizes 300 600 --queries 30 --rerank-queries 10 \\
        --clients 1 4 --tune-objects 150 --out runs/scale-smoke

``.cache/data/hard-s0`` is ``cir data shapes .cache/data/hard-s0 --seed 0 --tier hard``.

**Galleries.** The queries are the first ``--queries`` triplets of the data set's test split
(the hard tier); their image sets (reference, target, hard negative) form the *own* gallery.
A gallery of N images is the own gallery plus N - |own| distractors: scenes drawn by the hard
tier's own ``random_scene`` and ``render`` from random generators keyed
``scale-distractor:SEED:i`` (a key space the data set's generator never uses, so no draw is
shared), and any scene that equals one of the data set's scenes (any split) or an earlier
distractor is skipped. Distractor i is the same image in every gallery, so the galleries nest
(1k in 10k in 100k) and the PNGs rendered once (``OUT/distractors/``) serve every size.

**Steps**, each one JSON file ``OUT/results/SIZE/STEP.json``, skipped when present (``--redo``
runs it again); the ONNX export (``OUT/onnx``) and the rendered PNGs are cached too:

* ``export`` (once): ``cir export``'s ``export_checkpoint`` of the first stage, fp32 and int8
  (dynamic int8, the export's default; a graph whose int8 form misses the export's parity
  check stays fp32 in the int8 variant, and the step records which).
* ``tune`` (once, unless ``--batch-size``, ``--concurrency`` and ``--model-workers`` are
  all given): ``--tune-objects`` images imported through the vectorizer (fp32) for every
  client batch size (``--tune-batch-sizes``, default 16 and 64; ``cir ingest`` sends 16),
  number of concurrent batch requests (``--tune-concurrency``, 2, 4 and 8; ``cir ingest``: 2)
  and the service's ``CIR_MODEL_WORKERS`` (``--tune-workers``, 1 and 2). Every import below
  uses the fastest setting, or among those within 5 % of it (noise on a shared machine) the
  one with the fewest workers, then concurrent batches, then the smallest batches.
* ``gallery``: the gallery's make-up and the seconds spent rendering new distractors.
* ``import-fp32``, ``import-int8``: a fresh service on onnxruntime (``CIR_ONNX_EXPORT``,
  ``CIR_ONNX_VARIANT``, no reranker loaded) and a fresh Weaviate; the gallery sent through
  ``integration.ingest.ingest_objects`` (what ``cir ingest`` calls: fixed-size batches,
  checked through ``failed_objects``) into an HNSW collection made by ``create_image_collection``
  (the product's schema, images stored as blobs). Measured: objects/s; CPU seconds of the
  service, of Weaviate and of this client during the import (the service's share of the
  time against Weaviate's, from ``/proc/PID/stat``); the service's ``/vectorize`` requests
  and mean model batch (its ``/metrics``); RSS of both (``/proc/PID/status``); Weaviate's data
  folder on disk, live and after a clean stop; Weaviate's RSS after a restart and a few queries
  (at rest). The first variant's import writes every stored vector to ``OUT/vectors/``.
* ``index-NAME`` for each index in ``--indexes``: the *same* vectors inserted directly
  (bring-your-own vectors, no vectorizer call) into a fresh collection in a fresh Weaviate:
  ``hnsw``, ``flat``, and HNSW with each compression (``hnsw-pq``, ``hnsw-bq``, ``hnsw-sq``,
  ``hnsw-rq``: 8-bit RQ; ``hnsw-rq1``: 1-bit RQ, not in the default list). BQ and RQ are
  set at creation (no training); PQ and SQ are enabled by a config update once the vectors are
  in, with ``trainingLimit`` = min(100 000, N), since Weaviate's automatic trigger (AutoPQ)
  needs async indexing, which this server does not run. Measured: Weaviate's RSS empty, after
  the build (and its peak), after a restart and the query passes (per object: minus the empty
  server's); the data folder after a clean stop; the first stage's latency at each
  ``--clients`` (the ``nearText`` still goes through the service, which encodes the composed
  query); the 1-client pass's top ``--k`` per query, from which the report takes recall@K of
  each index against ``flat`` (exact). Objects carry ``name`` and ``source`` only: these
  figures are the index's, the images' blobs are in the import step's disk figure.
* ``queries``: a fresh service as shipped with the hard tier (the first stage on onnxruntime
  fp32 and the shipped change verifier, as `cir serve` runs it by default: on onnxruntime through
  its cached export, ``CIR_RERANKER_RUNTIME=auto``) and a fresh
  Weaviate holding the gallery (its stored vectors and its image blobs, inserted directly)
  in HNSW. Each query's composed ``nearText`` (limit K + 1, the reference dropped from what
  comes back, as the evaluations rank) at every ``--clients``, then the first
  ``--rerank-queries`` of them with the second stage: ``nearText`` (limit K, the reference
  filtered out) with ``rerank(property: "image")``. p50 / p90 / p99 of each, CPU per query of
  the service and of Weaviate; R@1 / R@K of the first stage (all queries, and the reranked
  ones) and after the rerank. At the size ``own`` (the own gallery alone, no distractor) only
  this step runs, from the smallest size's vectors.

**Why the second stage reads the image property.** ``rerank(property: "caption")`` needs a
stored caption for every image, the 100k distractors included: the verifier's captioner
costs about 40-370 ms per image, hours on 2 cores. With ``property: "image"`` the service
captions only the K candidates that actually come back (cached by their pixels, so a
candidate is captioned once per service), and it ranks them as it ranks stored captions (the
same top-10 order for 1000 of 1000 queries, docs/results.md, issue 42): the quality figures
are the product's, and only the first pass carries the captioning. That is why
``--rerank-queries`` is a separate, smaller count, and why the rerank passes at 4 and 16 clients
(the same queries again, their candidates' captions cached) cost the service less CPU per
query than the first.

**Defaults.** ``--queries 300`` (an own gallery of about 900 images, inside 1k),
``--rerank-queries 100``, ``--clients 1 4 16``, ``--k 10``, ``--indexes`` all but
``hnsw-rq1``, ``--variants fp32 int8`` (fp32's vectors feed the index and query steps).

**Memory readings.** RSS (``VmRSS``, and the peak ``VmHWM``) of each process from
``/proc/PID/status``; for Weaviate also its Go heap after a forced garbage collection
(``HeapAlloc`` from the debug listener's ``/debug/pprof/heap?gc=1``), the live data without
the garbage that RSS still holds. Per object: the reading less an empty server's, divided by
N; the report's per-object figure is the least-squares slope over the sizes measured. The
Weaviates started here differ from ``integration``'s in two benchmark-only settings: the
debug listener is on (a free port), and ``RAFT_TIMEOUTS_MULTIPLIER=1`` (a single node elects
itself in about 2 s instead of 9; imports and queries do not wait on Raft).

Every run ends by writing ``OUT/summary.json`` and ``OUT/summary.md`` (the tables, the
1M / 10M projection); ``--plots`` writes ``docs/images/scale-*.png`` (matplotlib, not a
dependency of the package: ``pip install matplotlib`` where the plots are made). Each run's
arguments and wall time are appended to ``OUT/runs.jsonl`` (the summary lists them).
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import json
import logging
import math
import os
import random
import shutil
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from multiprocessing import get_all_start_methods, get_context
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import httpx
import numpy as np
from weaviate import WeaviateClient
from weaviate.classes.config import (
    Configure,
    Reconfigure,
    VectorDistances,
)
from weaviate.classes.query import Filter, Rerank
from weaviate.collections import Collection
from weaviate.exceptions import WeaviateBaseError

from benchmarks.proc import cpu_seconds, memory
from cir_module.checkpoints import HARD_TIER_MODEL, HARD_TIER_VERIFIER, shipped_checkpoint
from cir_module.data import hard
from cir_module.data.benchmark import load_scene_graphs
from cir_module.eval.inprocess import EvalSplit
from cir_module.eval.metrics import recall_percent
from integration.evaluate import composed_query
from integration.ingest import ingest_objects, object_uuid
from integration.processes import free_port
from integration.schema import create_image_collection
from integration.service_process import ServiceProcess
from integration.stack import connect
from integration.weaviate_server import WEAVIATE_VERSION, WeaviateServer

log = logging.getLogger("scale")

VECTOR = "default"  # the named vector create_image_collection makes
OWN = "own"  # the size key of the own gallery (the queries' image sets, no distractor)
ONNX_VARIANTS = ("fp32", "int8")
SETTLE_S = 2.0  # before a memory reading: let the server finish what a request left running
DEFAULT_SIZES = (1000, 10000)
DEFAULT_CLIENTS = (1, 4, 16)
# Weaviate's default HNSW maxConnections (the documented memory model's graph term).
HNSW_MAX_CONNECTIONS = 32
# The documented cost of one HNSW link (resources page: "8-10B"; its example uses 10).
BYTES_PER_LINK = 10
CPU_CORES = os.cpu_count() or 1


# --------------------------------------------------------------------------- indexes


@dataclass(frozen=True)
class IndexSpec:
    """One vector index to measure: ``kind`` (``hnsw`` or ``flat``) and its compression.

    ``after_insert``: the compression is switched on by a config update once the vectors are
    in (PQ and SQ train on the data; their automatic trigger needs async indexing)."""

    name: str
    kind: str
    quantizer: str | None = None
    after_insert: bool = False

    def create_config(self) -> Any:
        """The ``vector_index_config`` the collection is created with."""
        if self.kind == "flat":
            return Configure.VectorIndex.flat(distance_metric=VectorDistances.COSINE)
        quantizers = {
            "bq": Configure.VectorIndex.Quantizer.bq,
            "rq8": lambda: Configure.VectorIndex.Quantizer.rq(bits=8),
            "rq1": lambda: Configure.VectorIndex.Quantizer.rq(bits=1),
        }
        at_creation = self.quantizer and not self.after_insert
        return Configure.VectorIndex.hnsw(
            distance_metric=VectorDistances.COSINE,
            quantizer=quantizers[self.quantizer]() if at_creation else None,
        )

    def update_config(self, objects: int) -> Any:
        """The config update that switches the compression on (``after_insert`` only)."""
        limit = min(100_000, objects)
        quantizer = {
            "pq": lambda: Reconfigure.VectorIndex.Quantizer.pq(training_limit=limit),
            "sq": lambda: Reconfigure.VectorIndex.Quantizer.sq(training_limit=limit),
        }[self.quantizer or ""]()
        return Reconfigure.Vectors.update(
            name=VECTOR, vector_index_config=Reconfigure.VectorIndex.hnsw(quantizer=quantizer)
        )


INDEXES = {
    spec.name: spec
    for spec in (
        IndexSpec("hnsw", "hnsw"),
        IndexSpec("flat", "flat"),
        IndexSpec("hnsw-pq", "hnsw", "pq", after_insert=True),
        IndexSpec("hnsw-bq", "hnsw", "bq"),
        IndexSpec("hnsw-sq", "hnsw", "sq", after_insert=True),
        IndexSpec("hnsw-rq", "hnsw", "rq8"),
        IndexSpec("hnsw-rq1", "hnsw", "rq1"),
    )
}
DEFAULT_INDEXES = ("hnsw", "flat", "hnsw-pq", "hnsw-bq", "hnsw-sq", "hnsw-rq")


def create_scale_collection(client: WeaviateClient, name: str, spec: IndexSpec) -> Collection:
    """The product's collection (``create_image_collection``: ``image`` blob vectorised by
    multi2vec-clip, cosine, the transformers reranker; ``name`` and ``source`` as unvectorised
    text) on ``spec``'s index."""
    return create_image_collection(
        client,
        name,
        text_properties=("name", "source"),
        vector_name=VECTOR,
        vector_index_config=spec.create_config(),
    )


# --------------------------------------------------------------------------- measurements


def weaviate_memory(server: WeaviateServer) -> dict[str, int]:
    """:func:`memory` of a Weaviate started by :meth:`ScaleRun.weaviate`, plus its Go heap after
    a forced garbage collection (``HeapAlloc``, ``HeapInuse`` of the debug listener's
    ``/debug/pprof/heap?gc=1``): the live data, without the garbage RSS still holds."""
    assert server.pid is not None
    out = memory(server.pid)
    port = server.extra_env["GO_PROFILING_PORT"]
    answer = httpx.get(
        f"http://127.0.0.1:{port}/debug/pprof/heap", params={"gc": 1, "debug": 1}, timeout=60
    )
    answer.raise_for_status()
    for line in answer.text.splitlines():
        for name, key in (("# HeapAlloc = ", "heap_alloc"), ("# HeapInuse = ", "heap_inuse")):
            if line.startswith(name):
                out[key] = int(line[len(name) :])
    return out


def disk_bytes(folder: Path) -> int:
    """Bytes the files under ``folder`` take on disk (allocated blocks, as ``du``)."""
    total = 0
    for root, _, files in os.walk(folder):
        for name in files:
            with contextlib.suppress(FileNotFoundError):  # compacted away meanwhile
                total += os.lstat(os.path.join(root, name)).st_blocks * 512
    return total


def service_counters(url: str) -> dict[str, float]:
    """The service's ``/vectorize`` request count and seconds, and its model forwards (items
    and count per kind), from its Prometheus ``/metrics``."""
    from prometheus_client.parser import text_string_to_metric_families

    out: dict[str, float] = {}
    text = httpx.get(f"{url}/metrics", timeout=10).text
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            labels = sample.labels
            if sample.name.startswith("cir_request_seconds") and labels.get("endpoint") in (
                "/vectorize",
                "/rerank",
            ):
                suffix = sample.name.rsplit("_", 1)[1]
                if suffix in ("count", "sum"):
                    out[f"{labels['endpoint'][1:]}_{suffix}"] = sample.value
            elif sample.name in ("cir_batch_size_count", "cir_batch_size_sum"):
                out[f"batch_{labels.get('kind')}_{sample.name.rsplit('_', 1)[1]}"] = sample.value
    return out


def latency_summary(latencies_s: Sequence[float]) -> dict[str, float]:
    """p50 / p90 / p99 and the mean of ``latencies_s`` (seconds), in milliseconds."""
    values = np.asarray([v for v in latencies_s if not math.isnan(v)], dtype=np.float64)
    if values.size == 0:
        return {}
    p50, p90, p99 = np.percentile(values, [50, 90, 99]) * 1000
    return {
        "p50_ms": round(float(p50), 1),
        "p90_ms": round(float(p90), 1),
        "p99_ms": round(float(p99), 1),
        "mean_ms": round(float(values.mean()) * 1000, 1),
    }


def overlap_at_k(approx: Sequence[Sequence[str]], exact: Sequence[Sequence[str]], k: int) -> float:
    """Recall@k of an approximate index against the exact ranking: the mean share of each
    query's exact top ``k`` that the index's top ``k`` holds (queries where the exact ranking
    is empty are left out)."""
    if len(approx) != len(exact):
        raise ValueError(f"{len(approx)} approximate rankings but {len(exact)} exact ones")
    shares = [
        len(set(a[:k]) & set(e[:k])) / len(e[:k]) for a, e in zip(approx, exact, strict=True) if e
    ]
    if not shares:
        raise ValueError("no exact ranking to compare with")
    return float(np.mean(shares))


def drop_reference(names: Sequence[str], reference: str, k: int) -> list[str]:
    """The first ``k`` of ``names`` without the query's reference (the evaluations' rule)."""
    return [n for n in names if n != reference][:k]


# --------------------------------------------------------------------------- sizing


def per_object_slope(points: Sequence[tuple[int, float]]) -> float:
    """Bytes per object from ``(objects, bytes)`` readings: the least-squares slope through
    the points (with one point, its ratio)."""
    if not points:
        raise ValueError("no reading")
    if len(points) == 1:
        objects, value = points[0]
        return value / objects
    x = np.array([p[0] for p in points], dtype=np.float64)
    y = np.array([p[1] for p in points], dtype=np.float64)
    return float(np.polyfit(x, y, 1)[0])


def documented_hnsw_bytes(
    objects: int,
    dims: int,
    bytes_per_vector: float | None = None,
    max_connections: int = HNSW_MAX_CONNECTIONS,
    bytes_per_link: int = BYTES_PER_LINK,
) -> dict[str, float]:
    """Weaviate's documented memory model for an HNSW index (docs, "Resource planning"):
    ``vectors`` = objects x (the vector's bytes + maxConnections x 8-10 B of links); the base
    layer allows 2 x maxConnections (``upper``); the rule of thumb is twice the vectors'
    footprint (``rule_of_thumb``, which also covers the garbage collector's overhead).
    ``bytes_per_vector`` defaults to float32 (dims x 4); a compressed index's codes are given
    here instead."""
    vector = dims * 4 if bytes_per_vector is None else bytes_per_vector
    return {
        "model": objects * (vector + max_connections * bytes_per_link),
        "upper": objects * (vector + 2 * max_connections * bytes_per_link),
        "rule_of_thumb": 2 * objects * dims * 4,
    }


def project(
    objects: int,
    fixed_bytes: float,
    per_object_bytes: float,
    nodes: int = 1,
    replication: int = 1,
) -> float:
    """Bytes each node needs for ``objects``: its fixed part plus its share of the objects,
    each object held ``replication`` times over ``nodes`` nodes (shards spread evenly)."""
    if replication > nodes:
        raise ValueError(f"replication {replication} needs at least as many nodes ({nodes})")
    return fixed_bytes + per_object_bytes * objects * replication / nodes


# --------------------------------------------------------------------------- data


@dataclass(frozen=True)
class Gallery:
    """A gallery: the own images (the queries' image sets) and the distractors."""

    key: str  # "own" or the size
    own: tuple[str, ...]
    distractors: tuple[str, ...]
    split: EvalSplit
    distractor_dir: Path

    @property
    def names(self) -> list[str]:
        return [*self.own, *self.distractors]

    def path(self, name: str) -> Path:
        if name.startswith("distractor-"):
            return self.distractor_dir / f"{name}.png"
        return self.split.image_path(name)

    def source(self, name: str) -> str:
        return "distractor" if name.startswith("distractor-") else "test"

    def b64(self, name: str) -> str:
        return base64.b64encode(self.path(name).read_bytes()).decode("ascii")


def own_gallery(split: EvalSplit) -> tuple[str, ...]:
    """The images of the queries' image sets (reference, target, negatives), sorted."""
    names = set()
    for t in split.triplets:
        names.update(t.subset)
        names.update(n for n in (t.reference, t.target) if n)
    return tuple(sorted(names))


def distractor_scenes(count: int, seed: int, data: Path) -> list[Any]:
    """The first ``count`` distractor scenes of ``seed``: hard-tier random scenes, drawn from
    generators keyed ``scale-distractor:SEED:i``, none equal to a scene of the data set (any
    split) or to an earlier distractor."""
    taken = {hard.scene_key(s) for s in load_scene_graphs(data).values()}
    scenes = []
    i = 0
    while len(scenes) < count:
        scene = hard.random_scene(random.Random(f"scale-distractor:{seed}:{i}"))
        i += 1
        key = hard.scene_key(scene)
        if key not in taken:
            taken.add(key)
            scenes.append(scene)
    return scenes


def _render_distractor(job: tuple[str, Any, str, int]) -> None:
    path, scene, key, size = job
    image = hard.render(scene, random.Random(key), size=size)
    tmp = f"{path}.tmp"
    image.save(tmp, format="PNG", optimize=False, compress_level=1)
    os.replace(tmp, path)  # never a half-written PNG in the cache


def render_distractors(
    count: int, seed: int, data: Path, folder: Path, image_size: int, workers: int = CPU_CORES
) -> int:
    """Render the first ``count`` distractors of ``seed`` into ``folder`` (those missing only);
    returns how many were rendered."""
    folder.mkdir(parents=True, exist_ok=True)
    missing = [i for i in range(count) if not (folder / f"distractor-{i:07d}.png").is_file()]
    if not missing:
        return 0
    scenes = distractor_scenes(count, seed, data)
    jobs = [
        (
            str(folder / f"distractor-{i:07d}.png"),
            scenes[i],
            f"scale-distractor:{seed}:{i}:image",
            image_size,
        )
        for i in missing
    ]
    log.info("rendering %d distractors into %s", len(jobs), folder)
    if workers <= 1 or len(jobs) < 256:
        for job in jobs:
            _render_distractor(job)
    else:
        method = "fork" if "fork" in get_all_start_methods() else "spawn"
        with ProcessPoolExecutor(workers, mp_context=get_context(method)) as pool:
            for _ in pool.map(_render_distractor, jobs, chunksize=256):
                pass
    return len(jobs)


@dataclass(frozen=True)
class Vectors:
    """Stored vectors of a gallery (``names`` sorted), as the import step read them back."""

    names: list[str]
    vectors: np.ndarray

    @classmethod
    def load(cls, path: Path, keep: set[str] | None = None) -> Vectors:
        data = np.load(path)
        names = [str(n) for n in data["names"]]
        vectors = data["vectors"]
        if keep is not None:
            rows = [i for i, n in enumerate(names) if n in keep]
            names, vectors = [names[i] for i in rows], vectors[rows]
        return cls(names, vectors)

    def save(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp.npz")
        np.savez(tmp, names=np.array(self.names), vectors=self.vectors)
        os.replace(tmp, path)


def read_vectors(collection: Collection) -> Vectors:
    """Every object's name and stored vector, sorted by name."""
    rows = []
    for obj in collection.iterator(
        include_vector=True, return_properties=["name"], cache_size=1000
    ):
        rows.append((obj.properties["name"], obj.vector[VECTOR]))
    rows.sort()
    return Vectors([r[0] for r in rows], np.asarray([r[1] for r in rows], dtype=np.float32))


def insert_vectors(
    collection: Collection,
    vectors: Vectors,
    gallery: Gallery,
    *,
    with_images: bool,
    batch_size: int = 200,
    concurrent_requests: int = 2,
) -> float:
    """Insert the stored vectors directly (no vectorizer call), with ``name`` and ``source``
    (and the image blob ``with_images``); checked through ``failed_objects``. Seconds taken."""
    began = time.perf_counter()
    with collection.batch.fixed_size(
        batch_size=batch_size, concurrent_requests=concurrent_requests
    ) as batch:
        for name, vector in zip(vectors.names, vectors.vectors, strict=True):
            properties = {"name": name, "source": gallery.source(name)}
            if with_images:
                properties["image"] = gallery.b64(name)
            batch.add_object(
                properties=properties, uuid=object_uuid(name), vector={VECTOR: vector.tolist()}
            )
    seconds = time.perf_counter() - began
    failed = collection.batch.failed_objects
    if failed:
        raise RuntimeError(f"{len(failed)} objects failed; first: {failed[0].message}")
    return seconds


def wait_indexed(server: WeaviateServer, collection: str, compressed: bool, timeout: float) -> dict:
    """Wait until every shard of ``collection`` is ``READY`` with an empty vector queue (and,
    with ``compressed``, says so); the last shard report."""
    deadline = time.monotonic() + timeout
    shards: list[dict] = []
    while time.monotonic() < deadline:
        answer = httpx.get(
            f"{server.url}/v1/nodes",
            params={"output": "verbose", "collection": collection},
            timeout=10,
        )
        answer.raise_for_status()
        shards = [s for n in answer.json()["nodes"] for s in n.get("shards") or []]
        done = shards and all(
            s.get("vectorIndexingStatus", "READY") == "READY"
            and not s.get("vectorQueueLength")
            and (not compressed or _compressed(s))
            for s in shards
        )
        if done:
            return shards[0]
        time.sleep(0.5)
    raise TimeoutError(f"{collection} not indexed after {timeout:.0f}s: {shards}")


def _compressed(shard: dict) -> bool:
    if shard.get("compressed"):
        return True
    vectors = shard.get("vectors") or []  # named vectors: one entry each, where reported
    return any(v.get("compressed") for v in vectors if isinstance(v, dict))


# --------------------------------------------------------------------------- query passes


@dataclass
class Pass:
    """One pass of queries from ``clients`` threads: each query once, latencies in order."""

    clients: int
    latencies: list[float]
    results: list[list[str]]
    wall_s: float
    errors: list[str]

    def summary(self) -> dict[str, Any]:
        n = len(self.latencies) - len(self.errors)
        return {
            "clients": self.clients,
            "queries": n,
            "errors": len(self.errors),
            "queries_per_s": round(n / self.wall_s, 2) if self.wall_s else None,
            **latency_summary(self.latencies),
        }


def run_pass(call: Callable[[int], list[str]], n: int, clients: int) -> Pass:
    """Queries ``0 .. n-1`` through ``call``, from ``clients`` threads each taking the next
    query as soon as its previous answer is in."""
    latencies = [math.nan] * n
    results: list[list[str]] = [[] for _ in range(n)]
    errors: list[str] = []
    lock = threading.Lock()
    position = iter(range(n))

    def client() -> None:
        while True:
            with lock:
                i = next(position, None)
            if i is None:
                return
            began = time.perf_counter()
            try:
                results[i] = call(i)
            except WeaviateBaseError as error:
                with lock:
                    errors.append(f"query {i}: {str(error)[:300]}")
                continue
            latencies[i] = time.perf_counter() - began

    began = time.perf_counter()
    with ThreadPoolExecutor(clients) as pool:
        for future in [pool.submit(client) for _ in range(clients)]:
            future.result()
    run = Pass(clients, latencies, results, time.perf_counter() - began, errors)
    if errors:
        log.warning("%d of %d queries failed; first: %s", len(errors), n, errors[0])
    return run


@dataclass(frozen=True)
class QuerySet:
    """The composed queries (strings encoded before any clock starts) and what they want."""

    texts: list[str]
    references: list[str]
    targets: list[str]

    @classmethod
    def of(cls, split: EvalSplit) -> QuerySet:
        return cls(
            [composed_query(split, t) for t in split.triplets],
            [t.reference for t in split.triplets],
            [t.target or "" for t in split.triplets],
        )


def first_stage_call(collection: Collection, queries: QuerySet, k: int) -> Callable[[int], list]:
    """Query ``i``'s composed ``nearText``: top ``k`` without its reference."""

    def call(i: int) -> list[str]:
        answer = collection.query.near_text(
            query=queries.texts[i], limit=k + 1, return_properties=["name"]
        )
        names = [o.properties["name"] for o in answer.objects]
        return drop_reference(names, queries.references[i], k)

    return call


def rerank_call(collection: Collection, queries: QuerySet, k: int) -> Callable[[int], list]:
    """Query ``i``'s composed ``nearText`` (top ``k``, reference filtered out) reranked by the
    service from the candidates' images."""

    def call(i: int) -> list[str]:
        answer = collection.query.near_text(
            query=queries.texts[i],
            limit=k,
            filters=Filter.by_property("name").not_equal(queries.references[i]),
            rerank=Rerank(prop="image", query=queries.texts[i]),
            return_properties=["name"],
        )
        return [o.properties["name"] for o in answer.objects]

    return call


def timed_passes(
    call: Callable[[int], list[str]],
    n: int,
    clients: Sequence[int],
    pids: dict[str, int],
    warmup: Sequence[int] | None = None,
) -> tuple[list[Pass], list[dict]]:
    """Warm-up queries (``warmup``: their indices; default the first five), then one pass per
    client count. Returns the passes and their summaries, each summary with the CPU
    milliseconds per query of each process in ``pids``."""
    for i in range(min(5, n)) if warmup is None else warmup:
        call(i)
    passes: list[Pass] = []
    summaries: list[dict] = []
    for c in clients:
        before = {k: cpu_seconds(p) for k, p in pids.items()}
        run = run_pass(call, n, c)
        summary = run.summary()
        for k, p in pids.items():
            summary[f"{k}_cpu_ms_per_query"] = round(
                1000 * (cpu_seconds(p) - before[k]) / max(summary["queries"], 1), 2
            )
        log.info("  %d clients: %s", c, summary)
        passes.append(run)
        summaries.append(summary)
    return passes, summaries


# --------------------------------------------------------------------------- the runner


class Results:
    """``OUT/results/SIZE/STEP.json``: one file per finished step, written atomically."""

    def __init__(self, root: Path, redo: Sequence[str] = ()) -> None:
        self.root = root
        self.redo = set(redo)

    def path(self, size: str, step: str) -> Path:
        return self.root / size / f"{step}.json" if size else self.root / f"{step}.json"

    def done(self, size: str, step: str) -> bool:
        redo = step in self.redo or step.split("-")[0] in self.redo or "all" in self.redo
        return self.path(size, step).is_file() and not redo

    def load(self, size: str, step: str) -> dict | None:
        path = self.path(size, step)
        return json.loads(path.read_text()) if path.is_file() else None

    def save(self, size: str, step: str, record: dict) -> None:
        path = self.path(size, step)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(record, indent=1) + "\n")
        os.replace(tmp, path)

    def all(self) -> dict[str, dict[str, dict]]:
        out: dict[str, dict[str, dict]] = {}
        for path in sorted(self.root.glob("**/*.json")):
            size = path.parent.name if path.parent != self.root else ""
            out.setdefault(size, {})[path.stem] = json.loads(path.read_text())
        return out


@dataclass
class Settings:
    """How imports are sent and served: the client's batches and the service's workers."""

    batch_size: int
    concurrency: int
    model_workers: int


class ScaleRun:
    """Everything one invocation needs: the arguments, the data, where results go."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.out: Path = args.out
        self.results = Results(self.out / "results", args.redo)
        self.split = EvalSplit.load(args.data, "test", limit=args.queries)
        self.queries = QuerySet.of(self.split)
        self.own = own_gallery(self.split)
        benchmark = json.loads((Path(args.data) / "benchmark.json").read_text())
        if benchmark.get("tier") != "hard":
            log.warning(
                "%s is not a hard-tier folder: the first stage is the hard tier's", args.data
            )
        self.image_size = int(benchmark.get("image_size", 128))
        self.onnx_dir: Path = args.onnx or self.out / "onnx"
        self.scratch = self.out / "tmp"
        self.distractor_dir = self.out / "distractors" / f"seed-{args.distractor_seed}"
        self.ran = 0  # steps run (not skipped) by this invocation

    # -- helpers ---------------------------------------------------------------------------

    def gallery(self, key: str) -> Gallery:
        """The gallery of size ``key`` (or the own gallery, ``own``)."""
        extra = 0 if key == OWN else int(key) - len(self.own)
        if extra < 0:
            raise SystemExit(
                f"size {key} is smaller than the {len(self.own)} images of the "
                f"{len(self.queries.texts)} queries' image sets: lower --queries or raise the size"
            )
        distractors = tuple(f"distractor-{i:07d}" for i in range(extra))
        return Gallery(key, self.own, distractors, self.split, self.distractor_dir)

    def service_env(self, variant: str, *, reranker: bool, workers: int = 1) -> dict[str, str]:
        """``CIR_*`` settings of a service on the export's ``variant``, with or without the
        change verifier, with ``workers`` model workers."""
        env = {
            "CIR_ONNX_EXPORT": str(self.onnx_dir),
            "CIR_ONNX_VARIANT": variant,
            "CIR_MODEL_WORKERS": str(workers),
            "CIR_RERANKER_MODEL": str(self.args.reranker) if reranker else "none",
        }
        if reranker:
            env["CIR_TORCH_THREADS"] = str(CPU_CORES)
        return env

    @staticmethod
    def weaviate(service: ServiceProcess, data_dir: Path) -> WeaviateServer:
        """A Weaviate for ``service`` on ``data_dir`` (not started). Benchmark-only settings:
        Raft's timeouts at 1x, not 5x (a single node elects itself in about 2 s instead of 9;
        nothing a query or an import does waits on Raft), and the debug listener on a free
        port, whose heap profile forces a garbage collection (:func:`weaviate_memory`)."""
        env = {
            "RAFT_TIMEOUTS_MULTIPLIER": "1",
            "GO_PROFILING_DISABLE": "false",
            "GO_PROFILING_PORT": str(free_port()),
            "DEBUG_ENDPOINTS_ENABLED": "true",
        }
        return WeaviateServer(service.url, data_dir=data_dir, env=env)

    @contextmanager
    def stack(self, env: dict[str, str], data_dir: Path) -> Iterator[tuple[Any, WeaviateServer]]:
        """The service (``CIR_*`` settings in ``env``), then a Weaviate for it, both started."""
        with (
            ServiceProcess(self.args.checkpoint, env=env) as service,
            self.weaviate(service, data_dir) as server,
        ):
            yield service, server

    @contextmanager
    def data_dir(self, label: str) -> Iterator[Path]:
        """A new folder under ``OUT/tmp`` for a Weaviate's data, removed on exit."""
        self.scratch.mkdir(parents=True, exist_ok=True)
        folder = Path(tempfile.mkdtemp(prefix=f"weaviate-{label}-", dir=self.scratch))
        try:
            yield folder
        finally:
            shutil.rmtree(folder, ignore_errors=True)

    def step(
        self, size: str, step: str, work: Callable[[], dict], force: bool = False
    ) -> dict | None:
        """Run ``work`` unless its result is there (``force``: even so); time it and save
        what it returns."""
        if self.results.done(size, step) and not force:
            log.info("%s/%s: done before, skipped", size or "-", step)
            return self.results.load(size, step)
        log.info("%s/%s: running", size or "-", step)
        self.ran += 1
        began = time.perf_counter()
        record = work()
        record |= {
            "step": step,
            "size": size,
            "wall_s": round(time.perf_counter() - began, 1),
            "finished": time.strftime("%Y-%m-%dT%H:%M:%S"),
            "weaviate": WEAVIATE_VERSION,
        }
        self.results.save(size, step, record)
        log.info("%s/%s: %.1fs", size or "-", step, record["wall_s"])
        return record

    def vectors_path(self, size: str) -> Path:
        """Where the import of the first variant leaves the stored vectors of size ``size``."""
        return self.out / "vectors" / f"{size}-{self.args.variants[0]}.npz"

    # -- steps -----------------------------------------------------------------------------

    def export(self) -> dict:
        """The ``export`` step: the first stage exported to ONNX (fp32, int8), or the export
        already in ``--onnx`` read back."""
        from cir_module.models.onnx_model import MANIFEST_NAME
        from onnx_export import export_checkpoint

        began = time.perf_counter()
        if (self.onnx_dir / MANIFEST_NAME).is_file():
            manifest = json.loads((self.onnx_dir / MANIFEST_NAME).read_text())
            seconds = 0.0
        else:
            manifest = export_checkpoint(
                self.args.checkpoint, self.onnx_dir, variants=("fp32", "int8")
            )
            seconds = time.perf_counter() - began
        return {
            "checkpoint": str(self.args.checkpoint),
            "folder": str(self.onnx_dir),
            "export_s": round(seconds, 1),
            "reused": seconds == 0.0,
            "variants": sorted(manifest["variants"]),
            "int8": manifest.get("optimization", {}).get("int8"),
            "int8_kept_fp32": manifest.get("parity", {}).get("int8", {}).get("kept_fp32"),
        }

    def tune(self, gallery: Gallery) -> dict:
        """The ``tune`` step: the first ``--tune-objects`` images of ``gallery`` imported with
        every setting of the grid; its rows and the setting chosen (:func:`choose_settings`)."""
        names = gallery.names[: self.args.tune_objects]
        rows = []
        for workers in self.args.tune_workers:
            env = self.service_env("fp32", reranker=False, workers=workers)
            with (
                self.data_dir("tune") as folder,
                self.stack(env, folder) as (service, server),
                connect(server) as client,
            ):
                self._import_once(client, gallery, names[:32], 16, 2)  # warm the model up
                for batch_size in self.args.tune_batch_sizes:
                    for concurrency in self.args.tune_concurrency:
                        before = service_counters(service.url)
                        seconds = self._import_once(client, gallery, names, batch_size, concurrency)
                        after = service_counters(service.url)
                        row = {
                            "batch_size": batch_size,
                            "concurrency": concurrency,
                            "model_workers": workers,
                            "objects": len(names),
                            "objects_per_s": round(len(names) / seconds, 1),
                            **_vectorize_stats(before, after, len(names)),
                        }
                        log.info("  tune %s", row)
                        rows.append(row)
        best = choose_settings(rows)
        return {
            "rows": rows,
            "best": best,
            "cir_ingest_default": {"batch_size": 16, "concurrency": 2, "model_workers": 1},
        }

    def _import_once(
        self,
        client: WeaviateClient,
        gallery: Gallery,
        names: Sequence[str],
        batch_size: int,
        concurrency: int,
    ) -> float:
        name = f"CIRScaleTune_{uuid.uuid4().hex[:8]}"
        try:
            collection = create_image_collection(client, name, text_properties=("name", "source"))
            began = time.perf_counter()
            report = ingest_objects(
                collection,
                self._objects(gallery, names),
                batch_size=batch_size,
                concurrent_requests=concurrency,
            )
            seconds = time.perf_counter() - began
            if report.failed:
                raise RuntimeError(f"{len(report.failed)} objects failed: {report.failed[:3]}")
            return seconds
        finally:
            client.collections.delete(name)

    @staticmethod
    def _objects(gallery: Gallery, names: Sequence[str]) -> Iterator[tuple[str, dict]]:
        for n in names:  # read lazily: 100k images are not held in memory at once
            yield n, {"image": gallery.b64(n), "name": n, "source": gallery.source(n)}

    def render(self, gallery: Gallery) -> dict:
        """The ``gallery`` step: ``gallery``'s distractors rendered where missing; its make-up."""
        began = time.perf_counter()
        rendered = render_distractors(
            len(gallery.distractors),
            self.args.distractor_seed,
            Path(self.args.data),
            self.distractor_dir,
            self.image_size,
        )
        sample = [
            gallery.path(n).stat().st_size
            for n in gallery.names[:: max(1, len(gallery.names) // 200)]
        ]
        return {
            "objects": len(gallery.names),
            "own": len(gallery.own),
            "distractors": len(gallery.distractors),
            "queries": len(self.queries.texts),
            "rendered": rendered,
            "render_s": round(time.perf_counter() - began, 1),
            "mean_png_bytes": round(float(np.mean(sample)), 0),
        }

    def import_gallery(
        self, gallery: Gallery, variant: str, settings: Settings, dump: bool
    ) -> dict:
        """An ``import-VARIANT`` step: ``gallery`` through the vectorizer on the export's
        ``variant`` with ``settings``; with ``dump``, the stored vectors kept for the steps
        below."""
        env = self.service_env(variant, reranker=False, workers=settings.model_workers)
        n = len(gallery.names)
        record: dict[str, Any] = {"variant": variant, "objects": n, "settings": vars(settings)}
        with (
            self.data_dir(f"import-{variant}") as folder,
            self.stack(env, folder) as (service, server),
        ):
            record["service_memory_start"] = memory(service.pid)
            record["weaviate_memory_empty"] = weaviate_memory(server)
            name = f"CIRScaleImport_{uuid.uuid4().hex[:8]}"
            try:
                with connect(server) as client:
                    collection = create_image_collection(
                        client, name, text_properties=("name", "source")
                    )
                    pids = {"service": service.pid, "weaviate": server.pid}
                    cpu_before = {k: cpu_seconds(p) for k, p in pids.items()}
                    client_before = time.process_time()
                    counters_before = service_counters(service.url)
                    began = time.perf_counter()
                    report = ingest_objects(
                        collection,
                        self._objects(gallery, gallery.names),
                        batch_size=settings.batch_size,
                        concurrent_requests=settings.concurrency,
                    )
                    seconds = time.perf_counter() - began
                    if report.failed:
                        raise RuntimeError(
                            f"{len(report.failed)} objects failed: {report.failed[:3]}"
                        )
                    cpu = {k: cpu_seconds(p) - cpu_before[k] for k, p in pids.items()}
                    cpu["client"] = time.process_time() - client_before
                    counters_after = service_counters(service.url)
                    stored = len(collection)
                    if stored != n:
                        raise RuntimeError(f"{stored} objects stored of {n}")
                    total_cpu = sum(cpu.values())
                    record |= {
                        "import_s": round(seconds, 1),
                        "objects_per_s": round(n / seconds, 1),
                        "cpu_s": {k: round(v, 1) for k, v in cpu.items()},
                        "cpu_share": {k: round(v / total_cpu, 3) for k, v in cpu.items()},
                        "cpu_busy": round(total_cpu / (seconds * CPU_CORES), 3),
                        **_vectorize_stats(counters_before, counters_after, n),
                    }
                    time.sleep(SETTLE_S)
                    record["service_memory_after"] = memory(service.pid)
                    record["weaviate_memory_built"] = weaviate_memory(server)
                    record["disk_live_bytes"] = disk_bytes(folder)
                    if dump:
                        vectors = read_vectors(collection)
                        vectors.save(self.vectors_path(gallery.key))
                        record["dims"] = int(vectors.vectors.shape[1])
                server.stop()  # a clean stop flushes the memtables: the data as they rest
                record["disk_bytes"] = disk_bytes(folder)
                server.start()
                with connect(server) as client:
                    collection = client.collections.get(name)
                    for i in range(min(5, len(self.queries.texts))):
                        first_stage_call(collection, self.queries, self.args.k)(i)
                    time.sleep(SETTLE_S)
                    record["weaviate_memory_rest"] = weaviate_memory(server)
            finally:
                if server.running:
                    with connect(server) as client:
                        client.collections.delete(name)
        log.info(
            "  import %s: %.1f objects/s, CPU share %s",
            variant,
            record["objects_per_s"],
            record["cpu_share"],
        )
        return record

    def index_variants(self, gallery: Gallery, pending: Sequence[str]) -> None:
        """Run the pending ``index-NAME`` steps of ``gallery`` beside one service."""
        vectors = Vectors.load(self.vectors_path(gallery.key))
        env = self.service_env(self.args.variants[0], reranker=False)
        with ServiceProcess(self.args.checkpoint, env=env) as service:
            for name in pending:
                self.step(
                    gallery.key,
                    f"index-{name}",
                    lambda spec=INDEXES[name]: self.index_one(gallery, spec, service, vectors),
                )

    def index_one(
        self, gallery: Gallery, spec: IndexSpec, service: ServiceProcess, vectors: Vectors
    ) -> dict:
        """An ``index-NAME`` step: ``vectors`` inserted into a collection on ``spec``'s index in a
        fresh Weaviate beside ``service``; memory, disk, first-stage latency and rankings."""
        n = len(vectors.names)
        record: dict[str, Any] = {"index": spec.name, "objects": n}
        with self.data_dir(f"index-{spec.name}") as folder:
            server = self.weaviate(service, folder)
            name = f"CIRScaleIndex_{uuid.uuid4().hex[:8]}"
            created = False
            try:
                server.start()
                time.sleep(SETTLE_S)
                record["weaviate_memory_empty"] = weaviate_memory(server)
                with connect(server, query_timeout_s=300) as client:
                    try:
                        collection = create_scale_collection(client, name, spec)
                    except WeaviateBaseError as error:
                        log.warning("  %s refused at creation: %s", spec.name, error)
                        return record | {"refused": f"at creation: {error}"}
                    created = True
                    vectorized = service_counters(service.url).get("vectorize_count", 0)
                    seconds = insert_vectors(collection, vectors, gallery, with_images=False)
                    record["insert_s"] = round(seconds, 1)
                    record["insert_objects_per_s"] = round(n / seconds, 1)
                    if spec.after_insert:
                        try:
                            collection.config.update(vector_config=spec.update_config(n))
                        except WeaviateBaseError as error:
                            log.warning("  %s refused: %s", spec.name, error)
                            return record | {"refused": f"enabling it on the data: {error}"}
                    began = time.perf_counter()
                    record["shard"] = wait_indexed(
                        server, name, compressed=spec.quantizer is not None, timeout=3600
                    )
                    record["index_wait_s"] = round(time.perf_counter() - began, 1)
                    config = collection.config.get().vector_config[VECTOR].vector_index_config
                    record["config"] = json.loads(json.dumps(config.to_dict(), default=str))
                    if service_counters(service.url).get("vectorize_count", 0) != vectorized:
                        raise RuntimeError("inserting the stored vectors called the vectorizer")
                    time.sleep(SETTLE_S)
                    record["weaviate_memory_built"] = weaviate_memory(server)
                server.stop()  # a clean stop flushes the memtables: the data as they rest
                record["disk_bytes"] = disk_bytes(folder)
                server.start()  # the index loaded from disk: memory at rest
                with connect(server, query_timeout_s=300) as client:
                    collection = client.collections.get(name)
                    runs, summaries = timed_passes(
                        first_stage_call(collection, self.queries, self.args.k),
                        len(self.queries.texts),
                        self.args.clients,
                        {"service": service.pid, "weaviate": server.pid},
                    )
                    record["first_stage"] = summaries
                    record["rankings"] = runs[0].results
                    time.sleep(SETTLE_S)
                    record["weaviate_memory_rest"] = weaviate_memory(server)
                    record["service_memory"] = memory(service.pid)
            finally:
                if created and server.running:
                    with connect(server) as client:
                        client.collections.delete(name)
                server.stop()
        log.info(
            "  %s: %.0f B/object in memory, %.0f B/object on disk",
            spec.name,
            _per_object(record, "rest"),
            record["disk_bytes"] / n,
        )
        return record

    def query_step(self, gallery: Gallery) -> dict:
        """The ``queries`` step of ``gallery``: first stage and second stage latency and quality
        on HNSW, beside the service as shipped with the hard tier."""
        key = gallery.key
        if key == OWN:
            smallest = str(min(self.args.sizes))
            vectors = Vectors.load(self.vectors_path(smallest), keep=set(gallery.own))
        else:
            vectors = Vectors.load(self.vectors_path(key))
        n = len(vectors.names)
        if n != len(gallery.names):
            raise RuntimeError(f"{n} stored vectors for a gallery of {len(gallery.names)}")
        env = self.service_env(self.args.variants[0], reranker=True)
        record: dict[str, Any] = {"objects": n, "index": "hnsw", "k": self.args.k}
        nq, nr = len(self.queries.texts), min(self.args.rerank_queries, len(self.queries.texts))
        with (
            self.data_dir("queries") as folder,
            self.stack(env, folder) as (service, server),
            connect(server, query_timeout_s=900) as client,
        ):
            record["service_memory_start"] = memory(service.pid)
            name = f"CIRScaleQueries_{uuid.uuid4().hex[:8]}"
            try:
                collection = create_scale_collection(client, name, INDEXES["hnsw"])
                record["insert_s"] = round(
                    insert_vectors(collection, vectors, gallery, with_images=True), 1
                )
                wait_indexed(server, name, compressed=False, timeout=3600)
                pids = {"service": service.pid, "weaviate": server.pid}
                log.info("  first stage, %d queries", nq)
                first, first_summaries = timed_passes(
                    first_stage_call(collection, self.queries, self.args.k),
                    nq,
                    self.args.clients,
                    pids,
                )
                log.info("  with rerank, %d queries", nr)
                # Warmed up on queries outside the reranked ones where there are such: the
                # service caches the captions of the candidates it has seen.
                spare = list(range(nr, min(nr + 5, nq))) or list(range(min(5, nr)))
                second, second_summaries = timed_passes(
                    rerank_call(collection, self.queries, self.args.k),
                    nr,
                    self.args.clients,
                    pids,
                    warmup=spare,
                )
                ranked, reranked = first[0].results, second[0].results
                ks = sorted({1, self.args.k})
                record |= {
                    "queries": nq,
                    "rerank_queries": nr,
                    "first_stage": first_summaries,
                    "with_rerank": second_summaries,
                    "quality": {
                        "first_stage": recall_percent(ranked, self.queries.targets, ks),
                        "first_stage_on_reranked_queries": recall_percent(
                            ranked[:nr], self.queries.targets[:nr], ks
                        ),
                        "reranked": recall_percent(reranked, self.queries.targets[:nr], ks),
                    },
                    "first_stage_rankings": ranked,
                    "reranked_rankings": reranked,
                }
                time.sleep(SETTLE_S)
                record["service_memory_after"] = memory(service.pid)
                record["weaviate_memory"] = weaviate_memory(server)
            finally:
                client.collections.delete(name)
        log.info("  quality %s", record["quality"])
        return record

    # -- the whole run ---------------------------------------------------------------------

    def settings(self, first: Gallery) -> Settings:
        """The import settings: the ones given, the rest from the ``tune`` step (run on
        ``first`` if it has not been)."""
        a = self.args
        if a.batch_size and a.concurrency and a.model_workers:
            return Settings(a.batch_size, a.concurrency, a.model_workers)
        tuned = self.step("", "tune", lambda: self.tune(first))
        assert tuned is not None
        best = tuned["best"]
        return Settings(
            a.batch_size or best["batch_size"],
            a.concurrency or best["concurrency"],
            a.model_workers or best["model_workers"],
        )

    def run(self) -> None:
        """Every pending step of every size, smallest first (the own gallery after it)."""
        a = self.args
        sizes = sorted(a.sizes)
        exported = self.step("", "export", self.export)
        assert exported is not None
        variants = [v for v in a.variants if v in exported["variants"]]
        for v in sorted(set(a.variants) - set(variants)):
            log.warning("the export has no %s variant: its import is not measured", v)
        order = [str(sizes[0]), OWN, *(str(s) for s in sizes[1:])]
        settings = None
        for key in order:
            gallery = self.gallery(key)
            self.step(key, "gallery", lambda g=gallery: self.render(g))
            self.render(gallery)  # PNGs lost since the step was recorded: rendered again
            if key != OWN and "import" in a.steps:
                settings = settings or self.settings(gallery)
                for i, variant in enumerate(variants):
                    dump = i == 0 and variant == a.variants[0]
                    self.step(
                        key,
                        f"import-{variant}",
                        lambda g=gallery, v=variant, d=dump, s=settings: self.import_gallery(
                            g, v, s, d
                        ),
                        # the stored vectors feed the steps below: imported again if lost
                        force=dump and not self.vectors_path(key).is_file(),
                    )
            if key != OWN and "index" in a.steps:
                pending = [i for i in a.indexes if not self.results.done(key, f"index-{i}")]
                if pending:
                    self.index_variants(gallery, pending)
            if "queries" in a.steps:
                self.step(key, "queries", lambda g=gallery: self.query_step(g))


def choose_settings(rows: Sequence[dict], tolerance: float = 0.05) -> dict[str, int]:
    """The import setting to use: among the rows within ``tolerance`` of the fastest (the
    machine is shared, the differences inside it are noise), the one with the fewest model
    workers, then the fewest concurrent batches, then the smallest batches."""
    fastest = max(r["objects_per_s"] for r in rows)
    close = [r for r in rows if r["objects_per_s"] >= (1 - tolerance) * fastest]
    best = min(close, key=lambda r: (r["model_workers"], r["concurrency"], r["batch_size"]))
    return {k: best[k] for k in ("batch_size", "concurrency", "model_workers")}


def _vectorize_stats(before: dict, after: dict, objects: int) -> dict[str, float | None]:
    """What the service did for an import: /vectorize requests, images per request, the mean
    model batch of image forwards, and the requests' mean latency at the service."""
    requests = after.get("vectorize_count", 0) - before.get("vectorize_count", 0)
    seconds = after.get("vectorize_sum", 0) - before.get("vectorize_sum", 0)
    forwards = after.get("batch_image_count", 0) - before.get("batch_image_count", 0)
    items = after.get("batch_image_sum", 0) - before.get("batch_image_sum", 0)
    return {
        "vectorize_requests": int(requests),
        "images_per_request": round(objects / requests, 2) if requests else None,
        "mean_model_batch": round(items / forwards, 2) if forwards else None,
        "vectorize_mean_ms": round(1000 * seconds / requests, 1) if requests else None,
    }


# --------------------------------------------------------------------------- the report


def _size_keys(results: dict) -> list[str]:
    return sorted((k for k in results if k.isdigit()), key=int)


def build_report(results: dict[str, dict[str, dict]], k: int = 10) -> dict[str, Any]:
    """The tables as data, from every step's record: import, per index (memory, disk, latency,
    recall@k against ``flat``), queries with and without the second stage, quality by gallery
    size, the service's memory, and the 1M / 10M projection."""
    sizes = _size_keys(results)
    report: dict[str, Any] = {
        "tune": results.get("", {}).get("tune"),
        "export": results.get("", {}).get("export"),
    }
    imports, indexes, queries, quality, service = [], [], [], [], []
    walls = {"once": round(sum(r.get("wall_s", 0) for r in results.get("", {}).values()), 1)}
    for size in [*sizes, OWN]:
        steps = results.get(size, {})
        walls[size] = round(sum(r.get("wall_s", 0) for r in steps.values()), 1)
        n = steps.get("gallery", {}).get("objects")
        for name, r in steps.items():
            if name.startswith("import-"):
                imports.append(
                    {
                        "size": int(size),
                        "variant": r["variant"],
                        "objects_per_s": r["objects_per_s"],
                        "cpu_share": r["cpu_share"],
                        "cpu_busy": r["cpu_busy"],
                        "images_per_request": r["images_per_request"],
                        "mean_model_batch": r["mean_model_batch"],
                        "settings": r["settings"],
                        "weaviate_rest_bytes_per_object": _per_object(r, "rest"),
                        "heap_bytes_per_object": _per_object(r, "rest", "heap_alloc"),
                        "disk_bytes_per_object": r["disk_bytes"] / r["objects"],
                        "service_rss_after": r["service_memory_after"]["rss"],
                    }
                )
        exact = steps.get("index-flat", {}).get("rankings")
        for name, r in steps.items():
            if not name.startswith("index-"):
                continue
            row: dict[str, Any] = {"size": int(size), "index": r["index"]}
            if "refused" in r:
                indexes.append(row | {"refused": r["refused"]})
                continue
            row |= {
                "insert_objects_per_s": r["insert_objects_per_s"],
                "weaviate_rest_rss": r["weaviate_memory_rest"]["rss"],
                "weaviate_empty_rss": r["weaviate_memory_empty"]["rss"],
                "weaviate_rest_bytes_per_object": _per_object(r, "rest"),
                "weaviate_rest_heap": r["weaviate_memory_rest"].get("heap_alloc"),
                "weaviate_empty_heap": r["weaviate_memory_empty"].get("heap_alloc"),
                "heap_bytes_per_object": _per_object(r, "rest", "heap_alloc"),
                "weaviate_built_peak": r["weaviate_memory_built"]["peak"],
                "disk_bytes_per_object": r["disk_bytes"] / r["objects"],
                "latency": {p["clients"]: p for p in r["first_stage"]},
                "recall_at_k": overlap_at_k(r["rankings"], exact, k) if exact else None,
            }
            indexes.append(row)
        q = steps.get("queries")
        if q:
            for first, second in zip(q["first_stage"], q["with_rerank"], strict=True):
                queries.append(
                    {"size": size, "clients": first["clients"], "first": first, "rerank": second}
                )
            quality.append({"size": size, "objects": n or q["objects"], **q["quality"]})
            service.append(
                {
                    "size": size,
                    "start": q["service_memory_start"]["rss"],
                    "after_queries": q["service_memory_after"]["rss"],
                    "peak": q["service_memory_after"]["peak"],
                }
            )
    for row in service:
        imported = [i for i in imports if str(i["size"]) == row["size"]]
        row["after_import"] = {i["variant"]: i["service_rss_after"] for i in imported}
    report |= {
        "sizes": [int(s) for s in sizes],
        "imports": imports,
        "indexes": indexes,
        "queries": queries,
        "quality": quality,
        "service": service,
        "wall_s_by_size": walls,
        "projection": projection(results, imports, indexes),
    }
    return report


def _per_object(record: dict, state: str, key: str = "rss") -> float | None:
    """Weaviate's memory (``key``: ``rss`` or ``heap_alloc``) in ``state`` less the empty
    server's, per object."""
    now, empty = record[f"weaviate_memory_{state}"], record["weaviate_memory_empty"]
    if key not in now or key not in empty:
        return None
    return (now[key] - empty[key]) / record["objects"]


def projection(results: dict, imports: list[dict], indexes: list[dict]) -> dict[str, Any]:
    """Per index: bytes per object in memory (slope over the sizes) and on disk (the index's
    own, plus the stored image and object from the import), and what one node and each node of
    a 3-node cluster with replication factor 3 need for 1M and 10M images; beside it the
    documented HNSW model. Import hours for one service at the measured rate."""
    dims = next(
        (r.get("dims") for s in results.values() for r in s.values() if r.get("dims")), None
    )
    out: dict[str, Any] = {"dims": dims, "indexes": {}, "service": {}}
    blob_bytes = None
    hnsw_rows = [i for i in indexes if i["index"] == "hnsw" and "refused" not in i]
    fp32 = [i for i in imports if i["variant"] == "fp32"]
    if hnsw_rows and fp32:
        largest = max(fp32, key=lambda i: i["size"])
        same = [h for h in hnsw_rows if h["size"] == largest["size"]]
        if same:
            blob_bytes = largest["disk_bytes_per_object"] - same[0]["disk_bytes_per_object"]
    out["blob_and_object_disk_bytes_per_object"] = blob_bytes
    names = sorted({i["index"] for i in indexes if "refused" not in i})
    for name in names:
        rows = sorted(
            (i for i in indexes if i["index"] == name and "refused" not in i),
            key=lambda i: i["size"],
        )
        memory_slope = per_object_slope(
            [(r["size"], r["weaviate_rest_rss"] - r["weaviate_empty_rss"]) for r in rows]
        )
        heaps = [r for r in rows if r.get("weaviate_rest_heap") is not None]
        heap_slope = (
            per_object_slope(
                [(r["size"], r["weaviate_rest_heap"] - r["weaviate_empty_heap"]) for r in heaps]
            )
            if heaps
            else None
        )
        fixed = float(np.median([r["weaviate_empty_rss"] for r in rows]))
        disk = rows[-1]["disk_bytes_per_object"] + (blob_bytes or 0)
        largest = rows[-1]
        entry: dict[str, Any] = {
            "memory_bytes_per_object": memory_slope,
            "heap_bytes_per_object": heap_slope,
            "fixed_bytes": fixed,
            "disk_bytes_per_object": disk,
            "largest_size": largest["size"],
            "recall_at_k_largest": largest.get("recall_at_k"),
            "p99_ms_1_client_largest": largest["latency"].get(1, {}).get("p99_ms"),
        }
        # A slope at or below zero is the readings' noise (galleries too small to show the
        # objects' memory): no projection from it.
        usable = memory_slope > 0
        for objects in (1_000_000, 10_000_000):
            entry[str(objects)] = {
                "one_node_memory": project(objects, fixed, memory_slope) if usable else None,
                "one_node_disk": project(objects, 0, disk),
                "cluster3_rf3_memory_per_node": (
                    project(objects, fixed, memory_slope, 3, 3) if usable else None
                ),
                "cluster3_rf3_disk_per_node": project(objects, 0, disk, 3, 3),
            }
        out["indexes"][name] = entry
    out["suggested_default"] = suggest_index(out["indexes"])
    if dims:
        out["documented_hnsw"] = {
            str(n): documented_hnsw_bytes(n, dims) for n in (1_000_000, 10_000_000)
        }
    for variant in sorted({i["variant"] for i in imports}):
        rows = [i for i in imports if i["variant"] == variant]
        rate = max(rows, key=lambda i: i["size"])["objects_per_s"]
        out["service"][variant] = {
            "objects_per_s_largest": rate,
            "import_hours_1M": 1_000_000 / rate / 3600,
            "import_hours_10M": 10_000_000 / rate / 3600,
        }
    return out


def suggest_index(
    indexes: dict[str, dict], min_recall: float = 0.99, max_p99_ms: float = 50.0
) -> str | None:
    """The index with the least memory per object among those whose recall@10 against the
    exact ranking is at least ``min_recall`` and whose first-stage p99 at 1 client is within
    ``max_p99_ms``, at the largest gallery measured (the issue's targets); None if none
    qualifies or no memory slope is usable."""
    fit = {
        name: e["memory_bytes_per_object"]
        for name, e in indexes.items()
        if (e["recall_at_k_largest"] or 0) >= min_recall
        and (e["p99_ms_1_client_largest"] or math.inf) <= max_p99_ms
        and e["memory_bytes_per_object"] > 0
    }
    return min(fit, key=fit.__getitem__) if fit else None


def _mib(value: float | None) -> str:
    return "–" if value is None else f"{value / 2**20:.1f}"


def _num(value: float | None) -> str:
    return "–" if value is None else f"{value:.0f}"


def _gib(value: float | None) -> str:
    return "–" if value is None else f"{value / 2**30:.2f}"


def markdown(report: dict[str, Any]) -> str:
    """The report as Markdown tables (what docs/results.md and docs/scaling.md take)."""
    lines = ["# Scale benchmark (benchmarks/scale.py)", ""]
    export = report.get("export")
    if export:
        kept = ", ".join(f"{g} ({why})" for g, why in (export.get("int8_kept_fp32") or {}).items())
        lines += [
            f"First stage `{export['checkpoint']}` exported to `{export['folder']}`: "
            f"{', '.join(export['variants'])}" + (f"; int8 keeps in fp32: {kept}" if kept else ""),
            "",
        ]
    tune = report.get("tune")
    if tune:
        lines += [
            "## Import settings (tune)",
            "",
            "| batch size | concurrent requests | model workers | objects/s | images per "
            "/vectorize | mean model batch |",
            "|---|---|---|---|---|---|",
        ]
        for r in tune["rows"]:
            lines.append(
                f"| {r['batch_size']} | {r['concurrency']} | {r['model_workers']} | "
                f"{r['objects_per_s']} | {r['images_per_request']} | {r['mean_model_batch']} |"
            )
        lines += ["", f"Chosen: {tune['best']}.", ""]
    lines += [
        "## Import through the vectorizer",
        "",
        "| size | variant | objects/s | CPU share service / Weaviate / client | CPU busy | "
        "images per /vectorize | mean model batch | Weaviate RSS / heap B/object | "
        "disk B/object | service RSS MiB |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in sorted(report["imports"], key=lambda r: (r["size"], r["variant"])):
        share = r["cpu_share"]
        lines.append(
            f"| {r['size']} | {r['variant']} | {r['objects_per_s']} | "
            f"{share['service']:.2f} / {share['weaviate']:.2f} / {share['client']:.2f} | "
            f"{r['cpu_busy']:.2f} | {r['images_per_request']} | {r['mean_model_batch']} | "
            f"{_num(r['weaviate_rest_bytes_per_object'])} / {_num(r['heap_bytes_per_object'])} | "
            f"{r['disk_bytes_per_object']:.0f} | {_mib(r['service_rss_after'])} |"
        )
    clients = sorted({c for r in report["indexes"] for c in r.get("latency", {})})
    lines += [
        "",
        "## Indexes (the same vectors inserted directly)",
        "",
        "| size | index | recall@10 vs flat | Weaviate RSS MiB | RSS / heap B/object | "
        "disk B/object | " + " | ".join(f"p50 / p99 ms, {c} cl." for c in clients) + " |",
        "|---|---|---|---|---|---|" + "---|" * len(clients),
    ]
    for r in sorted(report["indexes"], key=lambda r: (r["size"], r["index"])):
        if "refused" in r:
            lines.append(f"| {r['size']} | {r['index']} | refused: {r['refused'][:200]} |")
            continue
        recall = "–" if r["recall_at_k"] is None else f"{r['recall_at_k']:.4f}"
        lat = " | ".join(
            f"{r['latency'][c]['p50_ms']} / {r['latency'][c]['p99_ms']}"
            if c in r["latency"]
            else "–"
            for c in clients
        )
        lines.append(
            f"| {r['size']} | {r['index']} | {recall} | {_mib(r['weaviate_rest_rss'])} | "
            f"{_num(r['weaviate_rest_bytes_per_object'])} / {_num(r['heap_bytes_per_object'])} | "
            f"{r['disk_bytes_per_object']:.0f} | {lat} |"
        )
    lines += [
        "",
        "## Composed queries, HNSW, with and without the second stage (K = 10)",
        "",
        "| gallery | clients | first stage p50 / p90 / p99 ms | q/s | service CPU ms/q | "
        "with rerank p50 / p90 / p99 ms | q/s | service CPU ms/q |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in report["queries"]:
        f, s = r["first"], r["rerank"]
        lines.append(
            f"| {r['size']} | {r['clients']} | {f.get('p50_ms')} / {f.get('p90_ms')} / "
            f"{f.get('p99_ms')} | {f['queries_per_s']} | {f.get('service_cpu_ms_per_query')} | "
            f"{s.get('p50_ms')} / {s.get('p90_ms')} / {s.get('p99_ms')} | {s['queries_per_s']} | "
            f"{s.get('service_cpu_ms_per_query')} |"
        )
    lines += [
        "",
        "## Quality against distractors",
        "",
        "| gallery | images | first stage R@1 / R@10 (all queries) | first stage R@1 / R@10 "
        "(reranked queries) | after rerank R@1 / R@10 |",
        "|---|---|---|---|---|",
    ]
    for r in sorted(report["quality"], key=lambda r: r["objects"]):
        cells = [
            f"{r[p].get('R@1', 0):.1f} / {r[p].get('R@10', 0):.1f}"
            for p in ("first_stage", "first_stage_on_reranked_queries", "reranked")
        ]
        lines.append(f"| {r['size']} | {r['objects']} | " + " | ".join(cells) + " |")
    lines += [
        "",
        "## The service's memory (RSS, MiB)",
        "",
        "| gallery | after import (per variant) | queries: start | after queries | peak |",
        "|---|---|---|---|---|",
    ]
    for r in report["service"]:
        imported = ", ".join(f"{v} {_mib(b)}" for v, b in r["after_import"].items()) or "–"
        lines.append(
            f"| {r['size']} | {imported} | {_mib(r['start'])} | {_mib(r['after_queries'])} | "
            f"{_mib(r['peak'])} |"
        )
    p = report["projection"]
    lines += [
        "",
        "## Projection (from the measured per-object figures)",
        "",
        f"Vector dimensions: {p.get('dims')}; the stored image and object add "
        f"{p.get('blob_and_object_disk_bytes_per_object') or 0:.0f} B per object on disk.",
        "",
        "| index | RSS / heap B/object | disk B/object | recall@10, p99 ms (largest) | 1M: one "
        "node GiB RAM / disk | 10M: one node GiB RAM / disk | 10M: each of 3 nodes (RF 3) GiB "
        "RAM / disk |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, e in p["indexes"].items():
        one, ten = e["1000000"], e["10000000"]
        recall = e["recall_at_k_largest"]
        lines.append(
            f"| {name} | {_num(e['memory_bytes_per_object'])} / "
            f"{_num(e['heap_bytes_per_object'])} | {e['disk_bytes_per_object']:.0f} | "
            f"{'–' if recall is None else f'{recall:.4f}'}, {e['p99_ms_1_client_largest']} | "
            f"{_gib(one['one_node_memory'])} / {_gib(one['one_node_disk'])} | "
            f"{_gib(ten['one_node_memory'])} / {_gib(ten['one_node_disk'])} | "
            f"{_gib(ten['cluster3_rf3_memory_per_node'])} / "
            f"{_gib(ten['cluster3_rf3_disk_per_node'])} |"
        )
    lines += [
        "",
        "RAM per node = an empty server's RSS + the RSS slope x objects (x replicas / nodes); "
        "– where the slope is not positive (galleries too small for the readings' noise). "
        f"Suggested default index (recall@10 >= 0.99, p99 <= 50 ms at 1 client, least memory): "
        f"{p.get('suggested_default') or '– (none qualifies)'}.",
    ]
    if p.get("documented_hnsw"):
        d1, d10 = p["documented_hnsw"]["1000000"], p["documented_hnsw"]["10000000"]
        lines += [
            "",
            f"Weaviate's documented HNSW model (maxConnections {HNSW_MAX_CONNECTIONS}, "
            f"{BYTES_PER_LINK} B per link): 1M {_gib(d1['model'])} GiB (base layer full: "
            f"{_gib(d1['upper'])}; rule of thumb {_gib(d1['rule_of_thumb'])}), 10M "
            f"{_gib(d10['model'])} GiB ({_gib(d10['upper'])}; {_gib(d10['rule_of_thumb'])}).",
        ]
    for variant, s in p["service"].items():
        lines.append(
            f"\nOne service (this machine's {CPU_CORES} cores), {variant}: "
            f"{s['objects_per_s_largest']} objects/s: 1M in {s['import_hours_1M']:.1f} h, "
            f"10M in {s['import_hours_10M']:.1f} h."
        )
    walls = ", ".join(f"{k}: {v / 60:.1f} min" for k, v in report["wall_s_by_size"].items() if v)
    lines += ["", f"Step wall time by gallery (sum of its steps): {walls}.", ""]
    for run in report.get("runs", []):
        lines.append(
            f"- run of {run['started']}: {run['wall_s'] / 60:.1f} min, `{' '.join(run['argv'])}`"
        )
    lines.append("")
    return "\n".join(lines)


def plots(report: dict[str, Any], folder: Path) -> list[Path]:
    """The curves as PNGs in ``folder``: import rate, memory and disk per object, latency, and
    quality / recall against the gallery's size."""
    try:
        import matplotlib
    except ImportError:
        raise SystemExit("--plots needs matplotlib: pip install matplotlib") from None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    folder.mkdir(parents=True, exist_ok=True)
    written = []

    def save(fig: Any, name: str) -> None:
        path = folder / name
        fig.tight_layout()
        fig.savefig(path, dpi=110)
        plt.close(fig)
        written.append(path)

    def by(rows: list[dict], key: str) -> dict[str, list[dict]]:
        groups: dict[str, list[dict]] = {}
        for r in sorted(rows, key=lambda r: int(r["size"]) if str(r["size"]).isdigit() else 0):
            groups.setdefault(str(r[key]), []).append(r)
        return groups

    fig, ax = plt.subplots(figsize=(6, 4))
    for variant, rows in by(report["imports"], "variant").items():
        ax.plot([r["size"] for r in rows], [r["objects_per_s"] for r in rows], "o-", label=variant)
    ax.axhline(150, color="grey", ls="--", lw=1, label="target 150/s")
    ax.set(xscale="log", xlabel="gallery (objects)", ylabel="objects/s", title="Import")
    ax.legend()
    save(fig, "scale-import.png")

    fig, axes = plt.subplots(1, 3, figsize=(14, 4))
    indexes = [r for r in report["indexes"] if "refused" not in r]
    for name, rows in by(indexes, "index").items():
        sizes = [r["size"] for r in rows]
        axes[0].plot(sizes, [r["weaviate_rest_bytes_per_object"] for r in rows], "o-", label=name)
        axes[1].plot(sizes, [r["disk_bytes_per_object"] for r in rows], "o-", label=name)
    axes[0].set(xscale="log", xlabel="objects", ylabel="bytes/object", title="Weaviate RSS")
    axes[1].set(xscale="log", xlabel="objects", ylabel="bytes/object", title="Data folder")
    service = [r for r in report["service"] if r["size"].isdigit()]
    axes[2].plot(
        [int(r["size"]) for r in service],
        [r["after_queries"] / 2**20 for r in service],
        "o-",
        label="after queries",
    )
    for variant in sorted({v for r in service for v in r["after_import"]}):
        rows = [r for r in service if variant in r["after_import"]]
        axes[2].plot(
            [int(r["size"]) for r in rows],
            [r["after_import"][variant] / 2**20 for r in rows],
            "o--",
            label=f"after import, {variant}",
        )
    axes[2].set(xscale="log", xlabel="objects", ylabel="MiB", title="Service RSS")
    axes[2].set_ylim(bottom=0)
    for ax in axes:
        ax.legend(fontsize=7)
    save(fig, "scale-memory.png")

    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    rows = [r for r in report["queries"] if r["size"].isdigit()]
    for clients, group in by(rows, "clients").items():
        sizes = [int(r["size"]) for r in group]
        for ax, key in zip(axes, ("first", "rerank"), strict=True):
            ax.plot(sizes, [r[key]["p50_ms"] for r in group], "o-", label=f"p50, {clients} cl.")
            ax.plot(sizes, [r[key]["p99_ms"] for r in group], "x--", label=f"p99, {clients} cl.")
    axes[0].axhline(50, color="grey", ls="--", lw=1)
    axes[0].set(xscale="log", xlabel="objects", ylabel="ms", title="First stage (HNSW)")
    axes[1].set(xscale="log", yscale="log", xlabel="objects", ylabel="ms", title="With rerank")
    for ax in axes:
        ax.legend(fontsize=7)
    save(fig, "scale-latency.png")

    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    quality = sorted(report["quality"], key=lambda r: r["objects"])
    x = [r["objects"] for r in quality]
    for key, label in (
        ("first_stage", "first stage"),
        ("first_stage_on_reranked_queries", "first stage (reranked queries)"),
        ("reranked", "after rerank"),
    ):
        for at in ("R@1", "R@10"):
            style = "x--" if key == "first_stage_on_reranked_queries" else "o-"
            axes[0].plot(x, [r[key].get(at) for r in quality], style, label=f"{label} {at}")
    axes[0].set(xscale="log", xlabel="gallery (objects)", ylabel="%", title="Quality")
    for name, group in by(indexes, "index").items():
        if name != "flat" and any(r["recall_at_k"] is not None for r in group):
            axes[1].plot(
                [r["size"] for r in group], [r["recall_at_k"] for r in group], "o-", label=name
            )
    axes[1].axhline(0.99, color="grey", ls="--", lw=1)
    axes[1].set(xscale="log", xlabel="objects", ylabel="recall@10", title="Recall vs flat")
    for ax in axes:
        ax.legend(fontsize=7)
    save(fig, "scale-quality.png")
    return written


def write_report(out: Path, k: int, images: Path | None) -> dict[str, Any]:
    """Build the report from ``OUT/results``, write ``summary.json`` and ``summary.md`` (and
    the plots into ``images`` when given); returns it."""
    results = Results(out / "results").all()
    report = build_report(results, k)
    runs = out / "runs.jsonl"
    if runs.is_file():
        report["runs"] = [json.loads(line) for line in runs.read_text().splitlines() if line]
    (out / "summary.json").write_text(json.dumps(report, indent=1, default=str) + "\n")
    text = markdown(report)
    (out / "summary.md").write_text(text)
    print(text)
    if images is not None:
        for path in plots(report, images):
            log.info("wrote %s", path)
    return report


# --------------------------------------------------------------------------- CLI


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """The command line (see the module's docstring)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", default=".cache/data/hard-s0", help="hard-tier data folder")
    parser.add_argument("--out", type=Path, default=Path("runs/scale"))
    parser.add_argument("--sizes", type=int, nargs="+", default=list(DEFAULT_SIZES))
    parser.add_argument("--queries", type=int, default=300, help="test queries (first N)")
    parser.add_argument(
        "--rerank-queries", type=int, default=100, help="of those, sent with the second stage"
    )
    parser.add_argument("--clients", type=int, nargs="+", default=list(DEFAULT_CLIENTS))
    parser.add_argument("--k", type=int, default=10, help="results per query (and reranked)")
    parser.add_argument(
        "--variants", nargs="+", choices=ONNX_VARIANTS, default=list(ONNX_VARIANTS),
        help="ONNX variants imported with; the first one's vectors feed the other steps",
    )  # fmt: skip
    parser.add_argument(
        "--indexes", nargs="+", choices=sorted(INDEXES), default=list(DEFAULT_INDEXES)
    )
    parser.add_argument(
        "--steps", nargs="+", choices=("import", "index", "queries"),
        default=["import", "index", "queries"],
    )  # fmt: skip
    parser.add_argument("--checkpoint", type=Path, default=shipped_checkpoint(HARD_TIER_MODEL))
    parser.add_argument(
        "--reranker",
        type=Path,
        default=Path(shipped_checkpoint(HARD_TIER_MODEL)).parent / HARD_TIER_VERIFIER,
    )
    parser.add_argument("--onnx", type=Path, help="cir export folder (default OUT/onnx)")
    parser.add_argument("--distractor-seed", type=int, default=0)
    parser.add_argument("--tune-objects", type=int, default=600)
    parser.add_argument("--tune-batch-sizes", type=int, nargs="+", default=[16, 64])
    parser.add_argument("--tune-concurrency", type=int, nargs="+", default=[2, 4, 8])
    parser.add_argument("--tune-workers", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--batch-size", type=int, help="skip the tune: objects per batch")
    parser.add_argument("--concurrency", type=int, help="skip the tune: concurrent batches")
    parser.add_argument("--model-workers", type=int, help="skip the tune: CIR_MODEL_WORKERS")
    parser.add_argument(
        "--redo", nargs="+", default=[],
        help="steps to run again even if done (e.g. index-hnsw, import, queries, all)",
    )  # fmt: skip
    parser.add_argument("--report-only", action="store_true", help="tables from OUT only")
    parser.add_argument(
        "--plots", action="store_true", help="write the PNGs (into --images, docs/images/)"
    )
    parser.add_argument("--images", type=Path, default=Path("docs/images"))
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    for noisy in ("httpx", "httpcore"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    began = time.perf_counter()
    if not args.report_only:
        started = time.strftime("%Y-%m-%dT%H:%M:%S")
        run = ScaleRun(args)
        run.run()
        wall = time.perf_counter() - began
        log.info("run wall time %.1f min (%d steps run)", wall / 60, run.ran)
        if run.ran:
            with (args.out / "runs.jsonl").open("a") as runs:  # every run's wall time, kept
                line = {"started": started, "argv": sys.argv[1:], "wall_s": round(wall, 1)}
                runs.write(json.dumps(line) + "\n")
    write_report(args.out, args.k, args.images if args.plots else None)


if __name__ == "__main__":
    main()
