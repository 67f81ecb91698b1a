"""One contract for the refresh coordination store, run against both implementations: the
in-process `MemoryStore` and `RedisStore` against a real redis-server (tests/support/redis_server.py).

Then what only Redis has: key names under rotation, every failure as `StoreUnavailable`, and the
`FallbackStore` that keeps a replica coordinating locally when Redis dies (mid-refresh included)
and goes back to Redis by itself. Last, bounded memory: 200,000 distinct sessions through the
memory store and the Refresher.
"""

from __future__ import annotations

import asyncio
import gc
import hashlib
import io
import itertools
import json
import os
import time
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass
from typing import Any

import pytest
import redis.asyncio
from cryptography.fernet import Fernet

from cookieguard.config import RefreshConfig, StoreConfig
from cookieguard.session.refresh import Refresher, RefreshResult, store_key
from cookieguard.store import FallbackStore, MemoryStore, Store, StoreUnavailable, make_store
from cookieguard.store.buckets import CHARGED, FREE, REFUSED
from cookieguard.store.redis import RedisStore
from cookieguard.tokens.providers.base import NO_CONTEXT, RefreshRejected, RefreshUnavailable, TokenSet
from tests.support.fakes import (
    ExtensionCounter,
    FastForwardClock,
    ScriptedProvider,
    assert_a_slow_refresh_is_joined,
)
from tests.support.no_secrets import KnownSecrets
from tests.support.proxy_process import CookieguardProcess, run_cli
from tests.support.redis_server import RedisServer

KEY = Fernet.generate_key().decode()
LEASE_S = 0.3


@dataclass
class Backend:
    """A store implementation under test. `replica()` is another replica's view of the same
    shared state: its own Redis client (own connections), or the same in-process store."""

    kind: str
    shared: Store
    replica: Callable[..., Store]
    server: RedisServer | None = None
    clock: FastForwardClock | None = None  # the memory store's clock

    async def advance(self, seconds: float) -> None:
        """Let `seconds` pass for every lease and result the store holds, without waiting:
        the memory store's clock moves; in Redis every TTL is shortened (or the key expired)."""
        if self.server is None:
            assert self.clock is not None
            self.clock.advance(seconds)
            return
        client = redis.asyncio.Redis.from_url(self.server.url)
        try:
            async for name in client.scan_iter(match="*"):
                ttl_ms = await client.pttl(name)
                if ttl_ms < 0:
                    continue  # no expiry (or gone meanwhile)
                if ttl_ms <= seconds * 1000:
                    await client.delete(name)
                else:
                    await client.pexpire(name, ttl_ms - int(seconds * 1000))
        finally:
            await client.aclose()

    async def raw_items(self) -> list[tuple[bytes, bytes]]:
        """Everything the store holds, as an attacker reading it would see it."""
        if self.server is None:
            assert isinstance(self.shared, MemoryStore)
            items = [(k.encode(), v) for k, v in self.shared._results.items()]
            items += [(k.encode(), owner.encode()) for k, (_, owner) in self.shared._locks.items()]
            return items
        client = redis.asyncio.Redis.from_url(self.server.url)
        try:
            out = []
            async for name in client.scan_iter(match="*"):
                value = await client.get(name)
                out.append((name, value or b""))
            return out
        finally:
            await client.aclose()


@pytest.fixture(params=["memory", "redis"])
async def backend(request: pytest.FixtureRequest) -> AsyncIterator[Backend]:
    if request.param == "memory":
        clock = FastForwardClock()
        store = MemoryStore(clock=clock)
        yield Backend("memory", store, lambda **_: store, clock=clock)
        return
    server: RedisServer = request.getfixturevalue("redis_server")
    opened: list[RedisStore] = []

    def replica(keys: tuple[str, ...] = (KEY,)) -> Store:
        store = RedisStore(StoreConfig(kind="redis", url=server.url, encryption_keys=keys))
        opened.append(store)
        return store

    yield Backend("redis", replica(), replica, server)
    for store in opened:
        await store.close()


def refresher(
    provider: ScriptedProvider, store: Store, *, lease_s: float = LEASE_S, **refresh: Any
) -> Refresher:
    return Refresher(
        provider,
        store,
        RefreshConfig(**refresh),
        StoreConfig(encryption_keys=(KEY,), lock_lease_s=lease_s),
    )


