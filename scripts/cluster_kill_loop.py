"""Loop tests/test_cluster.py's node-kill fault and compare every node's ranking afterwards
(issue 40, item 8).

    python scripts/cluster_kill_loop.py [--cycles 20] [--watch 30] [--repair] [--vary-seed]
                                        [--report cycles.jsonl] [--stop-on-failure]

One 3-node cluster (``local_cluster``, tiny random model) serves every cycle. Each cycle does
what the node-kill test does: a new collection (3 shards, each on all 3 nodes, ``flat``
index), 60 images imported through node 1, a composed query load at QUORUM on the two nodes
that do not lead the schema's Raft group, the leader killed (SIGKILL), 20 images written at
QUORUM while it is down, the leader restarted and waited for until it holds every object
itself (``node_name`` reads). Then:

* ``index_gaps``: per node, the objects that a search through it cannot find
  (``integration.consistency.vector_index_gaps``);
* through every node, the same composed ``nearText`` (limit 10, no rerank, so that only the
  vector search decides) and a ``nearVector`` over all 80 objects; a node whose ids differ
  from the other two's has its missing objects diagnosed: does the node hold the object and
  its vector (``node_name``, ``include=vector``), does a ``nearVector`` with that very vector
  find it through the node, and what do its shards report (``/v1/nodes?output=verbose``);
* without ``--repair``, a differing node is watched for ``--watch`` seconds (does it mend by
  itself?); with ``--repair``, the gaps are mended
  (``integration.consistency.repair_vector_index``) and the rankings compared again.

Exit status 1 if a ranking still differed after the watch or the repair.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import httpx
from weaviate import WeaviateClient
from weaviate.classes.config import ConsistencyLevel
from weaviate.classes.query import MetadataQuery
from weaviate.collections import Collection
from weaviate.exceptions import WeaviateBaseError

from cir_module import compose_query
from cir_module.models import create_model
from integration.consistency import repair_vector_index, vector_index_gaps
from integration.ingest import ingest_objects, ingest_until_stored, object_uuid
from integration.stack import LocalCluster, connect, local_cluster
from tests.test_cluster import composed_search, gallery, missing_on, replicated_collection

log = logging.getLogger("kill-loop")

NODES = 3


def ranked_keys(
    collection: Collection, limit: int, *, query: str | None = None, vector=None
) -> list[tuple[str, float]]:
    """``(key, distance)`` best first, of a composed ``nearText`` (``query``, no rerank) or
    of a ``nearVector`` (``vector``)."""
    search, target = (
        (collection.query.near_text, {"query": query})
        if query is not None
        else (collection.query.near_vector, {"near_vector": vector})
    )
    result = search(
        **target,
        limit=limit,
        return_properties=["key"],
        return_metadata=MetadataQuery(distance=True),
    )
    return [(o.properties["key"], o.metadata.distance) for o in result.objects]


def own_copy(cluster: LocalCluster, name: str, key: str, node: int, via: int) -> dict:
    """Node ``node``'s own copy of ``key``'s object with its vector (asked through ``via``)."""
    url = f"{cluster.nodes[via].weaviate.url}/v1/objects/{name}/{object_uuid(key)}"
    params = {"node_name": cluster.nodes[node].weaviate.node.hostname, "include": "vector"}
    answer = httpx.get(url, params=params, timeout=60)
    if answer.status_code != 200:
        return {"status": answer.status_code}
    body = answer.json()
    vector = (body.get("vectors") or {}).get("default") or body.get("vector") or []
    return {"status": 200, "vector": vector, "lastUpdate": body.get("lastUpdateTimeUnix")}


def shards_report(cluster: LocalCluster, node: int, name: str) -> list[dict]:
    """What node ``node`` says of its own shards of ``name`` (``/v1/nodes`` verbose)."""
    url = f"{cluster.nodes[node].weaviate.url}/v1/nodes/{name}"
    answer = httpx.get(url, params={"output": "verbose"}, timeout=30).json()
    hostname = cluster.nodes[node].weaviate.node.hostname
    keep = ("name", "objectCount", "vectorIndexingStatus", "vectorQueueLength", "loaded")
    keep += ("asyncReplicationStatus",)
    return [
        {k: s.get(k) for k in keep}
        for n in answer.get("nodes", [])
        if n["name"] == hostname
        for s in n.get("shards") or []
    ]


def diagnose(
    cluster: LocalCluster,
    clients: list[WeaviateClient],
    name: str,
    node: int,
    reference: int,
    missing: list[str],
) -> dict:
    """Why node ``node`` leaves out ``missing``, which node ``reference`` returns."""
    out: dict = {"shards": {n: shards_report(cluster, n, name) for n in range(NODES)}}
    collection = clients[node].collections.get(name)
    per_key = {}
    for key in missing:
        mine = own_copy(cluster, name, key, node, node)
        theirs = own_copy(cluster, name, key, reference, node)
        entry = {
            "held": mine["status"],
            "has_vector": bool(mine.get("vector")),
            "same_vector": mine.get("vector") == theirs.get("vector"),
            "same_update_time": mine.get("lastUpdate") == theirs.get("lastUpdate"),
        }
        if theirs.get("vector"):
            # Its own vector at distance ~0: found unless the vector index lacks it.
            hits = ranked_keys(collection, 3, vector=theirs["vector"])
            entry["found_by_own_vector"] = [h for h in hits if h[0] == key]
            entry["top_by_own_vector"] = hits
        per_key[key] = entry
    out["missing"] = per_key
    return out


def compare(clients: list[WeaviateClient], name: str, query: str, vector: list[float]) -> dict:
    """Each node's ``nearText`` top 10 and ``nearVector`` over everything, by node index."""
    answers = {}
    for node, client in enumerate(clients):
        collection = client.collections.get(name)
        answers[node] = {
            "text": ranked_keys(collection, 10, query=query),
            "vector": ranked_keys(collection, 100, vector=vector),
        }
    return answers


