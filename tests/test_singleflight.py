"""The single-flight memo behind /rerank's query side: one computation per key for concurrent
callers, a sliding expiry, failures not kept. Time comes from a manual clock."""

from __future__ import annotations

import asyncio

import pytest

from cir_module.service.singleflight import SingleFlight


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def counting(calls: list[str], key: str, delay: float = 0.0):
    async def compute() -> str:
        calls.append(key)
        await asyncio.sleep(delay)
        return f"value of {key}"

    return compute


def test_concurrent_callers_share_one_computation():
    memo, calls = SingleFlight(ttl_s=30), []

    async def main() -> list[str]:
        return await asyncio.gather(*(memo.get("q", counting(calls, "q", 0.05)) for _ in range(16)))

    assert asyncio.run(main()) == ["value of q"] * 16
    assert calls == ["q"]
    assert memo.stats.as_dict() == {"computed": 1, "shared": 15}


def test_expiry_slides_with_each_use():
    clock, calls = Clock(), []
    memo = SingleFlight(ttl_s=30, clock=clock)

    async def main() -> None:
        await memo.get("q", counting(calls, "q"))
        for _ in range(5):  # a chunk every 20 s: 100 s in all, never 30 s without a use
            clock.now += 20
            await memo.get("q", counting(calls, "q"))
        clock.now += 31  # now unused for longer than ttl_s
        await memo.get("q", counting(calls, "q"))

    asyncio.run(main())
    assert calls == ["q", "q"]
    assert memo.stats.as_dict() == {"computed": 2, "shared": 5}


def test_failures_are_not_kept_and_capacity_zero_computes_every_time():
    memo, calls = SingleFlight(), []

    async def fail() -> str:
        calls.append("fail")
        raise ValueError("broken reference image")

    async def main() -> str:
        with pytest.raises(ValueError, match="broken"):
            await memo.get("q", fail)
        return await memo.get("q", counting(calls, "q"))

    assert asyncio.run(main()) == "value of q"
    assert calls == ["fail", "q"]

    off, calls = SingleFlight(capacity=0), []
    asyncio.run(off.get("q", counting(calls, "q")))
    asyncio.run(off.get("q", counting(calls, "q")))
    assert calls == ["q", "q"] and off.stats.computed == 2
