"""Admission: a bounded, first-come-first-served queue in items and decoded pixels.

Weaviate never retries a 503 and sends up to NumCPU rerank chunks (and 2 x NumCPU
vectorisations) at once, so a full service must make requests wait rather than refuse them:
a request waits in line until its items and pixels fit, and is refused (503) only when it
has waited past the deadline. A request that could never fit is refused at once (413).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from collections.abc import AsyncIterator
from dataclasses import dataclass

from cir_module.errors import InputError, Overloaded

__all__ = ["Admission", "AdmissionLimits"]


@dataclass(frozen=True)
class AdmissionLimits:
    """Capacity of the service (everything admitted at once) and the wait allowed."""

    max_items: int = 1024
    max_pixels: int = 128_000_000
    timeout_s: float = 30.0


@dataclass
class _Waiter:
    items: int
    pixels: int
    ready: asyncio.Future


class Admission:
    """Holds items and pixels for admitted requests; later requests wait in order."""

    def __init__(self, limits: AdmissionLimits) -> None:
        self.limits = limits
        self.items = 0
        self.pixels = 0
        self.waiting: deque[_Waiter] = deque()
        self.timed_out = 0

    def _fits(self, items: int, pixels: int) -> bool:
        return (
            self.items + items <= self.limits.max_items
            and self.pixels + pixels <= self.limits.max_pixels
        )

    @contextlib.asynccontextmanager
    async def hold(self, items: int, pixels: int = 0) -> AsyncIterator[None]:
        """Hold ``items`` and ``pixels`` for the block, after waiting for them if needed."""
        if items > self.limits.max_items:
            raise InputError(
                f"request holds {items} items; at most {self.limits.max_items} are accepted "
                "at once",
                413,
            )
        if pixels > self.limits.max_pixels:
            raise InputError(
                f"request decodes {pixels} pixels; at most {self.limits.max_pixels} are "
                "accepted at once",
                413,
            )
        if not self.waiting and self._fits(items, pixels):
            self._take(items, pixels)
        else:
            await self._wait(items, pixels)
        try:
            yield
        finally:
            self.items -= items
            self.pixels -= pixels
            self._wake()

    def _take(self, items: int, pixels: int) -> None:
        self.items += items
        self.pixels += pixels

    async def _wait(self, items: int, pixels: int) -> None:
        waiter = _Waiter(items, pixels, asyncio.get_running_loop().create_future())
        self.waiting.append(waiter)
        try:
            await asyncio.wait_for(asyncio.shield(waiter.ready), self.limits.timeout_s)
        except TimeoutError:
            if waiter.ready.done():  # admitted at the last moment: keep it
                return
            self.waiting.remove(waiter)
            self.timed_out += 1
            self._wake()  # the next in line may fit now that this one left
            raise Overloaded(
                f"the service is full ({self.items} items, {self.pixels} pixels in flight) "
                f"and the request waited {self.limits.timeout_s:g}s"
            ) from None
        except asyncio.CancelledError:  # the client went away while waiting
            if waiter.ready.done():
                self.items -= items
                self.pixels -= pixels
            else:
                self.waiting.remove(waiter)
            self._wake()
            raise

    def _wake(self) -> None:
        """Admit waiters in arrival order while the first one fits (no overtaking, so a
        large request is not starved by small ones)."""
        while self.waiting and self._fits(self.waiting[0].items, self.waiting[0].pixels):
            waiter = self.waiting.popleft()
            self._take(waiter.items, waiter.pixels)
            waiter.ready.set_result(None)
