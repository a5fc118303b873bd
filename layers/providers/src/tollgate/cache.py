"""A small in-process TTL cache for hot-path lookups (keys, routes, providers, secrets).

Every entry lives at most ``ttl`` seconds, which bounds how long a revocation or a rotated
credential can take to reach every warm Lambda. Misses are cached too (for a shorter time), so
random key ids cannot turn into one DynamoDB read per request.
"""

from __future__ import annotations

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
        if key is None:
            self._entries.clear()
        else:
            self._entries.pop(key, None)
