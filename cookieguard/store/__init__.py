"""Where refresh coordination lives: `memory` (one replica) or `redis` (several)."""

from __future__ import annotations

from collections.abc import Callable

from cookieguard.config import StoreConfig
from cookieguard.store.base import Store, StoreUnavailable
from cookieguard.store.fallback import FallbackStore
from cookieguard.store.memory import MemoryStore

__all__ = ["FallbackStore", "MemoryStore", "Store", "StoreUnavailable", "make_store"]


def make_store(config: StoreConfig, on_degraded: Callable[[bool], None] | None = None) -> Store:
    """The configured store. Redis comes wrapped in a `FallbackStore`: when Redis cannot be
    reached the replica coordinates locally (`on_degraded(True)`) until it is back."""
    if config.kind == "redis":
        from cookieguard.store.redis import RedisStore

        local = MemoryStore(max_entries=config.max_entries)
        return FallbackStore(RedisStore(config), local, on_degraded)
    return MemoryStore(max_entries=config.max_entries)