async def wait_until(predicate: Callable[[], Any], timeout_s: float = 5.0) -> float:
    """Poll an async predicate until it holds; the seconds it took."""
    started = time.monotonic()
    while not await predicate():
        assert time.monotonic() - started < timeout_s, "condition not met in time"
        await asyncio.sleep(0.01)
    return time.monotonic() - started


# --- the contract ---------------------------------------------------------------------------


async def test_one_lock_holder_at_a_time(backend: Backend) -> None:
    a, b = backend.shared, backend.replica()
    assert await a.acquire("s1", "owner-a", 5)
    assert not await b.acquire("s1", "owner-b", 5)
    assert not await a.acquire("s1", "owner-c", 5)
    assert await b.acquire("s2", "owner-b", 5)  # locks are per session


async def test_an_abandoned_lock_expires_with_its_lease(backend: Backend) -> None:
    a, b = backend.shared, backend.replica()
    assert await a.acquire("s1", "crashed-replica", 5)
    await backend.advance(4.9)
    assert not await b.acquire("s1", "owner-b", 5)
    await backend.advance(0.2)
    assert await b.acquire("s1", "owner-b", 5)
    assert not await a.extend("s1", "crashed-replica", 5)  # it is somebody else's now


async def test_extending_keeps_the_lock_past_its_base_lease(backend: Backend) -> None:
    a, b = backend.shared, backend.replica()
    assert await a.acquire("s1", "owner-a", 5)
    for _ in range(4):  # four base leases, each extended before it ran out
        await backend.advance(4)
        assert await a.extend("s1", "owner-a", 5)
        assert not await b.acquire("s1", "owner-b", 5)
    assert not await b.extend("s1", "owner-b", 5)  # only the holder extends
    await backend.advance(5.1)
    assert await b.acquire("s1", "owner-b", 5)


async def test_only_the_owner_releases(backend: Backend) -> None:
    a, b = backend.shared, backend.replica()
    assert await a.acquire("s1", "owner-a", 5)
    await b.release("s1", "owner-b")
    assert not await b.acquire("s1", "owner-b", 5)
    await a.release("s1", "owner-a")
    assert await b.acquire("s1", "owner-b", 5)


async def test_results_expire_after_their_ttl(backend: Backend) -> None:
    store = backend.shared
    assert await store.get_result("s1") is None
    await store.put_result("s1", b"sealed-result", 60)
    assert await backend.replica().get_result("s1") == b"sealed-result"
    await backend.advance(59)
    assert await store.get_result("s1") == b"sealed-result"
    await backend.advance(1.1)
    assert await store.get_result("s1") is None


async def test_a_slow_refresh_keeps_the_lock_so_another_replica_joins(backend: Backend) -> None:
    """Four lease periods pass while the IdP call is open: without extension the second replica
    would take the lock and call the IdP."""
    counted = ExtensionCounter(backend.shared)
    await assert_a_slow_refresh_is_joined(
        lambda slow, other: (
            refresher(slow, counted),
            refresher(other, backend.replica()),
        ),
        lambda: counted.extended(times=12),  # four lease periods pass (an extension every third of one)
    )


async def test_a_failed_refresh_releases_the_lock_and_stores_nothing(backend: Backend) -> None:
    failing = ScriptedProvider(answers=[RefreshUnavailable("timeout")])
    await refresher(failing, backend.shared).refresh("R1")
    key = store_key("R1")
    assert await backend.replica().acquire(key, "next", 5)  # free at once, not after a lease
    assert await backend.shared.get_result(key) is None  # the token is unspent: try again later


async def test_a_rejection_releases_the_lock_and_is_remembered(backend: Backend) -> None:
    rejecting = ScriptedProvider(answers=[RefreshRejected("invalid_grant", status=400)])
    assert (await refresher(rejecting, backend.shared).refresh("R1")).outcome == "rejected"
    assert await backend.replica().acquire(store_key("R1"), "next", 5)
    other = ScriptedProvider()
    assert (await refresher(other, backend.replica()).refresh("R1")).outcome == "rejected"
    assert other.calls == []  # a dead token is not sent again


