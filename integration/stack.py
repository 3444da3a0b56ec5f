"""The embedded default: our service and a real Weaviate on 127.0.0.1, started in order; and
a local cluster of such pairs, each Weaviate node with its own service beside it."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import weaviate
from weaviate.classes.init import AdditionalConfig, Auth, Timeout

from integration.processes import ManagedProcess, PortInUse
from integration.service_process import ServiceProcess
from integration.weaviate_server import WEAVIATE_VERSION, ClusterNode, WeaviateServer

__all__ = [
    "LocalCluster",
    "LocalStack",
    "connect",
    "connect_to_url",
    "local_cluster",
    "local_stack",
]

log = logging.getLogger(__name__)


@dataclass
class LocalStack:
    """One Weaviate and the inference service it calls."""

    service: ServiceProcess
    weaviate: WeaviateServer


@dataclass
class LocalCluster:
    """Weaviate nodes joined in one cluster on 127.0.0.1, each with its own service."""

    nodes: list[LocalStack]

    def healthy_nodes(self, via: int = 0) -> dict[str, str]:
        """Each member's status as node ``via`` sees it (``/v1/nodes``), by node name."""
        answer = httpx.get(f"{self.nodes[via].weaviate.url}/v1/nodes", timeout=10)
        answer.raise_for_status()
        return {n["name"]: n["status"] for n in answer.json()["nodes"]}

    def wait_until_joined(self, timeout: float = 120.0) -> None:
        """Wait until every running node reports every member ``HEALTHY``: a node that was
        just (re)started is ready before the others have seen it come back."""
        expected = {stack.weaviate.node.hostname: "HEALTHY" for stack in self.nodes}
        deadline = time.monotonic() + timeout
        seen: dict[str, str] = {}
        while time.monotonic() < deadline:
            try:
                views = [self.healthy_nodes(i) for i in range(len(self.nodes))]
            except httpx.HTTPError as error:
                seen = {"error": str(error)}
            else:
                if all(view == expected for view in views):
                    return
                seen = next(view for view in views if view != expected)
            time.sleep(0.5)
        raise TimeoutError(f"cluster not joined after {timeout:.0f}s: {seen}")

    def raft_leader(self, via: int = 0) -> int:
        """The index of the node that leads the schema's Raft group, as node ``via`` sees it
        (``/v1/cluster/statistics``). Killing the leader is the harder fault: schema reads
        fail until the others have elected a new one."""
        answer = httpx.get(f"{self.nodes[via].weaviate.url}/v1/cluster/statistics", timeout=10)
        answer.raise_for_status()
        leaders = [
            s["name"]
            for s in answer.json()["statistics"]
            if (s.get("raft") or {}).get("state") == "Leader"
        ]
        names = [stack.weaviate.node.hostname for stack in self.nodes]
        if len(leaders) != 1 or leaders[0] not in names:
            raise RuntimeError(f"no single Raft leader among {names}: {leaders}")
        return names.index(leaders[0])

    def restart_node(self, index: int) -> WeaviateServer:
        """Start node ``index`` again (after :meth:`ManagedProcess.kill`): same name, ports and
        data; returns once every node sees it healthy."""
        server = self.nodes[index].weaviate.start()
        self.wait_until_joined()
        return server


def connect(
    server: WeaviateServer, *, query_timeout_s: float | None = None
) -> weaviate.WeaviateClient:
    """A v4 client connected to ``server`` over HTTP and gRPC.

    Init checks are skipped: the server is known ready, and they include a version look-up
    on PyPI, which must not leave loopback. ``query_timeout_s`` replaces the client's default
    query deadline (30 s), e.g. for reranks of hundreds of candidates on a busy machine.
    """
    additional = None
    if query_timeout_s is not None:
        additional = AdditionalConfig(timeout=Timeout(query=query_timeout_s))
    return weaviate.connect_to_local(
        host="127.0.0.1",
        port=server.http_port,
        grpc_port=server.grpc_port,
        skip_init_checks=True,
        additional_config=additional,
    )


