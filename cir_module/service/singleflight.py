"""Single-flight: concurrent requests that need the same value compute it once.

Weaviate splits one rerank into chunks of 32 documents and sends them at once, each with the
same query. The query side (the composed query's reference image decoded, its embedding, the
LVLM's shared prefix) is the same for every chunk: the first chunk computes it, the others
await that computation, and the result is kept briefly for chunks that arrive later. The
expiry slides: each use keeps an entry another ``ttl_s``, so a query whose chunks trickle in
(Weaviate sends NumCPU at a time; a loaded machine answers slowly) is computed once however
long its rerank takes.
"""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, TypeVar

__all__ = ["FlightStats", "SingleFlight"]

T = TypeVar("T")


@dataclass
class FlightStats:
    """How often a value was computed and how often a computation was shared."""

    computed: int = 0
    shared: int = 0

    def as_dict(self) -> dict[str, int]:
        return {"computed": self.computed, "shared": self.shared}


class SingleFlight:
    """An async memo with in-flight deduplication, at most ``capacity`` entries, each kept
    until ``ttl_s`` seconds after its last use. Failures are not kept: the next caller
    retries. ``clock`` is the time source (tests pass their own)."""

    def __init__(
        self,
        capacity: int = 64,
        ttl_s: float = 30.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.capacity = capacity
        self.ttl_s = ttl_s
        self._clock = clock
        self.stats = FlightStats()
        self._entries: OrderedDict[str, tuple[float, asyncio.Future]] = OrderedDict()

    async def get(self, key: str, compute: Callable[[], Awaitable[T]]) -> T:
        """The value for ``key``: shared from a flight in progress or a recent one, else
        ``compute()``."""
        now = self._clock()
        entry = self._entries.get(key)
        if entry is not None and (not entry[1].done() or now - entry[0] < self.ttl_s):
            self.stats.shared += 1
            self._entries[key] = (now, entry[1])  # used now: kept another ttl_s
            self._entries.move_to_end(key)
            try:
                return await asyncio.shield(entry[1])
            except asyncio.CancelledError:
                task = asyncio.current_task()
                if not entry[1].cancelled() or (task is not None and task.cancelling()):
                    raise
            # The request computing it went away (its client disconnected): compute it here.
        if self.capacity <= 0:
            self.stats.computed += 1
            return await compute()
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._entries[key] = (now, future)
        self._evict()
        self.stats.computed += 1
        try:
            value = await compute()
        except BaseException as exc:
            self._entries.pop(key, None)
            if isinstance(exc, asyncio.CancelledError):
                future.cancel()
            else:
                future.set_exception(exc)
                future.exception()  # retrieved: waiters re-raise it, nobody logs it twice
            raise
        future.set_result(value)
        self._entries[key] = (self._clock(), future)
        return value

    def _evict(self) -> None:
        while len(self._entries) > self.capacity:
            self._entries.popitem(last=False)  # waiters keep their own reference
