"""Where refresh coordination lives: `memory` (one replica) or `redis` (several)."""

from __future__ import annotations

from ..config import StoreConfig
from .base import Store, StoreUnavailable
from .memory import MemoryStore

__all__ = ["MemoryStore", "Store", "StoreUnavailable", "make_store"]


def make_store(config: StoreConfig) -> Store:
    if config.kind == "redis":
        from .redis import RedisStore  # type: ignore[import-not-found,unused-ignore]

        store: Store = RedisStore(config)
        return store
    return MemoryStore(max_entries=config.max_entries)
