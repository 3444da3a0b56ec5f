"""Scale-out: import objects/s and composed queries/s on 1 Weaviate node against 3 nodes.

    python benchmarks/cluster.py [--objects 120] [--rounds 3] [--seconds 20] [--clients 6]
                                 [--checkpoint <folder>] [--soak 0]

Both layouts run at once, each node with its own service (``local_cluster``): one node, and
three nodes holding a collection of 3 shards replicated 3 times. Each round, on each side in
turn: an import of ``--objects`` new images spread over the nodes (``ingest_until_stored``,
checked through ``failed_objects``), then ``--seconds`` of composed ``nearText`` + ``rerank``
(limit 20) at QUORUM from ``--clients`` threads spread over the nodes. The sides alternate
because the machine is shared and its speed drifts; every ratio is from this one run.

``--soak S`` then runs S seconds of that query load on the 3 nodes while each node in turn is
killed (SIGKILL) and restarted, and counts the failed queries: those whose node was up (the
consistency promise) apart from those sent to the node being killed. It is the long form of
tests/test_cluster.py's fault test and is not part of the test suite.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import random
import statistics
import sys
import threading
import time
import uuid
from contextlib import ExitStack
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from weaviate.classes.config import ConsistencyLevel
from weaviate.classes.query import Rerank
from weaviate.exceptions import WeaviateBaseError

from cir_module import compose_query
from cir_module.checkpoints import shipped_checkpoint
from cir_module.data.shapes import random_images
from cir_module.images import encode_image_base64
from integration.ingest import ingest_until_stored
from integration.schema import create_image_collection
from integration.stack import LocalCluster, connect, local_cluster

log = logging.getLogger("benchmark")

MODIFICATIONS = ["make it blue", "add a small star", "remove the circle", "make it larger"]


class Side:
    """One layout under test: its cluster, a client per node and the collection handles."""

    def __init__(self, label: str, cluster: LocalCluster, stack: ExitStack) -> None:
        self.label = label
        self.cluster = cluster
        self.clients = [
            stack.enter_context(connect(node.weaviate, query_timeout_s=300))
            for node in cluster.nodes
        ]
        self.name = f"CIRBench_{uuid.uuid4().hex[:8]}"
        nodes = len(cluster.nodes)
        create_image_collection(
            self.clients[0],
            self.name,
            text_properties=("key",),
            replication_factor=nodes if nodes > 1 else None,
            shards=nodes,
        )
        stack.callback(self.clients[0].collections.delete, self.name)
        self.handles = [c.collections.get(self.name) for c in self.clients]
        self.imported = {"objects": 0, "seconds": 0.0}
        self.queried = {"queries": 0, "failed": 0, "seconds": 0.0, "latencies": []}

    def import_objects(self, objects: list[tuple[str, dict]]) -> None:
        began = time.perf_counter()
        final, _ = ingest_until_stored(self.handles, objects, rounds=3, wait_s=1.0)
        self.imported["seconds"] += time.perf_counter() - began
        if final.failed:
            raise RuntimeError(f"{self.label}: {len(final.failed)} objects not stored")
        self.imported["objects"] += len(objects)

    def query_load(self, queries: list[str], clients: int, seconds: float) -> dict:
        """``clients`` threads, thread k on node k mod n, each looping composed queries."""
        run = run_query_load(self, queries, clients, seconds)
        for key in ("queries", "failed", "seconds"):
            self.queried[key] += run[key]
        self.queried["latencies"] += run["latencies"]
        return run


def composed(handle, query: str) -> int:
    """One composed ``nearText`` + ``rerank`` at QUORUM; the number of objects returned."""
    result = handle.with_consistency_level(ConsistencyLevel.QUORUM).query.near_text(
        query=query, limit=20, rerank=Rerank(prop="image", query=query), return_properties=["key"]
    )
    return len(result.objects)


def run_query_load(
    side: Side,
    queries: list[str],
    clients: int,
    seconds: float,
    chaos: bool = False,
) -> dict:
    """Composed queries from ``clients`` threads for ``seconds``. With ``chaos`` (a soak),
    each query goes to a node that is running when it is sent, and a failure is counted apart
    when that node was killed meanwhile."""
    stop_at = time.perf_counter() + seconds
    lock = threading.Lock()
    out = {"queries": 0, "failed": 0, "on_killed_node": 0, "latencies": [], "errors": []}

    def client(k: int) -> None:
        rng = random.Random(k)
        while time.perf_counter() < stop_at:
            node = k % len(side.handles)
            if chaos:
                up = [i for i, n in enumerate(side.cluster.nodes) if n.weaviate.running]
                node = rng.choice(up)
            began = time.perf_counter()
            try:
                found = composed(side.handles[node], rng.choice(queries))
                ok = found > 0
            except WeaviateBaseError as error:
                ok, found = False, str(error)[:200]
            with lock:
                out["queries"] += 1
                if ok:
                    out["latencies"].append(time.perf_counter() - began)
                elif chaos and not side.cluster.nodes[node].weaviate.running:
                    out["on_killed_node"] += 1
                else:
                    out["failed"] += 1
                    out["errors"].append(found)

    began = time.perf_counter()
    threads = [threading.Thread(target=client, args=(k,)) for k in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    out["seconds"] = time.perf_counter() - began
    return out


def soak(side: Side, queries: list[str], clients: int, seconds: float) -> dict:
    """Query load on every node while each in turn is killed, left down, then restarted."""
    kills: list[str] = []

    def killer() -> None:
        stop_at = time.perf_counter() + seconds
        i = 0
        while time.perf_counter() < stop_at - 20:
            time.sleep(5)
            node = side.cluster.nodes[i % len(side.cluster.nodes)]
            node.weaviate.kill()
            kills.append(node.weaviate.node.hostname)
            time.sleep(5)
            side.cluster.restart_node(i % len(side.cluster.nodes))
            i += 1

    thread = threading.Thread(target=killer)
    thread.start()
    run = run_query_load(side, queries, clients, seconds, chaos=True)
    thread.join()
    run["kills"] = kills
    run["count_per_node"] = [len(h) for h in side.handles]
    return run


def summary(side: Side) -> dict:
    q, i = side.queried, side.imported
    lat = sorted(q["latencies"])
    return {
        "objects_per_s": i["objects"] / i["seconds"],
        "objects": i["objects"],
        "queries_per_s": (q["queries"] - q["failed"]) / q["seconds"],
        "queries": q["queries"],
        "failed": q["failed"],
        "p50_ms": 1000 * statistics.median(lat) if lat else float("nan"),
        "p95_ms": 1000 * lat[int(0.95 * (len(lat) - 1))] if lat else float("nan"),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--objects", type=int, default=120, help="imported per round and side")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=20.0, help="query time per round")
    parser.add_argument("--clients", type=int, default=6, help="query threads per side")
    parser.add_argument("--checkpoint", default=str(shipped_checkpoint()))
    parser.add_argument("--soak", type=float, default=0.0, help="seconds of kill/restart soak")
    parser.add_argument("--json-out")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)

    images = [encode_image_base64(im) for im in random_images(args.objects * args.rounds, 7)]
    queries = [compose_query(images[i], MODIFICATIONS[i % len(MODIFICATIONS)]) for i in range(32)]
    with ExitStack() as stack:
        sides = [
            Side(
                f"{n} node{'s' * (n > 1)}",
                stack.enter_context(local_cluster(args.checkpoint, n)),
                stack,
            )
            for n in (1, 3)
        ]
        for r in range(args.rounds):
            batch = [
                (f"r{r}-{i}", {"image": b, "key": f"r{r}-{i}"})
                for i, b in enumerate(images[r * args.objects : (r + 1) * args.objects])
            ]
            for side in sides if r % 2 == 0 else sides[::-1]:
                side.import_objects(batch)
                run = side.query_load(queries, args.clients, args.seconds)
                log.info("round %d, %s: %d queries, %d failed", r + 1, side.label,
                         run["queries"], run["failed"])  # fmt: skip
        results = {side.label: summary(side) for side in sides}
        for side in sides:
            counts = [len(h) for h in side.handles]
            if set(counts) != {args.objects * args.rounds}:
                raise RuntimeError(f"{side.label}: counts per node {counts}")
        soaked = soak(sides[1], queries, args.clients, args.soak) if args.soak else None
    report(results, soaked, args)
    if args.json_out:
        Path(args.json_out).write_text(json.dumps({"results": results, "soak": soaked}, indent=2))


def report(results: dict, soaked: dict | None, args) -> None:
    one, three = results["1 node"], results["3 nodes"]
    print(
        f"\n{Path(args.checkpoint).name}, {os.cpu_count()} CPU cores; per side {args.rounds} "
        f"rounds of {args.objects} imported objects and {args.seconds:.0f} s of composed "
        f"queries (limit 20, rerank) from {args.clients} clients at QUORUM"
    )
    print(f"{'side':8s} {'import obj/s':>12s} {'queries/s':>10s} {'p50 ms':>7s} {'p95 ms':>7s} "
          f"{'queries':>8s} {'failed':>6s}")  # fmt: skip
    for label, r in results.items():
        print(
            f"{label:8s} {r['objects_per_s']:12.1f} {r['queries_per_s']:10.2f} "
            f"{r['p50_ms']:7.0f} {r['p95_ms']:7.0f} {r['queries']:8d} {r['failed']:6d}"
        )
    print(
        f"ratio 3 nodes / 1 node: import {three['objects_per_s'] / one['objects_per_s']:.2f}, "
        f"queries {three['queries_per_s'] / one['queries_per_s']:.2f}"
    )
    if soaked is not None:
        print(
            f"soak {args.soak:.0f} s on 3 nodes, killed in turn {soaked['kills']}: "
            f"{soaked['queries']} queries, {soaked['failed']} failed on a running node, "
            f"{soaked['on_killed_node']} sent to the node being killed; objects per node "
            f"afterwards {soaked['count_per_node']}"
        )
        if soaked["errors"]:
            print(f"first failures: {soaked['errors'][:3]}")


if __name__ == "__main__":
    main()
