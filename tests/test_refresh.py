"""Single-flight, grace reuse, backoff and lease extension of the refresh engine.

These tests drive `Refresher` with a scripted provider (tests/support/fakes.py): what they need is
to hold an IdP call open at a precise moment and count calls exactly, which no real IdP offers.
The same behaviour is shown against the real emulators end to end in tests/test_session_repair.py.
"""

from __future__ import annotations

import asyncio

import pytest
from cryptography.fernet import Fernet

from cookieguard.config import RefreshConfig, StoreConfig
from cookieguard.session.refresh import Refresher, store_key
from cookieguard.store.memory import MemoryStore
from cookieguard.tokens.providers.base import RefreshRejected, RefreshUnavailable, TokenSet
from tests.support.fakes import Clock, ExtensionCounter, ScriptedProvider, assert_a_slow_refresh_is_joined


def make(
    provider: ScriptedProvider,
    store: MemoryStore | None = None,
    *,
    clock: Clock | None = None,
    keys: tuple[str, ...] = (),
    **refresh: float | str,
) -> Refresher:
    return Refresher(
        provider,
        store if store is not None else MemoryStore(),
        RefreshConfig(**refresh),  # type: ignore[arg-type]
        StoreConfig(encryption_keys=keys, lock_lease_s=0.3),
        clock=clock or Clock(),
    )


async def test_concurrent_requests_for_one_session_make_one_call() -> None:
    provider = ScriptedProvider(answers=[TokenSet(access_token="A2", refresh_token="R2")])
    provider.gate.clear()
    refresher = make(provider)
    waiting = [asyncio.ensure_future(refresher.refresh("R1")) for _ in range(50)]
    await provider.started.wait()  # the one IdP call is open; the other 49 are waiting on it
    provider.gate.set()
    results = await asyncio.gather(*waiting)
    assert provider.calls == ["R1"]
    assert sorted(r.outcome for r in results) == ["joined"] * 49 + ["refreshed"]
    assert {r.tokens.access_token for r in results if r.tokens} == {"A2"}
    assert {r.tokens.refresh_token for r in results if r.tokens} == {"R2"}


async def test_a_cancelled_request_does_not_cancel_the_refresh_for_others() -> None:
    provider = ScriptedProvider()
    provider.gate.clear()
    refresher = make(provider)
    first = asyncio.ensure_future(refresher.refresh("R1"))
    second = asyncio.ensure_future(refresher.refresh("R1"))
    await provider.started.wait()
    first.cancel()
    provider.gate.set()
    result = await second
    assert result.outcome == "joined" and result.tokens is not None
    assert len(provider.calls) == 1


async def test_late_request_with_the_old_token_reuses_the_result_within_grace() -> None:
    clock = Clock()
    provider = ScriptedProvider()
    refresher = make(provider, clock=clock, grace_s=60)
    first = await refresher.refresh("R1")
    clock.now += 59
    again = await refresher.refresh("R1")
    assert first.outcome == "refreshed" and again.outcome == "reused"
    assert again.tokens == first.tokens and len(provider.calls) == 1


async def test_rejection_is_remembered_so_the_dead_token_is_not_sent_again() -> None:
    provider = ScriptedProvider(answers=[RefreshRejected("NotAuthorizedException", status=400)])
    refresher = make(provider)
    first = await refresher.refresh("R1")
    second = await refresher.refresh("R1")
    assert (first.outcome, first.error, first.idp_status) == ("rejected", "NotAuthorizedException", 400)
    assert second.outcome == "rejected" and len(provider.calls) == 1


async def test_transient_failure_backs_off_that_session_only() -> None:
    clock = Clock()
    provider = ScriptedProvider(answers=[RefreshUnavailable("http_503", status=503)])
    refresher = make(provider, clock=clock, backoff_s=5)
    failed = await refresher.refresh("R1")
    assert (failed.outcome, failed.error) == ("failed", "http_503")
    during = await refresher.refresh("R1")
    assert (during.outcome, during.error) == ("failed", "backoff")
    other = await refresher.refresh("OTHER")
    assert other.outcome == "refreshed"
    clock.now += 5.1
    after = await refresher.refresh("R1")
    assert after.outcome == "refreshed"
    assert provider.calls == ["R1", "OTHER", "R1"]


