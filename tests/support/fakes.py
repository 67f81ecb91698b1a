"""In-test stand-ins for what no real implementation offers: an IdP call held open at a precise
moment and counted exactly, and clocks the test moves by hand.

The same behaviour is shown against the real emulators end to end (tests/test_session_repair.py,
tests/test_scale_out.py); these exist so the refresh engine's timing can be tested without waits.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from cookieguard.session.refresh import Refresher
from cookieguard.store import Store
from cookieguard.tokens.providers.base import NO_CONTEXT, TokenSet


@dataclass
class ScriptedProvider:
    """Answers refreshes as told. `gate` holds every call open until the test sets it;
    `started` is set when the first call arrives; `calls` lists the refresh tokens sent."""

    answers: list[TokenSet | Exception] = field(default_factory=list)
    gate: asyncio.Event = field(default_factory=asyncio.Event)
    calls: list[str] = field(default_factory=list)
    started: asyncio.Event = field(default_factory=asyncio.Event)

    def __post_init__(self) -> None:
        self.gate.set()

    async def refresh(self, refresh_token: str, context: Mapping[str, str] = NO_CONTEXT) -> TokenSet:
        self.calls.append(refresh_token)
        self.started.set()
        await self.gate.wait()
        answer = self.answers.pop(0) if self.answers else TokenSet(access_token=f"A-{len(self.calls)}")
        if isinstance(answer, Exception):
            raise answer
        return answer


class Clock:
    """A clock that stands still until the test moves it (`now += seconds`)."""

    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


class FastForwardClock:
    """The monotonic clock plus whatever the test skipped with `advance`."""

    def __init__(self) -> None:
        self.offset = 0.0

    def __call__(self) -> float:
        return time.monotonic() + self.offset

    def advance(self, seconds: float) -> None:
        self.offset += seconds


class ExtensionCounter:
    """Wraps a store and lets the test wait until the lock was extended `times` times."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self.extensions = 0
        self._changed = asyncio.Condition()

    def __getattr__(self, name: str) -> Any:
        return getattr(self.store, name)

    async def extend(self, key: str, owner: str, lease_s: float) -> bool:
        extended = await self.store.extend(key, owner, lease_s)
        async with self._changed:
            self.extensions += extended
            self._changed.notify_all()
        return extended

    async def extended(self, times: int) -> None:
        async with self._changed:
            await asyncio.wait_for(self._changed.wait_for(lambda: self.extensions >= times), 10)


async def assert_a_slow_refresh_is_joined(
    replicas: Callable[[ScriptedProvider, ScriptedProvider], tuple[Refresher, Refresher]],
    leases_pass: Callable[[], Awaitable[None]],
) -> None:
    """Replica A's IdP call is held open while `leases_pass` lets several lock leases go by and
    replica B asks for the same refresh token: B must still be waiting, then join A's result
    without calling its own IdP. `replicas(slow, other)` builds A on `slow` and B on `other`."""
    slow = ScriptedProvider(answers=[TokenSet(access_token="A2", refresh_token="R2")])
    slow.gate.clear()
    other = ScriptedProvider()
    replica_a, replica_b = replicas(slow, other)
    first = asyncio.ensure_future(replica_a.refresh("R1"))
    await slow.started.wait()
    second = asyncio.ensure_future(replica_b.refresh("R1"))
    await leases_pass()
    assert not second.done()
    slow.gate.set()
    a, b = await asyncio.gather(first, second)
    assert (a.outcome, b.outcome) == ("refreshed", "joined")
    assert b.tokens is not None and b.tokens.refresh_token == "R2"
    assert other.calls == []