def connect_to_url(
    url: str, grpc_port: int = 50051, api_key: str | None = None
) -> weaviate.WeaviateClient:
    """A v4 client for the Weaviate at ``url`` (``http://host:port``, https for TLS), whose
    gRPC port is ``grpc_port`` on the same host, sending ``api_key`` when given (the compose
    stack requires one). Init checks are skipped, as in :func:`connect`: they include a
    version look-up on PyPI."""
    parts = urlsplit(url if "://" in url else f"http://{url}")
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"not a Weaviate URL (http://host:port): {url!r}")
    secure = parts.scheme == "https"
    return weaviate.connect_to_custom(
        http_host=parts.hostname,
        http_port=parts.port or (443 if secure else 80),
        http_secure=secure,
        grpc_host=parts.hostname,
        grpc_port=grpc_port,
        grpc_secure=secure,
        auth_credentials=Auth.api_key(api_key) if api_key else None,
        skip_init_checks=True,
    )


@contextmanager
def local_stack(
    checkpoint: str | Path,
    *,
    weaviate_version: str = WEAVIATE_VERSION,
    env: dict[str, str] | None = None,
    http_port: int | None = None,
    grpc_port: int | None = None,
    service_port: int | None = None,
    data_dir: Path | None = None,
) -> Iterator[LocalStack]:
    """Start the service (and wait until its model is loaded), then Weaviate pointing at it.
    ``env`` adds ``CIR_*`` settings for the service. Ports are free ones unless given;
    ``data_dir`` keeps Weaviate's data there (default: a temporary folder, removed on stop)."""
    with (
        ServiceProcess(checkpoint, env=env, port=service_port) as service,
        WeaviateServer(
            service.url,
            version=weaviate_version,
            data_dir=data_dir,
            http_port=http_port,
            grpc_port=grpc_port,
        ) as server,
    ):
        yield LocalStack(service=service, weaviate=server)


def _joined_servers(
    service_urls: list[str], weaviate_version: str, stack: ExitStack
) -> list[WeaviateServer]:
    """One Weaviate node per service, joined in one cluster and ready; stopped by ``stack``.

    The nodes are spawned side by side, since none is ready until a Raft leader is elected.
    Should one of them fail to listen on a port (taken since it was chosen), every node is
    stopped and the cluster started again on new ports, a few times: the members' ports are
    in every node's join lists, so one node alone cannot move."""
    for attempt in range(1, ManagedProcess.port_attempts + 1):
        names = [f"cir-node-{i + 1}" for i in range(len(service_urls))]
        members = [ClusterNode.free(name) for name in names]
        servers = [
            WeaviateServer(url, version=weaviate_version, node=node, cluster=members)
            for url, node in zip(service_urls, members, strict=True)
        ]
        for server in servers:
            stack.callback(server.stop)
            server.peers = [other for other in servers if other is not server]
            server.spawn()
        try:
            for server in servers:
                server.ready()
        except PortInUse as error:
            if attempt == ManagedProcess.port_attempts:
                raise
            log.warning(
                "a cluster node could not listen, a port was taken; starting the %d nodes "
                "again on new ports: %s",
                len(servers),
                str(error)[:300],
            )
            for server in servers:
                server.keep_log = False  # the failure is retried and logged here
                server.stop()
            continue
        for server in servers:
            server.peers = ()  # a restarted node waits for itself only
        return servers
    raise AssertionError("unreachable")


@contextmanager
def local_cluster(
    checkpoint: str | Path,
    nodes: int = 3,
    *,
    weaviate_version: str = WEAVIATE_VERSION,
    env: dict[str, str] | None = None,
) -> Iterator[LocalCluster]:
    """``nodes`` Weaviate nodes on 127.0.0.1, joined in one cluster (all Raft voters), each
    with its own service (``CLIP_INFERENCE_API`` and ``RERANKER_INFERENCE_API`` point at it),
    as one inference container beside each node. Services start first (Weaviate polls its
    service at start-up); the nodes are spawned together, since none is ready until a Raft
    leader is elected, and the cluster is yielded once every node sees every member healthy.
    ``env`` adds ``CIR_*`` settings for the services. Data folders are temporary.

    A port taken by another process between its choice and the bind is met by starting again
    on new ports: a service alone, the nodes all together (each was told the others' ports)."""
    services = [ServiceProcess(checkpoint, env=env) for _ in range(nodes)]
    with ExitStack() as stack:
        for service in services:  # side by side: n start-ups at once, not one after another
            stack.callback(service.stop)
            service.spawn()
        for service in services:
            service.ready()  # on another port if its own was taken (then its URL changes)
        servers = _joined_servers([s.url for s in services], weaviate_version, stack)
        cluster = LocalCluster([LocalStack(s, w) for s, w in zip(services, servers, strict=True)])
        cluster.wait_until_joined()
        yield cluster
