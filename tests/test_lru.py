"""Tests for cookieguard/lru.py: the bounded caches every memo and table of cookieguard uses."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from cookieguard.lru import LRU, MISSING, ExpiringLRU


def test_get_put_pop() -> None:
    cache: LRU[str, int | None] = LRU(3)
    assert cache.get("a") is None and cache.get("a", MISSING) is MISSING
    cache.put("a", 1)
    cache.put("n", None)  # None is a value like any other
    assert cache.get("a") == 1 and cache.get("n", MISSING) is None
    assert "a" in cache and "z" not in cache and len(cache) == 2
    assert cache.pop("a") == 1 and cache.pop("a", MISSING) is MISSING
    cache.clear()
    assert len(cache) == 0


def test_the_least_recently_used_goes_first() -> None:
    cache: LRU[str, int] = LRU(3)
    for key in "abc":
        cache.put(key, ord(key))
    assert cache.get("a") == ord("a")  # a read is a use: "b" is now the least recent
    cache.put("c", 0)  # so is a write
    cache.put("d", ord("d"))
    assert list(cache) == ["a", "c", "d"]
    assert "b" not in cache  # a membership test is not a use
    assert list(cache.items()) == [("a", ord("a")), ("c", 0), ("d", ord("d"))]


def test_a_cache_holds_at_least_one_entry() -> None:
    with pytest.raises(ValueError):
        LRU(0)


@given(st.lists(st.tuples(st.booleans(), st.integers(0, 20)), max_size=300), st.integers(1, 8))
def test_matches_a_reference_lru(operations: list[tuple[bool, int]], size: int) -> None:
    """Against the obvious (slow) model: a list of keys, most recent last."""
    cache: LRU[int, int] = LRU(size)
    model: dict[int, int] = {}
    order: list[int] = []
    for is_put, key in operations:
        if is_put:
            cache.put(key, key * 2)
            model[key] = key * 2
            if key in order:
                order.remove(key)
            order.append(key)
            if len(order) > size:
                del model[order.pop(0)]
        else:
            assert cache.get(key) == model.get(key)
            if key in order:
                order.remove(key)
                order.append(key)
        assert list(cache) == order and len(cache) <= size


def test_expiring_entries_lapse_at_their_own_time() -> None:
    cache: ExpiringLRU[str, str] = ExpiringLRU(10)
    cache.put("short", "s", expires_at=105.0, now=100.0)
    cache.put("long", "l", expires_at=200.0, now=100.0)
    assert cache.get("short", 104.9) == "s" and cache.expires_at("short", 104.9) == 105.0
    assert cache.get("short", 105.0) is None  # lapsed at its expiry, not after
    assert cache.expires_at("short", 105.0) is None
    assert len(cache) == 1  # dropped when asked for
    assert cache.get("long", 150.0, MISSING) == "l"


def test_a_write_drops_lapsed_entries_at_the_least_recent_end() -> None:
    cache: ExpiringLRU[int, None] = ExpiringLRU(100)
    for n in range(10):
        cache.put(n, None, expires_at=10.0 + n, now=0.0)
    cache.put(99, None, expires_at=1000.0, now=15.0)  # 0..5 have lapsed
    assert list(cache) == [6, 7, 8, 9, 99]
    cache.prune(now=2000.0)
    assert len(cache) == 0


def test_expiring_entries_are_bounded_too() -> None:
    cache: ExpiringLRU[int, int] = ExpiringLRU(2)
    for n in range(5):
        cache.put(n, n, expires_at=1e9, now=0.0)
    assert list(cache.items()) == [(3, 3), (4, 4)] and cache.max_size == 2
    cache.pop(3)
    cache.clear()
    assert len(cache) == 0