async def test_retry_after_longer_than_the_backoff_is_respected() -> None:
    clock = Clock()
    provider = ScriptedProvider(answers=[RefreshUnavailable("http_429", status=429, retry_after_s=30)])
    refresher = make(provider, clock=clock, backoff_s=5)
    await refresher.refresh("R1")
    clock.now += 10
    assert (await refresher.refresh("R1")).error == "backoff"
    clock.now += 21
    assert (await refresher.refresh("R1")).outcome == "refreshed"
    assert len(provider.calls) == 2


async def test_a_slow_idp_keeps_the_lock_so_another_replica_joins_instead_of_calling() -> None:
    """Two refreshers sharing one store stand for two replicas; the lease is 0.3 s, the IdP takes 1 s."""
    store = ExtensionCounter(MemoryStore())
    await assert_a_slow_refresh_is_joined(
        lambda slow, other: (make(slow, store), make(other, store)),
        lambda: store.extended(times=9),  # three lease periods pass (an extension every third of one)
    )


async def test_stored_results_are_encrypted_and_keyed_by_hash() -> None:
    key = Fernet.generate_key().decode()
    store = MemoryStore()
    provider = ScriptedProvider(
        answers=[TokenSet(access_token="ACCESS-SECRET", refresh_token="ROTATED-SECRET")]
    )
    refresher = make(provider, store, keys=(key,))
    await refresher.refresh("REFRESH-SECRET")
    raw = await store.get_result(store_key("REFRESH-SECRET"))
    assert raw is not None
    for secret in (b"ACCESS-SECRET", b"ROTATED-SECRET", b"REFRESH-SECRET"):
        assert secret not in raw
    assert all("SECRET" not in k for k in store._results)
    # A replica with the key reads it; one with another key treats it as absent, never as tokens.
    assert (await make(ScriptedProvider(), store, keys=(key,)).refresh("REFRESH-SECRET")).outcome == "reused"
    stranger = ScriptedProvider()
    assert (
        await make(stranger, store, keys=(Fernet.generate_key().decode(),)).refresh("REFRESH-SECRET")
    ).outcome == "refreshed"
    assert len(stranger.calls) == 1


async def test_key_rotation_reads_results_sealed_with_the_previous_key() -> None:
    old, new = Fernet.generate_key().decode(), Fernet.generate_key().decode()
    store = MemoryStore()
    await make(ScriptedProvider(), store, keys=(old,)).refresh("R1")
    rotated = ScriptedProvider()
    assert (await make(rotated, store, keys=(new, old)).refresh("R1")).outcome == "reused"
    assert rotated.calls == []


@pytest.mark.parametrize("entries", [10])
async def test_backoff_and_results_are_bounded(entries: int) -> None:
    provider = ScriptedProvider(answers=[RefreshUnavailable("timeout")] * 100)
    store = MemoryStore(max_entries=entries)
    refresher = Refresher(provider, store, RefreshConfig(), StoreConfig(max_entries=entries))
    for n in range(100):
        await refresher.refresh(f"R{n}")
    assert len(refresher._backoff) <= entries
    for n in range(100):
        await store.put_result(f"k{n}", b"v", 60)
    assert len(store) == entries


async def test_memory_follows_the_grace_window_not_the_cap() -> None:
    """Results outlive `grace` only until the next write: the store does not fill up to its cap."""
    now = [0.0]
    store = MemoryStore(max_entries=100_000, clock=lambda: now[0])
    for n in range(1000):
        now[0] = n * 1.0
        await store.put_result(f"k{n}", b"v", ttl_s=60)
    assert len(store) == 60
    assert await store.get_result("k999") == b"v" and await store.get_result("k900") is None