async def test_another_replica_reuses_the_result_within_grace(backend: Backend) -> None:
    first = ScriptedProvider(answers=[TokenSet(access_token="A2", refresh_token="R2", id_token="I2")])
    assert (await refresher(first, backend.shared, grace_s=60).refresh("R1")).outcome == "refreshed"
    late = ScriptedProvider()
    reused = await refresher(late, backend.replica(), grace_s=60).refresh("R1")
    assert reused.outcome == "reused" and late.calls == []
    assert reused.tokens is not None
    assert (reused.tokens.access_token, reused.tokens.refresh_token) == ("A2", "R2")
    await backend.advance(60.1)
    assert (await refresher(late, backend.replica()).refresh("R1")).outcome == "refreshed"


async def test_the_store_holds_no_token_and_no_known_token_hash(
    backend: Backend, known_secrets: KnownSecrets
) -> None:
    """Read everything the store holds while a refresh runs (lock) and after it (result)."""
    refresh_token = "REFRESH-" + os.urandom(16).hex()
    new_refresh, new_access, new_id = (
        "ROTATED-" + os.urandom(16).hex(),
        "ACCESS-" + os.urandom(16).hex(),
        "ID-" + os.urandom(16).hex(),
    )
    known_secrets.add(refresh_token, new_refresh, new_access, new_id)
    provider = ScriptedProvider(
        answers=[TokenSet(access_token=new_access, refresh_token=new_refresh, id_token=new_id)]
    )
    provider.gate.clear()
    running = asyncio.ensure_future(refresher(provider, backend.shared).refresh(refresh_token))
    await provider.started.wait()
    during = await backend.raw_items()
    provider.gate.set()
    await running
    after = await backend.raw_items()
    assert any(b":lock:" in k or len(k) == 64 for k, _ in during)
    assert len(after) >= 1

    forbidden = []
    for token in (refresh_token, new_refresh, new_access, new_id):
        digest = hashlib.sha256(token.encode()).hexdigest()
        forbidden += [token.encode(), digest.encode(), digest[:12].encode()]
    for name, value in during + after:
        for secret in forbidden:
            assert secret not in value, f"a value holds a token or a token hash: {name!r}"
            if backend.kind == "redis":  # process memory may key by the hash; Redis may not
                assert secret not in name, f"a Redis key holds a token or a token hash: {name!r}"


async def test_a_budget_is_shared_by_replicas_and_refills_with_time(backend: Backend) -> None:
    """Five per 10 minutes: five distinct members from two replicas, then refused; a retry of a
    charged member is free; a minute later one more (the bucket refilled one token)."""
    a, b = backend.shared, backend.replica()
    rate, now = 5 / 600, 1_800_000_000.0
    spent = [await (a if n % 2 else b).spend("subject:x", f"m{n}", rate, 5, 600, now) for n in range(5)]
    assert spent == [CHARGED] * 5
    assert await a.spend("subject:x", "m5", rate, 5, 600, now + 1) == REFUSED
    assert await b.spend("subject:x", "m2", rate, 5, 600, now + 1) == FREE  # a retry of a charged token
    assert await a.spend("subject:y", "m5", rate, 5, 600, now + 1) == CHARGED  # buckets are per name
    assert await b.spend("subject:x", "m6", rate, 5, 600, now + 121) == CHARGED  # 120 s refill one
    assert await a.spend("subject:x", "m7", rate, 5, 600, now + 121) == REFUSED
    # A replica whose clock is behind refills nothing and takes nothing extra.
    assert await b.spend("subject:x", "m8", rate, 5, 600, now) == REFUSED
    # Past the window the charged members are forgotten: m0 costs again.
    later = now + 601
    assert await a.spend("subject:x", "m0", rate, 5, 600, later) == CHARGED


async def test_budget_names_and_members_never_reach_redis_raw(redis_server: RedisServer) -> None:
    store = RedisStore(StoreConfig(kind="redis", url=redis_server.url, encryption_keys=(KEY,)))
    member = hashlib.sha256(b"a refresh token").hexdigest()
    try:
        assert await store.spend("address:203.0.113.7", member, 5 / 60, 5, 60, time.time()) == CHARGED
    finally:
        await store.close()
    client = redis.asyncio.Redis.from_url(redis_server.url)
    try:
        names = [name async for name in client.scan_iter(match="*")]
        charged = [m for n in names if b":charged:" in n for m in await client.zrange(n, 0, -1)]
        ttls = [await client.pttl(n) for n in names]
    finally:
        await client.aclose()
    assert len(names) == 2 and all(0 < ttl <= 61_000 for ttl in ttls)
    assert all(b"203.0.113.7" not in n and member.encode() not in n for n in names)
    assert len(charged) == 1 and charged[0] != member.encode()


