"""Minimal reproduction: Weaviate 1.39 loses vector-index entries of a batch when it is killed
right after the batch returned, while the objects survive (issue 40, item 8).

    python scripts/weaviate_kill_repro.py [--rounds 10] [--objects 12]

One node (no cluster, no replication, no vectorizer: the vectors are given), a collection with
a ``flat`` index. Each round: a fresh collection, one batch of ``--objects`` objects with their
own vectors (answered without error), SIGKILL, restart on the same data; then the objects are
listed (the object store) and counted against an exhaustive ``nearVector`` (the vector index).
Prints, per round, how many objects the vector index lost. ``--then-insert`` is the control:
one more object inserted alone (a single write flushes the logs after its vector is indexed)
between the batch and the kill, and nothing is lost.

Weaviate's batch (``adapters/repos/db/shard_write_batch_objects.go``, ``Objects``) only queues
the vector-index jobs (``storeAdditionalStorageWithWorkers``), flushes the write-ahead logs
(``flushWALs``), and ``putBatch`` waits for the jobs afterwards: what the jobs write to the
index's bucket stays in the WAL's in-memory buffer until the next flush. The inference
service is started only because the server waits for its modules' endpoints at start-up.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np
from weaviate.classes.config import Configure, DataType, Property, VectorDistances
from weaviate.classes.data import DataObject

from cir_module.models import create_model
from integration.service_process import ServiceProcess
from integration.stack import connect
from integration.weaviate_server import WeaviateServer


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--objects", type=int, default=12)
    parser.add_argument("--dim", type=int, default=64)
    parser.add_argument(
        "--then-insert",
        action="store_true",
        help="control: one more object inserted alone before the kill (its write flushes the "
        "logs, the batch's vectors with them)",
    )
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    lost_rounds = 0
    with tempfile.TemporaryDirectory() as folder:
        checkpoint = Path(folder) / "tiny-clip"
        create_model("tiny-clip").save_pretrained(checkpoint)
        data = Path(folder) / "weaviate-data"
        with ServiceProcess(checkpoint) as service:
            server = WeaviateServer(service.url, data_dir=data).start()
            try:
                for round_ in range(args.rounds):
                    name = f"KillRepro_{uuid.uuid4().hex[:8]}"
                    with connect(server) as client:
                        collection = client.collections.create(
                            name,
                            properties=[Property(name="n", data_type=DataType.INT)],
                            vector_config=Configure.Vectors.self_provided(
                                vector_index_config=Configure.VectorIndex.flat(
                                    distance_metric=VectorDistances.COSINE
                                )
                            ),
                        )
                        vectors = rng.standard_normal((args.objects, args.dim)).astype("float32")
                        result = collection.data.insert_many(
                            [
                                DataObject(properties={"n": i}, vector=v.tolist())
                                for i, v in enumerate(vectors)
                            ]
                        )
                        assert not result.errors, result.errors
                        if args.then_insert:
                            extra = rng.standard_normal(args.dim).astype("float32")
                            collection.data.insert({"n": -1}, vector=extra.tolist())
                    server.kill()  # SIGKILL, as soon as the batch has answered
                    server.start()
                    with connect(server) as client:
                        collection = client.collections.get(name)
                        held = sum(1 for _ in collection.iterator())
                        found = len(
                            collection.query.near_vector(
                                near_vector=vectors[0].tolist(), limit=10 * args.objects
                            ).objects
                        )
                    lost_rounds += found < held
                    print(
                        f"round {round_}: {held} objects held, {found} found by an exhaustive "
                        f"nearVector: {held - found} lost by the vector index",
                        flush=True,
                    )
            finally:
                server.stop()
    print(f"{lost_rounds} of {args.rounds} rounds lost vector-index entries")
    return 1 if lost_rounds else 0


if __name__ == "__main__":
    sys.exit(main())
