"""A replicated collection's vector indexes checked against its objects, node by node, and
mended where a node holds an object that its vector index lost.

Weaviate 1.39 (``ASYNC_INDEXING`` off, its default) can lose vector-index entries on a node
that is killed (SIGKILL, OOM, power loss) shortly after a batch import: the batch flushes its
write-ahead logs before its vector-index workers have written the vectors
(``adapters/repos/db/shard_write_batch_objects.go``: ``Objects`` runs
``storeAdditionalStorageWithWorkers``, which only queues the jobs, then ``flushWALs``, and
``putBatch`` waits for the workers afterwards without flushing again). The objects survive the
restart, with their vectors, but the vector index's bucket misses them, so every search
through that node silently leaves them out. Async replication does not mend it: its hash tree
is built from the objects, which agree on every node. See docs/operations.md, "A node killed
after an import".
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

from weaviate import WeaviateClient
from weaviate.classes.config import ConsistencyLevel
from weaviate.collections import Collection

__all__ = ["repair_vector_index", "vector_index_gaps"]

log = logging.getLogger(__name__)

MAX_EXHAUSTIVE = 10_000  # Weaviate's default QUERY_MAXIMUM_RESULTS


def stored_vectors(collection: Collection, vector_name: str = "default") -> dict[str, list]:
    """Every object's UUID and stored vector (the object store, not the vector index)."""
    return {
        str(o.uuid): o.vector[vector_name]
        for o in collection.iterator(include_vector=True, return_properties=[])
    }


def vector_index_gaps(
    clients: Sequence[WeaviateClient], name: str, vector_name: str = "default"
) -> dict[int, set[str]]:
    """Per node (the index of its client in ``clients``), the UUIDs of the objects of ``name``
    that a search through that node cannot find: one ``nearVector`` asking for every object.

    A node searches its own replica of each shard, so in a collection whose every shard has
    a replica on every node this reads each node's vector index. Exhaustive for the ``flat``
    index; with HNSW a miss may also be the approximation. Run it once every node has caught
    up (the objects are listed through the first client)."""
    vectors = stored_vectors(clients[0].collections.get(name), vector_name)
    if len(vectors) > MAX_EXHAUSTIVE:
        raise ValueError(
            f"{len(vectors)} objects: more than one search returns ({MAX_EXHAUSTIVE}); "
            "check each object's own vector instead"
        )
    if not vectors:
        return {node: set() for node in range(len(clients))}
    probe = next(iter(vectors.values()))
    gaps = {}
    for node, client in enumerate(clients):
        result = client.collections.get(name).query.near_vector(
            near_vector=probe, target_vector=vector_name, limit=len(vectors), return_properties=[]
        )
        gaps[node] = set(vectors) - {str(o.uuid) for o in result.objects}
    return gaps


def repair_vector_index(
    collection: Collection, uuids: Sequence[str], vector_name: str = "default"
) -> int:
    """Write each object's own vector again on every replica (consistency ``ALL``), so that
    a node whose vector index lost it indexes it again; returns how many were written.

    Weaviate skips the vector index when an update leaves the vector as it was (issues
    3948/3949), so each object is written twice: with its vector nudged in the last bit of
    one component (a new doc id, indexed everywhere), then with its own vector again. Its
    properties are left alone (a merge) and nothing is vectorised again."""
    everywhere = collection.with_consistency_level(ConsistencyLevel.ALL)
    for uuid in uuids:
        stored = everywhere.query.fetch_object_by_id(
            uuid, include_vector=True, return_properties=[]
        )
        if stored is None:
            continue
        vector = list(stored.vector[vector_name])
        nudged = [*vector[:-1], vector[-1] + (abs(vector[-1]) or 1.0) * 2**-20]
        everywhere.data.update(uuid=uuid, vector={vector_name: nudged})
        everywhere.data.update(uuid=uuid, vector={vector_name: vector})
    if uuids:
        log.warning("wrote %d objects' vectors again on every replica: %s", len(uuids), uuids[:5])
    return len(uuids)
