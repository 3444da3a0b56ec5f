"""Cross-request batching: concurrent requests' items gathered into one model call.

Weaviate vectorises one object per request with several requests in flight; a model is far
faster on one batch of 16 than on 16 batches of 1. A :class:`MicroBatcher` collects the items
submitted while the model is busy (or for at most ``max_wait_s`` after the first one) into
batches of at most ``max_batch_size``, runs them, and hands each request its own rows, in
order. With ``concurrency`` above 1, that many batches run at once (on as many model threads):
the next batch forms while the previous ones run.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = ["BatchStats", "MicroBatcher"]

log = logging.getLogger(__name__)

# Runs a batch function on the model thread: (fn, columns...) -> rows.
Runner = Callable[..., Awaitable[np.ndarray]]


@dataclass
class BatchStats:
    """Counters for ``/meta`` and the benchmark: how well requests were merged."""

    batches: int = 0
    items: int = 0
    requests: int = 0

    @property
    def mean_batch_size(self) -> float:
        return self.items / self.batches if self.batches else 0.0

    def as_dict(self) -> dict[str, Any]:
        return {
            "batches": self.batches,
            "items": self.items,
            "requests": self.requests,
            "mean_batch_size": round(self.mean_batch_size, 2),
        }


@dataclass
class _Job:
    columns: tuple[Sequence[Any], ...]
    future: asyncio.Future

    def __len__(self) -> int:
        return len(self.columns[0])


class MicroBatcher:
    """Batches calls of ``fn(*columns) -> rows`` across concurrent :meth:`submit` calls.

    ``fn`` receives equally long column lists (e.g. images and texts) and returns one row per
    item. If a merged batch fails, each request is retried alone, so that one bad input fails
    only its own request.
    """

    def __init__(
        self,
        fn: Callable[..., np.ndarray],
        run: Runner,
        max_batch_size: int = 32,
        max_wait_s: float = 0.002,
        name: str = "batch",
        on_batch: Callable[[str, int], None] | None = None,
        concurrency: int = 1,
    ) -> None:
        if concurrency < 1:
            raise ValueError(f"concurrency must be at least 1; got {concurrency}")
        self.fn = fn
        self.run = run
        self.max_batch_size = max_batch_size
        self.max_wait_s = max_wait_s
        self.name = name
        self.on_batch = on_batch
        self.stats = BatchStats()
        self._pending: deque[_Job] = deque()
        self._arrived = asyncio.Event()
        self._worker: asyncio.Task | None = None
        # A batch is gathered only once a slot is free: at concurrency 1, what arrives while
        # the model runs waits and forms the next batch, as it always did.
        self.concurrency = concurrency
        self._slots = asyncio.Semaphore(concurrency)
        self._running: set[asyncio.Task] = set()  # to cancel on close
        # Counted apart from ``_running``: a task leaves that set a loop turn after its slot
        # is free again, and the next gather must see the slot as free.
        self._running_batches = 0

    @property
    def queue_depth(self) -> int:
        """Requests waiting for the model."""
        return len(self._pending)

    async def submit(self, *columns: Sequence[Any]) -> np.ndarray:
        """The rows of ``fn(*columns)``, computed together with other requests' items."""
        if self._worker is None or self._worker.done():
            self._worker = asyncio.create_task(self._serve(), name=f"batcher-{self.name}")
        job = _Job(columns, asyncio.get_running_loop().create_future())
        self.stats.requests += 1
        self._pending.append(job)
        self._arrived.set()
        return await job.future

    def close(self) -> None:
        if self._worker is not None:
            self._worker.cancel()
        for task in list(self._running):
            task.cancel()

    async def _next_arrival(self, timeout: float | None) -> bool:
        self._arrived.clear()
        try:
            await asyncio.wait_for(self._arrived.wait(), timeout)
        except TimeoutError:
            return False
        return True

    async def _gather(self) -> list[_Job]:
        """The oldest waiting job, plus those that fit in the batch and arrive within the
        wait. A job that would overflow the batch stays first in line for the next one.

        While other slots are free, the waiting items are shared out among them instead of
        all merged into this batch: on a CPU, two single-thread forwards of one image each
        serve more than one two-thread forward of both.
        """
        while not self._pending:
            await self._next_arrival(None)
        free = self.concurrency - self._running_batches  # this slot included
        waiting = sum(len(job) for job in self._pending)
        limit = min(self.max_batch_size, -(-waiting // free))
        jobs = [self._pending.popleft()]
        size = len(jobs[0])
        deadline = asyncio.get_running_loop().time() + self.max_wait_s
        while size < limit:
            if self._pending:
                if size + len(self._pending[0]) > limit:
                    break
                jobs.append(self._pending.popleft())
                size += len(jobs[-1])
                continue
            remaining = deadline - asyncio.get_running_loop().time()
            if remaining <= 0 or not await self._next_arrival(remaining):
                break
        return jobs

    async def _serve(self) -> None:
        while True:
            await self._slots.acquire()
            try:
                jobs = await self._gather()
            except BaseException:
                self._slots.release()
                raise
            self._running_batches += 1
            task = asyncio.create_task(self._run_in_slot(jobs), name=f"batch-{self.name}")
            self._running.add(task)
            task.add_done_callback(self._running.discard)

    async def _run_in_slot(self, jobs: list[_Job]) -> None:
        try:
            await self._run_together(jobs)
        except Exception:  # never let a batch take the worker down with it
            log.exception("%s batcher failed", self.name)
        finally:
            self._running_batches -= 1
            self._slots.release()

    async def _run_together(self, jobs: list[_Job]) -> None:
        # A request larger than the batch size is still one call of fn per max_batch_size.
        columns = tuple(
            [item for job in jobs for item in job.columns[c]] for c in range(len(jobs[0].columns))
        )
        try:
            rows = await self.run_alone(*columns)
        except Exception as exc:
            if len(jobs) == 1:
                _settle(jobs[0].future, exc=exc)
                return
            for job in jobs:  # find the culprit: each request alone
                try:
                    _settle(job.future, await self.run_alone(*job.columns))
                except Exception as single_exc:
                    _settle(job.future, exc=single_exc)
            return
        start = 0
        for job in jobs:
            _settle(job.future, rows[start : start + len(job)])
            start += len(job)

    async def run_alone(self, *columns: Sequence[Any]) -> np.ndarray:
        """``fn(*columns)`` without merging other requests (in chunks of the batch size)."""
        n = len(columns[0])
        parts = []
        for i in range(0, n, self.max_batch_size):
            chunk = tuple(c[i : i + self.max_batch_size] for c in columns)
            parts.append(await self.run(self.fn, *chunk))
            self.stats.batches += 1
            self.stats.items += len(chunk[0])
            if self.on_batch is not None:
                self.on_batch(self.name, len(chunk[0]))
        return np.concatenate(parts, axis=0)


def _settle(future: asyncio.Future, rows: np.ndarray | None = None, exc: Exception | None = None):
    if future.done():  # the request was cancelled (client went away)
        return
    if exc is not None:
        future.set_exception(exc)
    else:
        future.set_result(rows)