async def test_a_degraded_replica_keeps_its_own_budget(redis_server: RedisServer) -> None:
    primary = RedisStore(StoreConfig(kind="redis", url=redis_server.url, encryption_keys=(KEY,)))
    store = FallbackStore(primary, MemoryStore())
    now = 1_800_000_000.0
    try:
        assert await store.spend("address:a", "m0", 1 / 60, 1, 60, now) == CHARGED
        redis_server.stop()
        # Redis is gone: the local bucket starts full, and is then spent like any other.
        assert await store.spend("address:a", "m1", 1 / 60, 1, 60, now) == CHARGED
        assert await store.spend("address:a", "m2", 1 / 60, 1, 60, now) == REFUSED
        assert store.degraded
    finally:
        await store.close()


# --- Redis only -----------------------------------------------------------------------------


async def test_redis_keys_are_prefixed_and_expire(redis_server: RedisServer) -> None:
    store = RedisStore(StoreConfig(kind="redis", url=redis_server.url, encryption_keys=(KEY,)))
    client = redis.asyncio.Redis.from_url(redis_server.url)
    try:
        await store.acquire("s1", "owner", 5)
        await store.put_result("s1", b"v", 60)
        names = sorted(n.decode() for n in await client.keys("*"))
        assert [n.rsplit(":", 1)[0] for n in names] == ["cookieguard:lock", "cookieguard:result"]
        for name in names:
            assert 0 < await client.pttl(name) <= 60_000  # nothing lives forever
    finally:
        await client.aclose()
        await store.close()


async def test_replicas_mid_key_rotation_still_exclude_each_other(redis_server: RedisServer) -> None:
    """[old] -> [old,new] -> [new,old] -> [new]: neighbouring steps share a lock and read results."""
    old, new = Fernet.generate_key().decode(), Fernet.generate_key().decode()
    steps = [(old,), (old, new), (new, old), (new,)]
    stores = [RedisStore(StoreConfig(kind="redis", url=redis_server.url, encryption_keys=k)) for k in steps]
    try:
        for n, (earlier, later) in enumerate(itertools.pairwise(stores)):
            session = f"s{n}"
            assert await earlier.acquire(session, "a", 5)
            assert not await later.acquire(session, "b", 5)
            await earlier.release(session, "a")
            assert await later.acquire(session, "b", 5)
            assert not await earlier.acquire(session, "a", 5)
            # Results sealed by either step are found, and opened, by the other.
            for writer, reader, keys in ((earlier, later, steps[n + 1]), (later, earlier, steps[n])):
                written = ScriptedProvider(answers=[TokenSet(access_token="A", refresh_token="R")])
                token = f"R-{n}-{id(writer)}"
                wrote = Refresher(
                    written, writer, RefreshConfig(), StoreConfig(encryption_keys=steps[stores.index(writer)])
                )
                await wrote.refresh(token)
                late = ScriptedProvider()
                read = Refresher(late, reader, RefreshConfig(), StoreConfig(encryption_keys=keys))
                assert (await read.refresh(token)).outcome == "reused", (n, keys)
                assert late.calls == []
    finally:
        for store in stores:
            await store.close()


async def test_every_redis_failure_is_store_unavailable_and_fast(redis_server: RedisServer) -> None:
    store = RedisStore(StoreConfig(kind="redis", url=redis_server.url))
    try:
        await store.ping()
        redis_server.stop()
        for call in (
            store.ping(),
            store.get_result("s1"),
            store.put_result("s1", b"v", 5),
            store.acquire("s1", "o", 5),
            store.extend("s1", "o", 5),
            store.release("s1", "o"),
        ):
            started = time.monotonic()
            with pytest.raises(StoreUnavailable):
                await call
            assert time.monotonic() - started < 1.5
        redis_server.start()  # same port: the client reconnects by itself
        assert await store.acquire("s1", "o", 5)
    finally:
        await store.close()


# --- degraded mode --------------------------------------------------------------------------


def events(buffer: io.StringIO, name: str) -> list[dict[str, Any]]:
    out = []
    for line in buffer.getvalue().splitlines():
        try:
            event = json.loads(line)
        except ValueError:
            continue
        if event.get("event") == name:
            out.append(event)
    return out


