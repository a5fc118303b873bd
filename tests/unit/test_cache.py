from __future__ import annotations

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
