"""A small in-process TTL cache for hot-path lookups (keys, routes, providers, secrets).

Every entry lives at most ``ttl`` seconds, which bounds how long a revocation or a rotated
credential can take to reach every warm Lambda. Misses are cached too (for a shorter time), so
random key ids cannot turn into one DynamoDB read per request.

``load`` is the async read-through form: concurrent misses of one key share a single load (in a
worker thread), so a cold process that receives 200 requests at once reads each key, route and
price once, not 200 times. A load that straddles an ``invalidate`` is not cached.
"""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict
from collections.abc import Callable
from typing import Generic, TypeVar

V = TypeVar("V")
_MISSING = object()


class TTLCache(Generic[V]):
    def __init__(
        self,
        ttl: float,
        *,
        negative_ttl: float | None = None,
        max_entries: int = 10_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._ttl = ttl
        self._negative_ttl = ttl if negative_ttl is None else negative_ttl
        self._max_entries = max_entries
        self._clock = clock
        self._entries: OrderedDict[str, tuple[float, V | None]] = OrderedDict()
        #: Loads in flight, with the generation they started in (see ``invalidate``).
        self._loading: dict[str, tuple[asyncio.Future[V | None], int]] = {}
        self._generation = 0

    def get(self, key: str) -> tuple[bool, V | None]:
        """``(hit, value)``: a hit may hold ``None``, a cached miss."""
        entry = self._entries.get(key)
        if entry is None:
            return False, None
        expires, value = entry
        if expires <= self._clock():
            del self._entries[key]
            return False, None
        return True, value

    def put(self, key: str, value: V | None) -> None:
        ttl = self._ttl if value is not None else self._negative_ttl
        self._entries[key] = (self._clock() + ttl, value)
        self._entries.move_to_end(key)
        while len(self._entries) > self._max_entries:
            self._entries.popitem(last=False)

    def invalidate(self, key: str | None = None) -> None:
        """Forgets ``key`` (or everything); loads already in flight will not be cached."""
        self._generation += 1
        if key is None:
            self._entries.clear()
            self._loading.clear()
        else:
            self._entries.pop(key, None)
            self._loading.pop(key, None)

    async def load(self, key: str, read: Callable[[], V | None]) -> V | None:
        """The cached value, or ``read()`` run once in a worker thread for every concurrent miss.
        A failed read is not cached: every waiter gets its exception, and the next call reads again."""
        hit, value = self.get(key)
        if hit:
            return value
        loop = asyncio.get_running_loop()
        pending = self._loading.get(key)
        if pending is None or pending[0].get_loop() is not loop:
            future = asyncio.ensure_future(asyncio.to_thread(read))
            pending = (future, self._generation)
            self._loading[key] = pending
            future.add_done_callback(lambda done: self._finish(key, done, pending[1]))
        return await asyncio.shield(pending[0])

    def _finish(self, key: str, done: asyncio.Future[V | None], generation: int) -> None:
        if self._loading.get(key, (None, 0))[0] is done:
            del self._loading[key]
        if generation == self._generation and not done.cancelled() and done.exception() is None:
            self.put(key, done.result())