async def test_redis_dying_mid_refresh_degrades_to_local_and_recovers(
    redis_server: RedisServer, no_secrets_in_logs: io.StringIO
) -> None:
    changes: list[bool] = []
    config = StoreConfig(kind="redis", url=redis_server.url, encryption_keys=(KEY,), lock_lease_s=LEASE_S)
    store = FallbackStore(RedisStore(config), MemoryStore(), changes.append, probe_every_s=0.2)
    provider = ScriptedProvider(answers=[TokenSet(access_token="A2", refresh_token="R2")])
    provider.gate.clear()
    replica = refresher(provider, store)
    try:
        assert await store.readiness() is None
        requests = [asyncio.ensure_future(replica.refresh("R1")) for _ in range(20)]
        await provider.started.wait()
        assert await store.primary.get_result("x") is None  # the lock was taken in Redis
        redis_server.stop()

        async def noticed() -> bool:  # the keeper's next lease renewal hits the dead Redis
            return store.degraded

        await wait_until(noticed)
        provider.gate.set()
        results = await asyncio.gather(*requests)
        # Everybody waiting on the refresh that lost Redis under it is answered.
        assert sorted(r.outcome for r in results) == ["joined"] * 19 + ["refreshed"]
        assert provider.calls == ["R1"]
        assert changes == [True] and store.degraded
        assert await store.readiness() == {
            "status": "degraded",
            "kind": "redis",
            "fallback": "local single-flight",
        }
        # The result was kept locally: a late request on this replica reuses it.
        assert (await replica.refresh("R1")).outcome == "reused"
        # While degraded, this replica still makes one refresh per session.
        provider.gate.clear()
        provider.started.clear()
        burst = [asyncio.ensure_future(replica.refresh("R9")) for _ in range(10)]
        await provider.started.wait()
        provider.gate.set()
        assert sorted(r.outcome for r in await asyncio.gather(*burst)) == ["joined"] * 9 + ["refreshed"]
        assert len(events(no_secrets_in_logs, "store_degraded")) == 1

        redis_server.start()

        async def recovered() -> bool:
            return await store.readiness() is None

        await wait_until(recovered)
        assert changes == [True, False]
        assert len(events(no_secrets_in_logs, "store_recovered")) == 1
        # Coordination is shared again: another replica sees this one's lock in Redis.
        assert await store.acquire("s-after", "a", 5)
        other = RedisStore(config)
        assert not await other.acquire("s-after", "b", 5)
        await other.close()
    finally:
        await store.close()


async def test_a_dead_redis_is_probed_at_most_every_few_seconds(redis_server: RedisServer) -> None:
    probes = 0
    primary = RedisStore(StoreConfig(kind="redis", url=redis_server.url))
    original_ping = primary.ping

    async def counting_ping() -> None:
        nonlocal probes
        probes += 1
        await original_ping()

    primary.ping = counting_ping  # type: ignore[method-assign]
    store = FallbackStore(primary, MemoryStore(), probe_every_s=3.0)
    redis_server.stop()
    try:
        for n in range(200):
            assert await store.acquire(f"s{n}", "o", 5)
            await store.put_result(f"s{n}", b"v", 5)
            assert await store.get_result(f"s{n}") == b"v"
        assert store.degraded and probes == 0  # no request paid for a probe within 3 s
    finally:
        await store.close()


async def test_make_store_wraps_redis_in_the_fallback(redis_server: RedisServer) -> None:
    flips: list[bool] = []
    store = make_store(StoreConfig(kind="redis", url=redis_server.url), flips.append)
    assert isinstance(store, FallbackStore) and store.kind == "redis"
    assert isinstance(make_store(StoreConfig()), MemoryStore)
    await store.close()


# --- bounded memory -------------------------------------------------------------------------


def rss_bytes() -> int:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def sealed_size(access: int, id_: int, refresh: int) -> int:
    """Bytes of one stored result with tokens of these sizes, as the Refresher seals it."""
    replica = refresher(ScriptedProvider(), MemoryStore())
    tokens = TokenSet(
        access_token="a" * access, id_token="i" * id_, refresh_token="r" * refresh, expires_in_s=3600
    )
    return len(replica._seal(RefreshResult("refreshed", tokens=tokens)))


