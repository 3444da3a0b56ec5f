"""The embedded default: our service and a real Weaviate on 127.0.0.1, started in order."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import weaviate
from weaviate.classes.init import AdditionalConfig, Auth, Timeout

from integration.service_process import ServiceProcess
from integration.weaviate_server import WEAVIATE_VERSION, WeaviateServer

__all__ = ["LocalStack", "connect", "connect_to_url", "local_stack"]


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
