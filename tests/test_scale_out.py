"""Scale-out (docs/behaviour.md §7, docs/scale-out.md "Scale-out"): several `cookieguard run` replicas sharing one real Redis, in front of one
upstream, with the requests of one page load spread round-robin over them.

Against oidc-provider with rotation and reuse detection (a second refresh with the old token
revokes the whole grant) and against moto's Cognito with rotation and a 2-second IdP delay longer
than the lock lease (so only lease extension keeps the other replicas out). Then Redis dies in
the middle of a burst and comes back.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from typing import Any
from urllib.parse import unquote

import aiohttp
import pytest
from cryptography.fernet import Fernet

from cookieguard.ops.demo.emulator import CognitoEmulator, PoolInfo
from cookieguard.session.layouts import AmplifyLayout
from tests.support.apps import amplify_cookies, seen_by, set_cookie_values, start_buggy_app
from tests.support.cognito_idp import CognitoUser
from tests.support.no_secrets import KnownSecrets
from tests.support.oidc_idp import OidcIdp
from tests.support.proxy_process import CookieguardProcess
from tests.support.redis_server import RedisServer

# several replicas, Redis killed and restarted: `make test PYTEST_ARGS="-m 'not slow'"` skips it
pytestmark = pytest.mark.slow

Start = Callable[..., CookieguardProcess]
BURST = 200


def store_config(redis_server: RedisServer, key: str, lease: str = "2s") -> dict[str, Any]:
    return {"kind": "redis", "url": redis_server.url, "encryption_key": key, "lock_lease": lease}


def oidc_config(idp: OidcIdp, upstream: str, store: dict[str, Any]) -> dict[str, Any]:
    client = idp.client("client_secret_basic")
    return {
        "upstream": upstream,
        "provider": {
            "kind": "oidc",
            "issuer": idp.issuer,
            "token_endpoint": idp.token_endpoint,
            "jwks_url": idp.jwks_url,
            "client_id": client.client_id,
            "client_secret": client.client_secret,
            "timeout": "5s",
        },
        "cookies": {
            "layout": "named",
            "names": {"access_token": "at", "refresh_token": "rt", "id_token": "idt"},
        },
        "verify": {"signature": True, "audience": idp.api_resource},
        "refresh": {"before_expiry": "5m", "grace": "60s"},
        "store": store,
        "logging": {"level": "debug"},
    }


def cognito_config(pool: PoolInfo, upstream: str, store: dict[str, Any]) -> dict[str, Any]:
    return {
        "upstream": upstream,
        "provider": pool.provider_yaml(),
        "refresh": {"before_expiry": "5m", "grace": "60s"},
        "store": store,
        "logging": {"level": "debug"},
    }


async def burst(
    replicas: Sequence[CookieguardProcess], cookie_header: str, n: int = BURST
) -> list[tuple[int, dict[str, str]]]:
    """One page load's worth of requests with the same cookies, round-robin over the replicas
    (every tenth one a redirect, whose own response would drop refreshed cookies)."""
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as s:

        async def one(i: int) -> tuple[int, dict[str, str]]:
            guard = replicas[i % len(replicas)]
            path = "/redirect" if i % 10 == 0 else f"/rsc/{i}"
            async with s.get(
                f"{guard.url}{path}", headers={"Cookie": cookie_header}, allow_redirects=False
            ) as resp:
                await resp.read()
                return resp.status, set_cookie_values(resp.headers.getall("Set-Cookie", []))

        return await asyncio.gather(*(one(i) for i in range(n)))


async def admin_get(guard: CookieguardProcess, what: str) -> tuple[int, str]:
    async with aiohttp.ClientSession() as s, s.get(f"{guard.admin_url}/.cookieguard/{what}") as resp:
        return resp.status, await resp.text()


async def refresh_event_after(guard: CookieguardProcess, seen: int) -> dict[str, Any]:
    """The first `token_refresh` event after the `seen` ones (log lines arrive asynchronously)."""

    def wait() -> dict[str, Any]:
        guard.wait_for_event("token_refresh", where=lambda _: len(guard.events("token_refresh")) > seen)
        return guard.events("token_refresh")[seen]

    return await asyncio.to_thread(wait)


def outcomes(replicas: Sequence[CookieguardProcess]) -> list[list[str]]:
    return [[e["outcome"] for e in guard.events("token_refresh")] for guard in replicas]


@pytest.fixture
def store_key_secret(known_secrets: KnownSecrets) -> str:
    key = Fernet.generate_key().decode()
    known_secrets.add(key)
    return key


# --- oidc-provider: rotation with reuse detection ----------------------------------------


@pytest.mark.parametrize("replica_count", [2, 3])
async def test_replicas_make_one_refresh_per_session_and_reuse_it_within_grace(
    aiohttp_server: Any,
    cookieguard_process: Start,
    oidc_idp: OidcIdp,
    redis_server: RedisServer,
    store_key_secret: str,
    known_secrets: KnownSecrets,
    replica_count: int,
) -> None:
    oidc_idp.reset()
    session = oidc_idp.mint("alice", resource=True)
    known_secrets.add(session["refresh_token"], session["access_token"], session["id_token"])
    known_secrets.add(oidc_idp.client("client_secret_basic").client_secret)
    app = await start_buggy_app(aiohttp_server)
    config = oidc_config(oidc_idp, str(app.make_url("")), store_config(redis_server, store_key_secret))
    replicas = [cookieguard_process(config) for _ in range(replica_count)]
    # The browser's access cookie expired and is gone: the session is absent-but-refreshable.
    old = f"rt={session['refresh_token']}; idt={session['id_token']}; theme=dark"

    answers = await burst(replicas, old)

    stats = oidc_idp.stats()
    assert (stats["refresh_requests"], stats["refresh_success"]) == (1, 1)
    assert (stats["invalid_grant"], stats["grants_revoked"]) == (0, 0)
    assert {status for status, _ in answers} == {200, 302}
    assert len({(c["at"], c["rt"], c["idt"]) for _, c in answers}) == 1  # all 200 the same tokens
    new_at, new_rt = answers[0][1]["at"], answers[0][1]["rt"]
    known_secrets.add(new_at, new_rt, answers[0][1]["idt"])
    assert new_rt != session["refresh_token"]
    assert all(f"at={new_at}" in r["cookie"] for r in seen_by(app))  # the app saw the new token too
    per_replica = outcomes(replicas)
    assert sum(o.count("refreshed") for o in per_replica) == 1
    assert all(o and set(o) <= {"refreshed", "joined", "reused"} for o in per_replica)

    # A late request with the old refresh token, on every replica, inside the grace window.
    for guard in replicas:
        seen = len(guard.events("token_refresh"))
        (_, late), *_ = await burst([guard], old, n=1)
        assert (late["at"], late["rt"]) == (new_at, new_rt)
        assert (await refresh_event_after(guard, seen))["outcome"] == "reused"
    assert oidc_idp.stats()["refresh_requests"] == 1

    # The new refresh token refreshes fine: the grant was never revoked.
    (_, later), *_ = await burst(replicas[-1:], f"rt={new_rt}", n=1)
    known_secrets.add(later.get("at"), later.get("rt"), later.get("idt"))
    assert later["rt"] not in (new_rt, session["refresh_token"])
    stats = oidc_idp.stats()
    assert (stats["refresh_requests"], stats["refresh_success"], stats["invalid_grant"]) == (2, 2, 0)
    assert stats["grants_revoked"] == 0


# --- moto's Cognito: an IdP slower than the lock lease -----------------------------------


@pytest.fixture
def rotating_user(
    cognito_idp: CognitoEmulator,
    make_cognito_pool: Callable[..., PoolInfo],
    make_cognito_user: Callable[..., CognitoUser],
    known_secrets: KnownSecrets,
) -> CognitoUser:
    # Cognito's retry grace lets a replica that lost Redis spend the old token once more: what
    # degraded mode relies on (docs/behaviour.md §7); with no grace at all, it would sign that request out.
    pool = make_cognito_pool(rotate_refresh_tokens=True, retry_grace_period_s=60)
    user = make_cognito_user(pool)
    known_secrets.add(user.refresh_token, user.access_token, user.id_token)
    return user


@pytest.fixture
async def short_lease_replicas(
    aiohttp_server: Any,
    cookieguard_process: Start,
    rotating_user: CognitoUser,
    redis_server: RedisServer,
    store_key_secret: str,
) -> list[CookieguardProcess]:
    """Three Cognito replicas in front of one buggy app, sharing Redis with a 500 ms lock lease."""
    app = await start_buggy_app(aiohttp_server)
    store = store_config(redis_server, store_key_secret, lease="500ms")
    upstream = str(app.make_url(""))
    return [cookieguard_process(cognito_config(rotating_user.pool, upstream, store)) for _ in range(3)]


def expired_amplify_header(user: CognitoUser, refresh_token: str | None = None) -> str:
    cookies = amplify_cookies(
        user.pool.client_id,
        user.username,
        access_token=None,  # expired and dropped by the browser: absent-but-refreshable
        id_token=user.id_token,
        refresh_token=refresh_token or user.refresh_token,
    )
    return "; ".join(f"{k}={v}" for k, v in cookies.items())


async def test_a_slow_idp_keeps_the_lease_extended_across_replicas(
    cognito_idp: CognitoEmulator,
    rotating_user: CognitoUser,
    short_lease_replicas: list[CookieguardProcess],
    known_secrets: KnownSecrets,
) -> None:
    user, replicas = rotating_user, short_lease_replicas  # the lease is 500 ms: the IdP takes 4 leases
    layout = AmplifyLayout(user.pool.client_id)
    access, refresh = (layout.cookie_name(user.username, k) for k in ("accessToken", "refreshToken"))
    cognito_idp.delay_s = 2.0

    answers = await burst(replicas, expired_amplify_header(user))

    assert cognito_idp.refresh_calls == 1
    assert {status for status, _ in answers} == {200, 302}
    assert len({(c[access], c[refresh]) for _, c in answers}) == 1
    new_refresh = answers[0][1][refresh]
    known_secrets.add(answers[0][1][access], new_refresh)
    per_replica = outcomes(replicas)
    assert sum(o.count("refreshed") for o in per_replica) == 1
    refreshed = next(e for g in replicas for e in g.events("token_refresh") if e["outcome"] == "refreshed")
    assert refreshed["duration_ms"] >= 2000  # the lock outlived its 500 ms lease four times over

    # Old refresh token within grace: no IdP call on any replica.
    cognito_idp.delay_s = 0.0
    for guard in replicas:
        seen = len(guard.events("token_refresh"))
        (_, late), *_ = await burst([guard], expired_amplify_header(user), n=1)
        assert late[refresh] == new_refresh
        assert (await refresh_event_after(guard, seen))["outcome"] == "reused"
    assert cognito_idp.refresh_calls == 1

    # The rotated refresh token works: one more refresh, accepted.
    seen = len(replicas[0].events("token_refresh"))
    (_, later), *_ = await burst(replicas[:1], expired_amplify_header(user, unquote(new_refresh)), n=1)
    known_secrets.add(later.get(access), later.get(refresh))
    assert cognito_idp.refresh_calls == 2 and later[refresh] != new_refresh
    assert (await refresh_event_after(replicas[0], seen))["outcome"] == "refreshed"


# --- Redis dies in the middle of a burst, then comes back --------------------------------


async def test_redis_dying_mid_burst_degrades_each_replica_and_coordination_resumes(
    cognito_idp: CognitoEmulator,
    rotating_user: CognitoUser,
    make_cognito_user: Callable[..., CognitoUser],
    redis_server: RedisServer,
    short_lease_replicas: list[CookieguardProcess],
    known_secrets: KnownSecrets,
) -> None:
    user, replicas = rotating_user, short_lease_replicas
    layout = AmplifyLayout(user.pool.client_id)
    access = layout.cookie_name(user.username, "accessToken")
    cognito_idp.delay_s = 1.0

    running = asyncio.ensure_future(burst(replicas, expired_amplify_header(user)))
    assert await asyncio.to_thread(cognito_idp.wait_for_refresh_calls, 1)  # one replica holds the lock
    redis_server.stop()  # SIGKILL, mid-refresh
    answers = await running

    assert len(answers) == BURST and {status for status, _ in answers} <= {200, 302}
    assert all(access in cookies for _, cookies in answers)  # everybody got fresh tokens
    for _, cookies in answers:
        known_secrets.add(cookies[access], cookies.get(layout.cookie_name(user.username, "refreshToken")))
    assert 1 <= cognito_idp.refresh_calls <= len(replicas)  # at most one refresh per replica
    print(
        f"\nRedis killed mid-burst: {cognito_idp.refresh_calls} IdP refresh(es) for {len(replicas)} replicas"
    )
    per_replica = outcomes(replicas)
    assert all(o.count("refreshed") <= 1 for o in per_replica)
    assert not any({"rejected", "failed"} & set(o) for o in per_replica)
    for guard in replicas:
        await asyncio.to_thread(guard.wait_for_event, "store_degraded")
        assert len(guard.events("store_degraded")) == 1
        status, body = await admin_get(guard, "readyz")
        assert status == 200 and '"status": "degraded"' in body
        _, metrics = await admin_get(guard, "metrics")
        assert "cookieguard_store_degraded 1.0" in metrics

    # Redis returns (empty: it kept nothing): every replica goes back to it by itself.
    redis_server.start()
    for guard in replicas:
        event = await asyncio.to_thread(guard.wait_for_event, "store_recovered", 15.0)
        assert event["kind"] == "redis"
        status, body = await admin_get(guard, "readyz")
        assert status == 200 and '"store": "ok"' in body
        _, metrics = await admin_get(guard, "metrics")
        assert "cookieguard_store_degraded 0.0" in metrics

    # Coordination resumed: a fresh session's burst makes exactly one refresh across replicas.
    fresh = make_cognito_user(user.pool)
    known_secrets.add(fresh.refresh_token, fresh.access_token, fresh.id_token)
    calls_before = cognito_idp.refresh_calls
    again = await burst(replicas, expired_amplify_header(fresh))
    fresh_access = layout.cookie_name(fresh.username, "accessToken")
    assert len({cookies[fresh_access] for _, cookies in again}) == 1
    known_secrets.add(again[0][1][fresh_access])
    assert cognito_idp.refresh_calls - calls_before == 1


# --- abuse limits: budgets shared over Redis --------------------------------------------


async def test_the_per_subject_budget_is_shared_by_replicas(
    aiohttp_server: Any,
    cookieguard_process: Start,
    redis_server: RedisServer,
    cognito_idp: CognitoEmulator,
    cognito_pool: PoolInfo,
    make_expiring_user: Callable[..., CognitoUser],
    store_key_secret: str,
) -> None:
    """One proven subject (a real, expired access token) with 100 made-up refresh tokens spread
    over two replicas: five IdP calls in all (docs/security.md "Abuse limits"), not five per replica."""
    mallory = make_expiring_user(cognito_pool)
    app = await start_buggy_app(aiohttp_server)
    config = cognito_config(cognito_pool, str(app.make_url("")), store_config(redis_server, store_key_secret))
    replicas = [cookieguard_process(config), cookieguard_process(config)]
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as s:

        async def one(n: int) -> int:
            cookies = amplify_cookies(
                cognito_pool.client_id,
                mallory.username,
                access_token=mallory.access_token,
                id_token=mallory.id_token,
                refresh_token=f"made-up-{n}",
            )
            header = "; ".join(f"{k}={v}" for k, v in cookies.items())
            async with s.get(f"{replicas[n % 2].url}/rsc/{n}", headers={"Cookie": header}) as resp:
                await resp.read()
                return resp.status

        statuses = await asyncio.gather(*(one(n) for n in range(100)))
    assert all(status < 500 for status in statuses)
    assert cognito_idp.refresh_calls == 5
    seen = outcomes(replicas)
    assert sum(o.count("rejected") for o in seen) == 5
    assert all(o and set(o) <= {"rejected", "limited"} for o in seen)