async def test_200k_distinct_sessions_keep_memory_bounded() -> None:
    """200,000 sessions pass through a MemoryStore and the Refresher's per-session maps, all
    capped at max_entries = 100,000: the second 100,000 replace the first, RSS stays put.

    Values have the size of a sealed Cognito result (access ~1.1 KB, id ~1.2 KB, refresh ~1.8 KB
    JWE), so the RSS per entry measured here is the sizing figure in docs/scale-out.md "Sizing"."""
    cap, sessions = 100_000, 200_000
    size = sealed_size(1100, 1200, 1800)
    filler = os.urandom(size // 2).hex().encode()[: size - 16]
    store = MemoryStore(max_entries=cap)
    replica = refresher(ScriptedProvider(), store)
    gc.collect()
    baseline = rss_bytes()
    started = time.monotonic()
    at_cap = 0
    for n in range(sessions):
        key = store_key(f"R{n}")
        await store.put_result(key, b"%016d" % n + filler, 3600)  # nothing expires: the cap bounds it
        replica._remember_backoff(key, 3600)
        replica.note_opaque_lifetime(f"opaque-{n}", 0.0, 1e9)
        if n == cap - 1:
            gc.collect()
            at_cap = rss_bytes()
    gc.collect()
    final = rss_bytes()
    per_entry = (at_cap - baseline) / cap
    print(
        f"\n{sessions} sessions in {time.monotonic() - started:.1f}s; sealed result {size} B; "
        f"RSS +{(at_cap - baseline) / 2**20:.0f} MiB at {cap} (~{per_entry:.0f} B/session incl. "
        f"backoff and opaque entries), +{(final - baseline) / 2**20:.0f} MiB after {sessions}"
    )
    assert len(store) == cap
    assert len(replica._backoff) == cap and len(replica._opaque_lifetimes) == cap
    assert await store.get_result(store_key("R0")) is None  # the oldest went first
    assert await store.get_result(store_key(f"R{sessions - 1}")) is not None
    assert final - at_cap < 0.1 * (at_cap - baseline) + 16 * 2**20
    assert per_entry < 2 * size + 1024


async def test_the_refresh_path_stays_bounded_for_many_sessions() -> None:
    """The whole path (single-flight, lock, IdP call, sealing, result) for 20,000 sessions with
    max_entries = 5,000 leaves nothing behind but the capped results."""
    cap, sessions = 5_000, 20_000

    class Rotating:
        async def refresh(self, refresh_token: str, context: Mapping[str, str] = NO_CONTEXT) -> TokenSet:
            return TokenSet(access_token="x" * 1000 + refresh_token, refresh_token="N" + refresh_token)

    store = MemoryStore(max_entries=cap)
    replica = Refresher(
        Rotating(),  # type: ignore[arg-type]
        store,
        RefreshConfig(grace_s=3600),
        StoreConfig(encryption_keys=(KEY,), max_entries=cap),
    )
    for n in range(sessions):
        assert (await replica.refresh(f"R{n}")).outcome == "refreshed"
    assert len(store) == cap and not store._locks and replica.in_flight == 0


# --- Redis without an encryption key: warned loudly --------------------------------------


def redis_yaml(url: str, key: str | None) -> str:
    store = f"store: {{kind: redis, url: '{url}'" + (f", encryption_key: '{key}'" if key else "") + "}"
    return f"listen: 127.0.0.1:0\nupstream: http://127.0.0.1:9\n{store}\n"


def test_check_warns_when_redis_has_no_encryption_key(tmp_path: Any, known_secrets: KnownSecrets) -> None:
    known_secrets.add(KEY)
    path = tmp_path / "cookieguard.yaml"
    path.write_text(redis_yaml("redis://127.0.0.1:6379/0", None))
    result = run_cli("check", "--config", str(path))
    assert result.returncode == 0
    assert "WARNING: store.kind is redis but store.encryption_key is empty" in result.stdout
    path.write_text(redis_yaml("redis://127.0.0.1:6379/0", KEY))
    result = run_cli("check", "--config", str(path))
    assert result.returncode == 0 and "encryption_key" not in result.stdout


async def test_startup_warns_when_redis_has_no_encryption_key(
    redis_server: RedisServer, cookieguard_process: Callable[..., CookieguardProcess]
) -> None:
    guard = cookieguard_process(redis_yaml(redis_server.url, None))
    warning = await asyncio.to_thread(guard.wait_for_event, "config_warning")
    assert warning["level"] == "warning" and "unencrypted" in warning["message"]
