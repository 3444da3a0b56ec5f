"""The least an HTTP vectorizer can do per request: read the body, answer one vector.

``benchmarks/throughput.py`` runs it under uvicorn with the service's HTTP/1.1 parser and event
loop, driven by the same load generator and bodies as the service, to measure the per-request
cost that no service of this design avoids (the serving floor). ``FLOOR_DIM`` sets the length
of the vector it answers.
"""

from __future__ import annotations

import json
import os

__all__ = ["app"]

_ANSWER = json.dumps(
    {"textVectors": [], "imageVectors": [[0.1234567] * int(os.environ.get("FLOOR_DIM", "128"))]},
    separators=(",", ":"),
).encode()
_HEADERS = [(b"content-type", b"application/json"), (b"content-length", b"%d" % len(_ANSWER))]


async def app(scope, receive, send) -> None:
    """Any HTTP request (uvicorn runs it with ``--lifespan off``): its body read to the end,
    then the same JSON answer."""
    more = True
    while more:
        more = (await receive()).get("more_body", False)
    await send({"type": "http.response.start", "status": 200, "headers": _HEADERS})
    await send({"type": "http.response.body", "body": _ANSWER})
