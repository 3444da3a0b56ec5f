"""A lean HTTP/1.1 load generator: keep-alive connections over asyncio streams, request bodies
encoded before the clock starts.

The benchmarks run the load generator on the same cores as the service it measures. A full
client library (httpx: request objects, header models, JSON encoding per call) spent about a
third of a core there at a few hundred requests per second, taken from the service under test.
Weaviate, the real client, is a Go program on its own cores. This sends the same bytes a
client library would and reads responses framed by ``Content-Length`` (what uvicorn sends
for a JSON answer).
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from urllib.parse import urlsplit

__all__ = ["LoadRun", "encode_bodies", "post_loop"]


@dataclass
class LoadRun:
    """What one load window did: answered requests, their latencies, and failures."""

    requests: int = 0
    seconds: float = 0.0
    latencies: list[float] = field(default_factory=list)
    errors: int = 0


def encode_bodies(bodies: Sequence[dict]) -> list[bytes]:
    """JSON bodies as the bytes that go on the wire."""
    return [json.dumps(body).encode() for body in bodies]


async def _read_response(reader: asyncio.StreamReader) -> int:
    """Read one response; its status code."""
    status_line = await reader.readline()
    if not status_line:
        raise ConnectionError("server closed the connection")
    length = 0
    while (line := await reader.readline()) not in (b"\r\n", b""):
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value)
    await reader.readexactly(length)
    return int(status_line.split()[1])


async def post_loop(url: str, path: str, bodies: Sequence[bytes], clients: int, seconds: float):
    """``clients`` connections, each posting the next of ``bodies`` to ``path`` as soon as its
    previous answer is read, for ``seconds``. A :class:`LoadRun`."""
    parts = urlsplit(url)
    host, port = parts.hostname or "127.0.0.1", parts.port or 80
    run = LoadRun()
    stop_at = time.perf_counter() + seconds

    async def client(k: int) -> None:
        reader, writer = await asyncio.open_connection(host, port)
        try:
            i = k
            while time.perf_counter() < stop_at:
                body = bodies[i % len(bodies)]
                start = time.perf_counter()
                writer.write(
                    b"POST %s HTTP/1.1\r\nHost: %s\r\nContent-Type: application/json\r\n"
                    b"Content-Length: %d\r\n\r\n%s"
                    % (path.encode(), host.encode(), len(body), body)
                )
                if await _read_response(reader) == 200:
                    run.latencies.append(time.perf_counter() - start)
                    run.requests += 1
                else:
                    run.errors += 1
                i += clients
        finally:
            writer.close()

    began = time.perf_counter()
    await asyncio.gather(*(client(k) for k in range(clients)))
    run.seconds = time.perf_counter() - began
    return run
