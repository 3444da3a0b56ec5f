"""The embedded default: our service and a real Weaviate on 127.0.0.1, started in order."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import weaviate
from weaviate.classes.init import AdditionalConfig, Timeout

from integration.service_process import ServiceProcess
from integration.weaviate_server import WEAVIATE_VERSION, WeaviateServer

__all__ = ["LocalStack", "connect", "local_stack"]


@dataclass
class LocalStack:
    service: ServiceProcess
    weaviate: WeaviateServer


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


@contextmanager
def local_stack(
    checkpoint: str | Path,
    *,
    weaviate_version: str = WEAVIATE_VERSION,
    env: dict[str, str] | None = None,
) -> Iterator[LocalStack]:
    """Start the service (and wait until its model is loaded), then Weaviate pointing at it.
    ``env`` adds ``CIR_*`` settings for the service."""
    with (
        ServiceProcess(checkpoint, env=env) as service,
        WeaviateServer(service.url, version=weaviate_version) as server,
    ):
        yield LocalStack(service=service, weaviate=server)
