"""Bounded caches: the one eviction policy for everything cookieguard remembers about traffic.

Claims and verdicts per token, sessions per Cookie header, backoffs, log throttles, budgets: all
are keyed by what clients send, so each is capped (docs/security.md "Threat model": made-up tokens cannot
grow the process). When full, the least recently used entry goes: what a page load keeps asking
for stays, and a spray of made-up keys pushes out only itself and what nobody asked for lately.

`ExpiringLRU` adds a per-entry expiry. It takes `now` from its caller rather than holding a
clock, like the rest of the pure core: the caller owns the clock (tests move it forward).

Pure: no I/O, no logging. Not thread-safe: it lives on the event loop, like the proxy.
"""

from __future__ import annotations

import enum
from collections import OrderedDict
from collections.abc import Hashable, Iterator
from typing import Final, Generic, TypeVar, overload

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")
D = TypeVar("D")


class Missing(enum.Enum):
    MISSING = 0


# `get`'s default where None is a value worth remembering: `if (v := c.get(k, MISSING)) is MISSING`.
MISSING: Final = Missing.MISSING


class LRU(Generic[K, V]):
    """At most `max_size` entries; reading or writing one makes it the most recently used."""

    __slots__ = ("_entries", "max_size")

    def __init__(self, max_size: int) -> None:
        if max_size < 1:
            raise ValueError("an LRU holds at least one entry")
        self.max_size = max_size
        self._entries: OrderedDict[K, V] = OrderedDict()

    @overload
    def get(self, key: K) -> V | None: ...
    @overload
    def get(self, key: K, default: D) -> V | D: ...

    def get(self, key: K, default: object = None) -> object:
        """The value for `key` (now the most recently used), else `default`."""
        try:
            value = self._entries[key]
        except KeyError:
            return default
        self._entries.move_to_end(key)
        return value

    def put(self, key: K, value: V) -> None:
        """Set `key` (the most recently used); drops the least recently used beyond `max_size`."""
        entries = self._entries
        entries[key] = value
        entries.move_to_end(key)
        if len(entries) > self.max_size:
            entries.popitem(last=False)

    @overload
    def pop(self, key: K) -> V | None: ...
    @overload
    def pop(self, key: K, default: D) -> V | D: ...

    def pop(self, key: K, default: object = None) -> object:
        return self._entries.pop(key, default)

    def clear(self) -> None:
        self._entries.clear()

    def __contains__(self, key: object) -> bool:
        """Whether `key` is held; does not count as a use."""
        return key in self._entries

    def __len__(self) -> int:
        return len(self._entries)

    def __iter__(self) -> Iterator[K]:
        """Keys, least recently used first."""
        return iter(self._entries)

    def items(self) -> Iterator[tuple[K, V]]:
        """(key, value) pairs, least recently used first; not a use."""
        return iter(self._entries.items())


class ExpiringLRU(Generic[K, V]):
    """An `LRU` whose entries also lapse at their own `expires_at` (seconds, the caller's clock).

    A lapsed entry is never returned. It is dropped when asked for, when it becomes the least
    recently used and something is written, or by `prune`.
    """

    __slots__ = ("_entries",)

    def __init__(self, max_size: int) -> None:
        self._entries: LRU[K, tuple[float, V]] = LRU(max_size)

    @property
    def max_size(self) -> int:
        return self._entries.max_size

    @overload
    def get(self, key: K, now: float) -> V | None: ...
    @overload
    def get(self, key: K, now: float, default: D) -> V | D: ...

    def get(self, key: K, now: float, default: object = None) -> object:
        entry = self._entries.get(key)
        if entry is None:
            return default
        if entry[0] <= now:
            self._entries.pop(key)
            return default
        return entry[1]

    def expires_at(self, key: K, now: float) -> float | None:
        """When the entry for `key` lapses; None when there is none (or it has lapsed)."""
        entry = self._entries.get(key)
        if entry is None or entry[0] <= now:
            return None
        return entry[0]

    def put(self, key: K, value: V, expires_at: float, now: float) -> None:
        """Set `key` until `expires_at`, first dropping lapsed entries among the least recent."""
        self.prune(now)
        self._entries.put(key, (expires_at, value))

    def prune(self, now: float) -> None:
        """Drop lapsed entries from the least recently used end, up to the first live one."""
        entries = self._entries._entries  # the same module's LRU: its order is ours to walk
        while entries:
            key, (expires_at, _) = next(iter(entries.items()))
            if expires_at > now:
                return
            del entries[key]

    def pop(self, key: K) -> None:
        self._entries.pop(key)

    def clear(self) -> None:
        self._entries.clear()

    def __len__(self) -> int:
        """Entries held, lapsed ones not yet dropped included."""
        return len(self._entries)

    def __iter__(self) -> Iterator[K]:
        """Keys, lapsed ones not yet dropped included, least recently used first."""
        return iter(self._entries)

    def items(self) -> Iterator[tuple[K, V]]:
        """(key, value) pairs, lapsed ones not yet dropped included, least recently used first."""
        return ((key, entry[1]) for key, entry in self._entries.items())
