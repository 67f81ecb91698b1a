"""The shared store for several replicas: refresh locks and grace results in Redis.

What Redis holds (and what someone who can read it learns):

- `cookieguard:lock:<name>` = a random owner id (uuid4 hex), with a millisecond lease;
- `cookieguard:result:<name>` = the refresh result sealed by the Refresher's `Sealer` (Fernet,
  with `store.encryption_key`), with the `refresh.grace` TTL;
- `cookieguard:budget:<name>` = a hash `{t: tokens left, at: last refill}` and
  `cookieguard:charged:<name>` = a sorted set of the refresh-token hashes this budget charged
  (HMAC'ed like `<name>`), by time: the per-address and per-subject budgets of limits.py, with a
  TTL of their window. `<name>` is derived from the hash of the address or subject, never from
  the raw value. Budgets use the first encryption key's name only: during a key rotation,
  replicas on different first keys keep separate budgets for a while (at most twice the budget).

`<name>` is not the session hash the Refresher passes in (sha256 of the refresh token, whose
first 12 hex digits are the `session` field of the logs): with an encryption key configured it is
HMAC-SHA256 of that hash under a key derived from the encryption key. A reader of Redis (a shared
instance, a backup, `MONITOR`) can then neither confirm a refresh token they hold nor join keys to
log lines. Without an encryption key the values hold tokens in the clear anyway (start-up warns),
so the name is the plain session hash.

Values are encrypted in one place, the Refresher; this module only names keys and moves bytes.

Key rotation (`encryption_key: new,old`): a name is derived under every configured key. A lock is
taken on all of them in one script and results are written under all of them, so during a rolling
rotation ([old] -> [old,new] -> [new,old] -> [new]) replicas on neighbouring steps share at least
one name and still exclude each other. The scripts touch several keys at once: use a standalone
Redis (or primary/replica with Sentinel), not Redis Cluster.

Every Redis failure is raised as `StoreUnavailable`, after short socket timeouts and one
immediate reconnect attempt, so a dead Redis costs a request milliseconds, not seconds.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, TypeVar

from redis.asyncio import Redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import RedisError

from cookieguard.config import StoreConfig
from cookieguard.store.base import StoreUnavailable
from cookieguard.store.buckets import CHARGED, FREE, MAX_MEMBERS, REFUSED

PREFIX = "cookieguard"
SOCKET_TIMEOUT_S = 0.5

# Take the lock on every name, or on none: free names, or names we already hold (so a command
# retried after a lost reply does not lock its own sender out), become ours for the lease.
_ACQUIRE = """
for _, k in ipairs(KEYS) do
  local v = redis.call('GET', k)
  if v and v ~= ARGV[1] then return 0 end
end
for _, k in ipairs(KEYS) do
  redis.call('SET', k, ARGV[1], 'PX', ARGV[2])
end
return 1
"""

# Renew only while we hold every name: never extend a lock someone else has taken.
_EXTEND = """
for _, k in ipairs(KEYS) do
  if redis.call('GET', k) ~= ARGV[1] then return 0 end
end
for _, k in ipairs(KEYS) do
  redis.call('PEXPIRE', k, ARGV[2])
end
return 1
"""

# Drop only what is ours: a lease that ran out may already belong to another replica.
_RELEASE = """
local n = 0
for _, k in ipairs(KEYS) do
  if redis.call('GET', k) == ARGV[1] then n = n + redis.call('DEL', k) end
end
return n
"""

# A token bucket with a memory of charged members (cookieguard/session/limits.py `BucketTable`, the same
# rules): 2 = free (a retry of a member charged within the window), 1 = charged, 0 = refused.
# `now` comes from the caller (wall clock) so the contract suite can move it; a `now` behind the
# last refill (another replica's clock) refills nothing.
_SPEND = """
local now = tonumber(ARGV[4])
local window = tonumber(ARGV[5])
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', now - window)
if ARGV[1] ~= '' and redis.call('ZSCORE', KEYS[2], ARGV[1]) then return 2 end
local rate = tonumber(ARGV[2])
local burst = tonumber(ARGV[3])
local state = redis.call('HMGET', KEYS[1], 't', 'at')
local tokens = tonumber(state[1]) or burst
local at = tonumber(state[2]) or now
if now > at then
  tokens = math.min(burst, tokens + (now - at) * rate)
  at = now
