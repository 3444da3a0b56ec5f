"""A real, pinned Weaviate server: installed with ``go install`` into a cache, run on 127.0.0.1.

The binary is built once per version into ``$CIR_CACHE_DIR`` (default ``~/.cache/weaviate-cir``)
and reused. The server runs with a temporary data folder, both inference modules enabled and
their URLs pointing at our service, which must be ready first: Weaviate polls it at start-up
and exits if it is not there within 120 s.

A server is one node: by default a cluster of one; given the :class:`ClusterNode` of every
member (``cluster``), it joins them on 127.0.0.1 (``integration.stack.local_cluster``).
"""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
import tempfile
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import httpx

from integration.processes import ManagedProcess, free_port, free_port_pair

__all__ = [
    "WEAVIATE_VERSION",
    "ClusterNode",
    "WeaviateServer",
    "cache_dir",
    "go_install",
    "install_weaviate",
]

log = logging.getLogger(__name__)

WEAVIATE_VERSION = "1.39.0"
WEAVIATE_MODULE = "github.com/weaviate/weaviate/cmd/weaviate-server"


def cache_dir() -> Path:
    """Where built binaries and other downloads are kept between runs."""
    return Path(os.environ.get("CIR_CACHE_DIR", Path.home() / ".cache" / "weaviate-cir"))


def install_weaviate(version: str = WEAVIATE_VERSION) -> Path:
    """Path to ``weaviate-server`` for ``version``, building it with ``go install`` if absent."""
    target = cache_dir() / "bin" / f"v{version}" / "weaviate-server"
    if target.is_file():
        return target
    go = shutil.which("go")
    if go is None:
        raise RuntimeError("Go (>= 1.26) is needed to build Weaviate: install it and retry")
    target.parent.mkdir(parents=True, exist_ok=True)
    log.info("building Weaviate v%s with go install (first time only; minutes)", version)
    start = time.perf_counter()
    with tempfile.TemporaryDirectory(dir=target.parent) as gobin:
        env = {**os.environ, "GOBIN": gobin, "CGO_ENABLED": "0"}
        go_install(go, f"{WEAVIATE_MODULE}@v{version}", env)
        os.replace(Path(gobin) / "weaviate-server", target)  # atomic: no half-written binary
    log.info("built Weaviate v%s in %.0fs -> %s", version, time.perf_counter() - start, target)
    return target


def go_install(
    go: str, module: str, env: dict[str, str], every_s: float = 30.0, cwd: Path | None = None
) -> None:
    """``go install -v module`` (in ``cwd``), saying every ``every_s`` seconds how far it got.

    The build takes minutes and go prints nothing until it fails; ``-v`` names each package
    as it is compiled, and those lines are counted here (the count is the progress; the
    total is not known before the build).
    """
    start = time.perf_counter()
    process = subprocess.Popen(
        [go, "install", "-v", module],
        env=env,
        cwd=cwd,
        stderr=subprocess.PIPE,
        text=True,
        errors="replace",
    )
    assert process.stderr is not None
    lines: list[str] = []
    stop = threading.Event()

    def report() -> None:
        while not stop.wait(every_s):
            log.info(
                "go install %s: %d packages compiled, %.0fs (last: %s)",
                module,
                len(lines),
                time.perf_counter() - start,
                lines[-1].strip() if lines else "downloading modules",
            )

    reporter = threading.Thread(target=report, daemon=True)
    reporter.start()
    try:
        for line in process.stderr:
            lines.append(line)
    finally:
        stop.set()
        process.wait()
    if process.returncode != 0:
        errors = "".join(lines[-40:])
        raise RuntimeError(f"go install {module} failed ({process.returncode}):\n{errors}")


@dataclass(frozen=True)
class ClusterNode:
    """A Weaviate node's place in a cluster: its name and its two port pairs on 127.0.0.1.

    Gossip (memberlist) listens on ``gossip_port`` and the inter-node data API on the port
    above it; Raft on ``raft_port`` and its internal RPC on the port above it. Nodes that share
    a host (``CLUSTER_IN_LOCALHOST``) find a peer's RPC port as its Raft port + 1, and the
    data port + 1 is memberlist's fallback, so both come in adjacent pairs.
    """

    hostname: str
    gossip_port: int
    raft_port: int

    @classmethod
    def free(cls, hostname: str) -> ClusterNode:
        """A node called ``hostname`` on ports that are free now."""
        return cls(hostname, free_port_pair(), free_port_pair())

    @property
    def data_port(self) -> int:
        return self.gossip_port + 1

    @property
    def raft_rpc_port(self) -> int:
        return self.raft_port + 1


