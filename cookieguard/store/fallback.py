"""A shared store that degrades to a local one instead of failing (docs/behaviour.md §7).

When Redis cannot be reached, each replica keeps coordinating its own requests (its in-process
single-flight plus a local store), so a session makes at most one refresh per replica instead of
none: users stay signed in, and an IdP with reuse detection sees at most N refreshes, not one per
request. The transition is logged once each way (`store_degraded`, `store_recovered`), exposed as
the `cookieguard_store_degraded` gauge (through `on_change`) and in `readyz` (still ready).

While degraded, the shared store is probed at most every `probe_every_s`, by one caller at a time
(a background task, or a request or readyz that comes first); everybody else goes straight to the
local store, so a dead Redis costs no request a timeout.

A lock taken in the shared store stays tied to it: its lease is renewed and released there. If
the shared store dies while a refresh runs, the refresh carries on under a local lock and its
result is kept locally, so the requests waiting for it are still answered.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable

from cookieguard.logs import get_logger
from cookieguard.store.base import Store, StoreUnavailable

PROBE_EVERY_S = 3.0


class FallbackStore:
    def __init__(
        self,
        primary: Store,
        local: Store,
        on_change: Callable[[bool], None] | None = None,
        *,
        probe_every_s: float = PROBE_EVERY_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.kind = primary.kind
        self.primary = primary
        self.local = local
        self.on_change = on_change
        self.probe_every_s = probe_every_s
        self.clock = clock
        self.degraded = False
        self._degraded_since = 0.0
        self._next_probe = 0.0
        self._probing = False
        self._in_primary: dict[tuple[str, str], bool] = {}  # held locks: (key, owner) -> where
        self._prober: asyncio.Task[None] | None = None
        self.log = get_logger()

    async def get_result(self, key: str) -> bytes | None:
        if await self._primary_usable():
            try:
                value = await self.primary.get_result(key)
            except StoreUnavailable as exc:
                self._failed(exc)
            else:
                if value is not None:
                    return value
        # A result this replica produced (or stored while degraded) is still good for its grace.
        return await self.local.get_result(key)

    async def put_result(self, key: str, value: bytes, ttl_s: float) -> None:
        await self.local.put_result(key, value, ttl_s)
        if await self._primary_usable():
            try:
                await self.primary.put_result(key, value, ttl_s)
            except StoreUnavailable as exc:
                self._failed(exc)

    async def acquire(self, key: str, owner: str, lease_s: float) -> bool:
        if await self._primary_usable():
            try:
                taken = await self.primary.acquire(key, owner, lease_s)
            except StoreUnavailable as exc:
                self._failed(exc)
            else:
                if taken:
                    self._in_primary[(key, owner)] = True
                return taken
        taken = await self.local.acquire(key, owner, lease_s)
        if taken:
            self._in_primary[(key, owner)] = False
        return taken

    async def extend(self, key: str, owner: str, lease_s: float) -> bool:
        in_primary = self._in_primary.get((key, owner))
        if in_primary is None:
            return False
        if not in_primary:
            return await self.local.extend(key, owner, lease_s)
        try:
            return await self.primary.extend(key, owner, lease_s)
        except StoreUnavailable as exc:
            self._failed(exc)
        # The shared lease can no longer be renewed. Our refresh goes on (its token may already
        # be spent at the IdP: abandoning it would sign the user out) under a local lock.
        self._in_primary[(key, owner)] = False
        return await self.local.acquire(key, owner, lease_s)

    async def release(self, key: str, owner: str) -> None:
        if self._in_primary.pop((key, owner), False):
            try:
                await self.primary.release(key, owner)
            except StoreUnavailable as exc:
                self._failed(exc)  # the shared lease runs out by itself
        await self.local.release(key, owner)

    async def spend(
        self, name: str, member: str, rate_per_s: float, burst: int, window_s: float, now: float
    ) -> str:
        # Degraded, each replica keeps its own budget: N replicas allow N times the budget until
        # Redis is back, which is the same trade the local single-flight makes.
        if await self._primary_usable():
            try:
                return await self.primary.spend(name, member, rate_per_s, burst, window_s, now)
            except StoreUnavailable as exc:
                self._failed(exc)
        return await self.local.spend(name, member, rate_per_s, burst, window_s, now)

    async def ping(self) -> None:
        """Never raises: the local store is always there. See `readiness` for the state."""
        await self.readiness()

    async def readiness(self) -> dict[str, str] | None:
        """None while the shared store answers; `{"status": "degraded", ...}` while it does not."""
        if not self.degraded:
            try:
                await self.primary.ping()
            except StoreUnavailable as exc:
                self._failed(exc)
        else:
            await self._primary_usable()
        if self.degraded:
            return {"status": "degraded", "kind": self.kind, "fallback": "local single-flight"}
        return None

    async def close(self) -> None:
        if self._prober is not None:
            self._prober.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._prober
        with contextlib.suppress(StoreUnavailable):
            await self.primary.close()
        await self.local.close()

    async def _primary_usable(self) -> bool:
        if not self.degraded:
            return True
        if self._probing or self.clock() < self._next_probe:
            return False
        self._probing = True
        try:
            await self.primary.ping()
        except StoreUnavailable:
            self._next_probe = self.clock() + self.probe_every_s
            return False
        finally:
            self._probing = False
        self.degraded = False
        self.log.info(
            "store_recovered", kind=self.kind, degraded_s=round(self.clock() - self._degraded_since, 3)
        )
        if self.on_change:
            self.on_change(False)
        return True

    def _failed(self, exc: StoreUnavailable) -> None:
        self._next_probe = self.clock() + self.probe_every_s
        if self.degraded:
            return
        self.degraded = True
        self._degraded_since = self.clock()
        self.log.warning("store_degraded", kind=self.kind, error=str(exc), fallback="local single-flight")
        if self.on_change:
            self.on_change(True)
        if self._prober is None or self._prober.done():
            self._prober = asyncio.get_running_loop().create_task(self._probe_until_back())

    async def _probe_until_back(self) -> None:
        """Recover with no traffic too, so the metric and readyz do not wait for a request."""
        while self.degraded:
            await asyncio.sleep(max(0.05, self._next_probe - self.clock()))
            await self._primary_usable()