end
if tokens < 1 - 1e-9 then return 0 end
redis.call('HSET', KEYS[1], 't', string.format('%.17g', tokens - 1), 'at', string.format('%.17g', at))
redis.call('PEXPIRE', KEYS[1], ARGV[6])
if ARGV[1] ~= '' then
  redis.call('ZADD', KEYS[2], now, ARGV[1])
  local extra = redis.call('ZCARD', KEYS[2]) - tonumber(ARGV[7])
  if extra > 0 then redis.call('ZREMRANGEBYRANK', KEYS[2], 0, extra - 1) end
  redis.call('PEXPIRE', KEYS[2], ARGV[6])
end
return 1
"""
_SPENT = {0: REFUSED, 1: CHARGED, 2: FREE}

T = TypeVar("T")


class RedisStore:
    kind = "redis"

    def __init__(
        self, config: StoreConfig, *, timeout_s: float = SOCKET_TIMEOUT_S, prefix: str = PREFIX
    ) -> None:
        self.url = config.url
        self._redis: Redis = Redis.from_url(
            config.url,
            socket_timeout=timeout_s,
            socket_connect_timeout=timeout_s,
            # One immediate retry: after a Redis restart the first command on a pooled connection
            # fails, the retry reconnects. No backoff: the caller falls back instead of waiting.
            retry=Retry(NoBackoff(), 1),
            health_check_interval=0,
        )
        self._names = KeyNames(config.encryption_keys)
        self._prefix = prefix
        self._acquire = self._redis.register_script(_ACQUIRE)
        self._extend = self._redis.register_script(_EXTEND)
        self._release = self._redis.register_script(_RELEASE)
        self._spend = self._redis.register_script(_SPEND)

    def lock_keys(self, key: str) -> list[str]:
        return [f"{self._prefix}:lock:{name}" for name in self._names.derive(key)]

    def result_keys(self, key: str) -> list[str]:
        return [f"{self._prefix}:result:{name}" for name in self._names.derive(key)]

    async def get_result(self, key: str) -> bytes | None:
        values = await _call(self._redis.mget, self.result_keys(key))
        return next((v if isinstance(v, bytes) else v.encode() for v in values if v is not None), None)

    async def put_result(self, key: str, value: bytes, ttl_s: float) -> None:
        ttl_ms = _ms(ttl_s)

        async def write() -> None:
            async with self._redis.pipeline(transaction=False) as pipe:
                for name in self.result_keys(key):
                    pipe.set(name, value, px=ttl_ms)
                await pipe.execute()

        await _call(write)

    async def acquire(self, key: str, owner: str, lease_s: float) -> bool:
        return bool(await _call(self._acquire, self.lock_keys(key), [owner, _ms(lease_s)]))

    async def extend(self, key: str, owner: str, lease_s: float) -> bool:
        return bool(await _call(self._extend, self.lock_keys(key), [owner, _ms(lease_s)]))

    async def release(self, key: str, owner: str) -> None:
        await _call(self._release, self.lock_keys(key), [owner])

    async def spend(
        self, name: str, member: str, rate_per_s: float, burst: int, window_s: float, now: float
    ) -> str:
        bucket = self._names.derive(name)[0]
        charged = self._names.derive(member)[0] if member else ""
        # Kept until the bucket has refilled completely and its members left the window.
        ttl_ms = _ms(max(window_s, burst / rate_per_s) + 1.0)
        keys = [f"{self._prefix}:budget:{bucket}", f"{self._prefix}:charged:{bucket}"]
        args = [charged, repr(rate_per_s), burst, repr(now), repr(window_s), ttl_ms, MAX_MEMBERS]
        return _SPENT.get(int(await _call(self._spend, keys, args)), REFUSED)

    async def ping(self) -> None:
        await _call(self._redis.ping)

    async def readiness(self) -> dict[str, str] | None:
        try:
            await self.ping()
        except StoreUnavailable:
            return {"status": "unavailable", "kind": self.kind}
        return None

    async def close(self) -> None:
        await _call(self._redis.aclose)


class KeyNames:
    """Names under which a session hash is stored: one per configured encryption key."""

    def __init__(self, encryption_keys: Sequence[str]) -> None:
        self._macs = [
            hashlib.sha256(b"cookieguard redis key names\0" + k.encode()).digest() for k in encryption_keys
        ]

    def derive(self, key: str) -> list[str]:
        if not self._macs:
            return [key]
        return [hmac.new(mac, key.encode(), hashlib.sha256).hexdigest() for mac in self._macs]


_FAILURES = (RedisError, OSError, TimeoutError)


async def _call(fn: Callable[..., Awaitable[T]], *args: Any) -> T:
    try:
        return await fn(*args)
    except _FAILURES as exc:
        raise StoreUnavailable(type(exc).__name__) from exc


def _ms(seconds: float) -> int:
    return max(1, round(seconds * 1000))