class WeaviateServer(ManagedProcess):
    """One Weaviate process on 127.0.0.1 with free ports; a context manager.

    ``clip_url`` and ``reranker_url`` are the origins of the inference service, e.g.
    ``http://127.0.0.1:8081``. Extra environment variables go in ``env``. ``http_port`` and
    ``grpc_port`` default to free ports; a standing stack (``cir up``) fixes them so that
    clients find it where ``connect_to_local`` looks.

    ``node`` names this server in its cluster (default: ``cir-node-1`` on free ports);
    ``cluster`` lists every member, this one included, for a server that joins the others
    (Raft voters all of them, bootstrapped once all are up). A server stopped with
    :meth:`kill` and started again comes back as the same node with the same data.
    """

    def __init__(
        self,
        clip_url: str,
        reranker_url: str | None = None,
        *,
        version: str = WEAVIATE_VERSION,
        data_dir: Path | None = None,
        env: dict[str, str] | None = None,
        startup_timeout: float = 180.0,
        http_port: int | None = None,
        grpc_port: int | None = None,
        node: ClusterNode | None = None,
        cluster: Sequence[ClusterNode] = (),
    ) -> None:
        super().__init__()
        # Ports the caller did not give may be chosen again after a bind failure, until the
        # server has served once (then clients and peers know them: a restart keeps them).
        # A member of a larger cluster keeps its node's ports: the peers were told them
        # (``local_cluster`` chooses new ones for every member instead).
        # Data in a folder the caller gave may name the old ports (Raft keeps its members'
        # addresses), so such a server keeps its ports too.
        self._chosen = {
            "http": http_port is None,
            "grpc": grpc_port is None,
            "node": node is None and not cluster,
            "data": data_dir is None,
        }
        self._served = False
        self.node = node or ClusterNode.free("cir-node-1")
        self.cluster = tuple(cluster) or (self.node,)
        if self.node not in self.cluster:
            raise ValueError(f"{self.node.hostname} is not among the cluster's nodes")
        self.version = version
        self.clip_url = clip_url
        self.reranker_url = reranker_url or clip_url
        self.http_port = http_port or free_port()
        self.grpc_port = grpc_port or free_port()
        self._own_data_dir = data_dir is None
        self.data_dir = data_dir or Path(tempfile.mkdtemp(prefix="weaviate-data-"))
        self.log_path = self.data_dir.parent / f"{self.data_dir.name}.log"
        self.extra_env = env or {}
        self.startup_timeout = startup_timeout
        self.binary: Path | None = None
        self.served_version: str | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    def environment(self) -> dict[str, str]:
        """The environment the server runs with."""
        node, peers = self.node, [m for m in self.cluster if m != self.node]
        cluster = {
            "CLUSTER_HOSTNAME": node.hostname,
            "CLUSTER_GOSSIP_BIND_PORT": str(node.gossip_port),
            "CLUSTER_DATA_BIND_PORT": str(node.data_port),
            "RAFT_PORT": str(node.raft_port),
            "RAFT_INTERNAL_RPC_PORT": str(node.raft_rpc_port),
            "RAFT_BOOTSTRAP_EXPECT": str(len(self.cluster)),
        }
        if peers:
            cluster |= {
                # All members share 127.0.0.1: peers are told apart by port, not by address.
                "CLUSTER_IN_LOCALHOST": "true",
                # Else memberlist binds every interface and advertises the host's first
                # private address: gossip and the traffic that follows it stay on loopback.
                "CLUSTER_BIND_ADDR": "127.0.0.1",
                "CLUSTER_ADVERTISE_ADDR": "127.0.0.1",
                # Every peer, not one seed: a restarted node rejoins whichever ones are up.
                "CLUSTER_JOIN": ",".join(f"127.0.0.1:{m.gossip_port}" for m in peers),
                "RAFT_JOIN": ",".join(f"{m.hostname}:{m.raft_port}" for m in self.cluster),
            }
        return {
            **os.environ,
            "AUTHENTICATION_ANONYMOUS_ACCESS_ENABLED": "true",
            "PERSISTENCE_DATA_PATH": str(self.data_dir),
            "ENABLE_MODULES": "multi2vec-clip,reranker-transformers",
            "DEFAULT_VECTORIZER_MODULE": "none",
            "CLIP_INFERENCE_API": self.clip_url,
            "RERANKER_INFERENCE_API": self.reranker_url,
            **cluster,
            "GRPC_PORT": str(self.grpc_port),
            "DISABLE_TELEMETRY": "true",
            # The debug listener binds :6060 on every interface: nodes on one host would
            # race for it, and nothing here reads it.
            "GO_PROFILING_DISABLE": "true",
            "LOG_LEVEL": "info",
            **self.extra_env,
        }

    def spawn(self) -> WeaviateServer:
        """Install if needed and start, without waiting (:meth:`start` waits too): a cluster's
        nodes are ready only once enough of them run to elect a Raft leader, so they are
        spawned first, then awaited."""
        binary = self.binary = install_weaviate(self.version)
        command = [str(binary), "--host", "127.0.0.1", "--port", str(self.http_port)]
        self._spawn([*command, "--scheme", "http"], self.environment())
        return self

    def choose_new_ports(self) -> bool:
        """New free ports for those the launcher chose, if the server never served; ``False``
        if the failed start may have been on a port that cannot change (given by the caller,
        known to clients since the server served, a cluster member's, or named by data in a
        folder the caller gave)."""
        if self._served or not all(self._chosen.values()):
            return False
        # A fresh start: what the failed one wrote (Raft's state) holds the old addresses.
        shutil.rmtree(self.data_dir, ignore_errors=True)
        self.data_dir.mkdir()
        self.http_port, self.grpc_port = free_port(), free_port()
        self.node = ClusterNode.free(self.node.hostname)
        self.cluster = (self.node,)
        return True

    def ports(self) -> dict[str, int]:
        node = self.node
        return {
            "http": self.http_port,
            "grpc": self.grpc_port,
            "gossip": node.gossip_port,
            "data": node.data_port,
            "raft": node.raft_port,
            "raft_rpc": node.raft_rpc_port,
        }

    def wait_until_ready(self) -> WeaviateServer:
        """Wait until ``/v1/.well-known/ready`` answers (the process must be spawned)."""
        self._wait_ready(
            f"{self.url}/v1/.well-known/ready", f"Weaviate v{self.version}", self.startup_timeout
        )
        self._served = True
        self.served_version = httpx.get(f"{self.url}/v1/meta", timeout=5).json().get("version")
        log.info(
            "Weaviate v%s serving on %s (grpc %d)", self.served_version, self.url, self.grpc_port
        )
        return self

    def stop(self, timeout: float = 30.0) -> None:
        """Stop the server and remove its temporary data folder."""
        super().stop(timeout)
        if self._own_data_dir:
            shutil.rmtree(self.data_dir, ignore_errors=True)