def differing(answers: dict) -> dict[int, dict[str, list[str]]]:
    """Per node whose ids differ from the majority's: what it left out, by search."""
    out: dict[int, dict[str, list[str]]] = {}
    for search in ("text", "vector"):
        ids = {node: [k for k, _ in a[search]] for node, a in answers.items()}
        for node in ids:
            others = [ids[o] for o in ids if o != node]
            if others[0] == others[1] and ids[node] != others[0]:
                left_out = [k for k in others[0] if k not in ids[node]]
                out.setdefault(node, {})[search] = left_out or ["(order differs)"]
    return out


def run_cycle(
    cluster: LocalCluster, clients: list[WeaviateClient], cycle: int, args: argparse.Namespace
) -> dict:
    """One kill/restart of the Raft leader as in the test; returns what was seen."""
    name = f"CIRKillLoop_{uuid.uuid4().hex[:8]}"
    seed = 53 + 10 * cycle if args.vary_seed else 53
    objects = gallery(60, seed=seed)
    late = gallery(20, seed=seed + 1, first=60)
    assert ingest_objects(replicated_collection(clients[0], name), objects).failed == []
    victim = cluster.raft_leader()
    live = [n for n in range(NODES) if n != victim]
    collection = clients[live[0]].collections.get(name)
    query = compose_query(objects[0][1]["image"], "make it red")
    killed = threading.Event()
    failures: list[str] = []

    def load(node: int) -> None:
        quorum = clients[node].collections.get(name).with_consistency_level(ConsistencyLevel.QUORUM)
        after = 0
        for _ in range(500):
            was_killed = killed.is_set()
            try:
                composed_search(quorum, query)
            except WeaviateBaseError as error:
                failures.append(str(error)[:200])
            after += was_killed
            if after >= 12:
                return

    threads = [threading.Thread(target=load, args=(n,)) for n in live]
    for thread in threads:
        thread.start()
    time.sleep(2.0)
    cluster.nodes[victim].weaviate.kill()
    killed.set()
    written, _ = ingest_until_stored(
        collection.with_consistency_level(ConsistencyLevel.QUORUM), late, rounds=4
    )
    for thread in threads:
        thread.join(timeout=300)
    restarted = time.monotonic()
    cluster.restart_node(victim)
    keys = [k for k, _ in objects + late]
    for _ in range(180):
        if not (missing := missing_on(cluster, victim, name, keys, live[0])):
            break
        time.sleep(1.0)
    caught_up = time.monotonic() - restarted
    vector = own_copy(cluster, name, objects[0][0], live[0], live[0])["vector"]
    key_of = {object_uuid(k): k for k in keys}
    gaps = vector_index_gaps(clients, name)
    seen = {
        "cycle": cycle,
        "collection": name,
        "victim": victim,
        "late_failed": len(written.failed),
        "load_failures": failures[:3],
        "not_caught_up": missing[:5],
        "caught_up_s": round(caught_up, 1),
        "index_gaps": {n: sorted(key_of[u] for u in g) for n, g in gaps.items() if g},
    }
    answers = compare(clients, name, query, vector)
    first = differing(answers)
    seen["first_check"] = first
    if first:
        seen["answers"] = answers
        node, what = next(iter(first.items()))
        left_out = sorted({k for keys_ in what.values() for k in keys_ if k.startswith("k")})
        reference = next(n for n in range(NODES) if n != node)
        seen["diagnosis"] = diagnose(cluster, clients, name, node, reference, left_out)
    if args.repair:
        gapped = sorted(set().union(*gaps.values()))
        repair_vector_index(clients[live[0]].collections.get(name), gapped)
        seen["repaired"] = len(gapped)
        after = vector_index_gaps(clients, name)
        seen["index_gaps_after_repair"] = {n: len(g) for n, g in after.items() if g}
        seen["after_repair"] = differing(compare(clients, name, query, vector))
    elif first:
        deadline = time.monotonic() + args.watch
        last = first
        while last and time.monotonic() < deadline:
            time.sleep(2.0)
            last = differing(compare(clients, name, query, vector))
        seen["after_watch"] = last
        seen["watched_s"] = args.watch
        if last:
            node, what = next(iter(first.items()))
            left_out = sorted({k for keys_ in what.values() for k in keys_ if k.startswith("k")})
            reference = next(n for n in range(NODES) if n != node)
            seen["diagnosis_after_watch"] = diagnose(
                cluster, clients, name, node, reference, left_out
            )
    if not first or args.drop_failed:
        clients[0].collections.delete(name)
    return seen


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cycles", type=int, default=20)
    parser.add_argument("--watch", type=float, default=30.0, help="seconds a miss is watched")
    parser.add_argument(
        "--repair", action="store_true", help="mend index gaps, then compare the rankings again"
    )
    parser.add_argument("--vary-seed", action="store_true", help="other images every cycle")
    parser.add_argument("--drop-failed", action="store_true", help="delete failed collections")
    parser.add_argument("--stop-on-failure", action="store_true")
    parser.add_argument("--report", type=Path, default=None, help="JSON lines, one per cycle")
    args = parser.parse_args()
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    logging.getLogger("httpx").setLevel(logging.WARNING)
    shown = still = 0
    with tempfile.TemporaryDirectory() as folder:
        checkpoint = Path(folder) / "tiny-clip"
        create_model("tiny-clip").save_pretrained(checkpoint)
        with local_cluster(checkpoint, NODES) as cluster:
            for node in cluster.nodes:
                node.weaviate.keep_log = True  # the logs are read after a failure
            log.info("logs: %s", [str(n.weaviate.log_path) for n in cluster.nodes])
            clients = [connect(n.weaviate, query_timeout_s=120) for n in cluster.nodes]
            try:
                for cycle in range(args.cycles):
                    seen = run_cycle(cluster, clients, cycle, args)
                    failed = bool(seen.get("after_watch") or seen.get("after_repair"))
                    shown += bool(seen["first_check"])
                    still += failed
                    log.info("cycle %d: %s", cycle, json.dumps(seen, default=str)[:4000])
                    if args.report:
                        with args.report.open("a") as out:
                            out.write(json.dumps(seen, default=str) + "\n")
                    if failed and args.stop_on_failure:
                        break
            finally:
                for client in clients:
                    client.close()
    log.info(
        "%d of %d cycles showed a differing ranking; %d still after the watch or the repair",
        shown,
        cycle + 1,
        still,
    )
    return 1 if still else 0


if __name__ == "__main__":
    sys.exit(main())
