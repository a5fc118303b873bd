from __future__ import annotations

import asyncio
import time

from tollgate.cache import TTLCache


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_entries_expire_after_their_ttl():
    clock = Clock()
    cache: TTLCache[str] = TTLCache(30, clock=clock)
    cache.put("k", "v")

    clock.now += 29.9
    assert cache.get("k") == (True, "v")
    clock.now += 0.2
    assert cache.get("k") == (False, None)


def test_misses_are_cached_for_the_negative_ttl():
    clock = Clock()
    cache: TTLCache[str] = TTLCache(30, negative_ttl=5, clock=clock)
    cache.put("missing", None)

    assert cache.get("missing") == (True, None)
    clock.now += 5.1
    assert cache.get("missing") == (False, None)


def test_size_is_bounded_oldest_first():
    cache: TTLCache[int] = TTLCache(30, max_entries=3)
    for number in range(5):
        cache.put(str(number), number)

    assert [cache.get(str(n))[0] for n in range(5)] == [False, False, True, True, True]


def test_invalidate_one_or_all():
    cache: TTLCache[int] = TTLCache(30)
    cache.put("a", 1)
    cache.put("b", 2)

    cache.invalidate("a")
    assert cache.get("a") == (False, None) and cache.get("b") == (True, 2)
    cache.invalidate()
    assert cache.get("b") == (False, None)


# -- single flight: concurrent misses share one load ------------------------------------------------


def test_concurrent_misses_share_one_load() -> None:
    cache: TTLCache[str] = TTLCache(30)
    loads: list[str] = []

    def load() -> str:
        loads.append("read")
        time.sleep(0.05)  # a DynamoDB read, in a worker thread
        return "value"

    async def main() -> list[str | None]:
        return await asyncio.gather(*(cache.load("k", load) for _ in range(200)))

    assert asyncio.run(main()) == ["value"] * 200
    assert loads == ["read"]
    assert cache.get("k") == (True, "value")


def test_a_failed_load_fails_every_waiter_and_is_not_cached() -> None:
    cache: TTLCache[str] = TTLCache(30)
    attempts: list[int] = []

    def load() -> str:
        attempts.append(1)
        time.sleep(0.02)
        if len(attempts) == 1:
            raise RuntimeError("throttled")
        return "value"

    async def main() -> tuple[list[BaseException | str | None], str | None]:
        first = await asyncio.gather(*(cache.load("k", load) for _ in range(5)), return_exceptions=True)
        return first, await cache.load("k", load)

    failed, retried = asyncio.run(main())
    assert all(isinstance(result, RuntimeError) for result in failed)
    assert retried == "value" and len(attempts) == 2


def test_a_cancelled_waiter_does_not_cancel_the_others() -> None:
    cache: TTLCache[str] = TTLCache(30)

    def load() -> str:
        time.sleep(0.05)
        return "value"

    async def main() -> str | None:
        impatient = asyncio.create_task(cache.load("k", load))
        patient = asyncio.create_task(cache.load("k", load))
        await asyncio.sleep(0.01)
        impatient.cancel()
        return await patient

    assert asyncio.run(main()) == "value"


def test_a_load_that_straddles_an_invalidation_is_not_cached() -> None:
    """An admin change invalidates while a read of the old value is in flight: that read must not
    put the old value back for a whole TTL."""
    cache: TTLCache[str] = TTLCache(30)
    reads = iter(["old", "new"])

    def load() -> str:
        time.sleep(0.05)
        return next(reads)

    async def main() -> tuple[str | None, str | None]:
        in_flight = asyncio.create_task(cache.load("k", load))
        await asyncio.sleep(0.01)
        cache.invalidate("k")
        return await in_flight, await cache.load("k", load)

    stale, fresh = asyncio.run(main())
    assert stale == "old"  # that caller asked before the change: it may see the old value
    assert fresh == "new"  # but the cache did not keep it
