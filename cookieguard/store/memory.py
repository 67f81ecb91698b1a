"""The in-process store: a single replica needs nothing else.

Bounded: results and locks expire, and at most `max_entries` results are kept (least recently
used evicted first), so any number of distinct sessions passing through keeps memory bounded.
Results share one lifetime (`refresh.grace`), so the least recently used are the first to lapse,
and each write drops the lapsed ones there: memory follows the sessions refreshed in the last
`grace`, not the cap.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from cookieguard.lru import ExpiringLRU
from cookieguard.store.buckets import BucketTable


class MemoryStore:
    kind = "memory"

    def __init__(self, max_entries: int = 100_000, clock: Callable[[], float] = time.monotonic) -> None:
        self.max_entries = max_entries
        self.clock = clock
        self._results: ExpiringLRU[str, bytes] = ExpiringLRU(max_entries)
        self._locks: dict[str, tuple[float, str]] = {}
        self._budgets = BucketTable(max_buckets=max_entries)

    def __len__(self) -> int:
        return len(self._results)

    async def get_result(self, key: str) -> bytes | None:
        return self._results.get(key, self.clock())

    async def put_result(self, key: str, value: bytes, ttl_s: float) -> None:
        now = self.clock()
        self._results.put(key, value, now + ttl_s, now)

    async def acquire(self, key: str, owner: str, lease_s: float) -> bool:
        now = self.clock()
        held = self._locks.get(key)
        if held is not None and held[0] > now and held[1] != owner:
            return False
        self._locks[key] = (now + lease_s, owner)
        if len(self._locks) > self.max_entries:
            self._locks = {k: v for k, v in self._locks.items() if v[0] > now}
        return True

    async def extend(self, key: str, owner: str, lease_s: float) -> bool:
        held = self._locks.get(key)
        if held is None or held[1] != owner or held[0] <= self.clock():
            return False
        self._locks[key] = (self.clock() + lease_s, owner)
        return True

    async def release(self, key: str, owner: str) -> None:
        held = self._locks.get(key)
        if held is not None and held[1] == owner:
            del self._locks[key]

    async def spend(
        self, name: str, member: str, rate_per_s: float, burst: int, window_s: float, now: float
    ) -> str:
        return self._budgets.spend(name, member, rate_per_s, burst, window_s, now)

    async def ping(self) -> None:
        return None

    async def readiness(self) -> dict[str, str] | None:
        return None

    async def close(self) -> None:
        self._results.clear()
        self._locks.clear()
