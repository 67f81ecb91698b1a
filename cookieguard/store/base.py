"""The refresh coordination store: one contract, two implementations (memory, Redis).

Per refresh token (keyed by a hash, never the raw token) the store offers a lock whose lease the
holder extends while its refresh runs, and a place to keep the refresh's result for
`refresh.grace`, so that every request (on any replica) still carrying the old refresh token
gets the new tokens instead of spending the old refresh token again.

It also keeps the per-address and per-subject budgets for IdP calls (cookieguard/session/limits.py), so
that with Redis every replica draws from the same buckets.
"""

from __future__ import annotations

from typing import Protocol


class StoreUnavailable(Exception):
    """The shared store cannot be reached: coordinate per replica until it is back."""


class Store(Protocol):
    kind: str

    async def get_result(self, key: str) -> bytes | None:
        """The stored result for `key`, or None when there is none (or it expired)."""

    async def put_result(self, key: str, value: bytes, ttl_s: float) -> None: ...

    async def acquire(self, key: str, owner: str, lease_s: float) -> bool:
        """Take the lock for `key` for `lease_s` unless someone else holds it."""

    async def extend(self, key: str, owner: str, lease_s: float) -> bool:
        """Renew our lease; False when we no longer hold the lock."""

    async def release(self, key: str, owner: str) -> None:
        """Drop the lock if we still hold it (never someone else's)."""

    async def spend(
        self, name: str, member: str, rate_per_s: float, burst: int, window_s: float, now: float
    ) -> str:
        """Take one token from the bucket `name` (refilled at `rate_per_s`, at most `burst`) for
        `member` (a refresh token's hash), atomically. `buckets.CHARGED` when taken, `buckets.FREE`
        when `member` was charged to this bucket within the last `window_s` (a retry), else
        `buckets.REFUSED`. `now` is wall-clock seconds, so that replicas agree on it."""

    async def ping(self) -> None:
        """Raise StoreUnavailable when the store cannot be reached."""

    async def readiness(self) -> dict[str, str] | None:
        """For readyz: None when fine, else `{"status": ..., ...}` (`degraded` is still ready)."""

    async def close(self) -> None: ...
