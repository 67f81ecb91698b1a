"""Abuse limits (docs/security.md "Abuse limits"), end to end: cookieguard in process in front of the buggy
app, refreshing against moto's Cognito server, IdP calls counted at the emulator.

The budgets' clock is the proxy's wall clock, injected and frozen: the tests move it, so what a
budget allows does not depend on how fast this machine runs the spray. The storm tests (sessions
waiting for the IdP ceiling) run on the real clock: a slot of the ceiling comes free a second
after its call, so they take seconds.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable
from typing import Any

import aiohttp
import pytest
import yaml
from aiohttp.test_utils import TestServer

from cookieguard.app import build_admin_app, build_app
from cookieguard.edge.admin import ADMIN_KEY
from cookieguard.loader import parse_config
from cookieguard.ops.demo.emulator import CognitoEmulator, PoolInfo
from cookieguard.session.layouts import AmplifyLayout
from cookieguard.tokens.claims import decode_claims
from tests.support.apps import cookie_value, seen_by, set_cookie_values, start_buggy_app
from tests.support.cognito_idp import (
    CognitoUser,
    amplify_cookie_header,
    cognito_guard_config,
    made_up_session,
)
from tests.support.no_secrets import KnownSecrets


class FrozenClock:
    def __init__(self) -> None:
        self.now = time.time()

    def __call__(self) -> float:
        return self.now


async def start_guard(
    aiohttp_server: Any, pool: PoolInfo, clock: FrozenClock, limits: dict[str, Any] | None = None
) -> str:
    url, _app = await start_guard_and_app(aiohttp_server, pool, clock, limits)
    return url


# The admin listener of each guard started here, by the guard's URL: metrics live there.
ADMIN_URLS: dict[str, str] = {}


async def start_guard_and_app(
    aiohttp_server: Any, pool: PoolInfo, clock: Callable[[], float], limits: dict[str, Any] | None = None
) -> tuple[str, TestServer]:
    """cookieguard in front of the buggy app (which records what reached it); the guard's URL.
    Its admin listener (metrics) is at ADMIN_URLS[url]."""
    app = await start_buggy_app(aiohttp_server)
    upstream = str(app.make_url("")).rstrip("/")
    config = parse_config(
        yaml.safe_dump(cognito_guard_config(pool, upstream, timeout="5s", limits=limits or {})), env={}
    )
    guard = await aiohttp_server(build_app(config, clock=clock))
    admin = await aiohttp_server(build_admin_app(guard.app[ADMIN_KEY], config))
    url = str(guard.make_url("")).rstrip("/")
    ADMIN_URLS[url] = str(admin.make_url("")).rstrip("/")
    return url, app


async def get(
    s: aiohttp.ClientSession, url: str, cookie_header: str, **headers: str
) -> tuple[int, dict[str, str], list[str]]:
    async with s.get(url, headers={"Cookie": cookie_header, **headers}, allow_redirects=False) as resp:
        await resp.read()
        set_cookies = resp.headers.getall("Set-Cookie", [])
        return resp.status, set_cookie_values(set_cookies), set_cookies


async def spray(s: aiohttp.ClientSession, url: str, pool: PoolInfo, n: int, **headers: str) -> list[int]:
    results = await asyncio.gather(
        *(get(s, f"{url}/rsc/{i}", made_up_session(pool), **headers) for i in range(n))
    )
    return [status for status, _, _ in results]


def refresh_events(logs: Any) -> list[dict[str, Any]]:
    return [json.loads(line) for line in logs.getvalue().splitlines() if '"token_refresh"' in line]


def cleared(user: CognitoUser, set_cookies: list[str]) -> bool:
    name = AmplifyLayout(user.pool.client_id).cookie_name(user.username, "refreshToken")
    return any(line.startswith(f"{name}=") and "Max-Age=0" in line for line in set_cookies)


def refreshed(user: CognitoUser, values: dict[str, str]) -> bool:
    name = AmplifyLayout(user.pool.client_id).cookie_name(user.username, "accessToken")
    return bool(values.get(name)) and values[name] != user.access_token


async def test_a_spray_of_made_up_sessions_costs_a_handful_of_idp_calls_and_nobody_else_waits(
    aiohttp_server: Any,
    cognito_idp: CognitoEmulator,
    cognito_pool: PoolInfo,
    make_expiring_user: Callable[..., CognitoUser],
    known_secrets: KnownSecrets,
    no_secrets_in_logs: Any,
) -> None:
    alice, revoked, revoked_later = (make_expiring_user(cognito_pool) for _ in range(3))
    cognito_idp.revoke(cognito_pool, revoked.refresh_token)
    cognito_idp.revoke(cognito_pool, revoked_later.refresh_token)
    clock = FrozenClock()
    url = await start_guard(aiohttp_server, cognito_pool, clock)
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=64)) as s:
        # One second's worth of spray spends what the budgets allow an anonymous client ...
        statuses = await spray(s, url, cognito_pool, 100)
        spent = cognito_idp.refresh_calls
        assert 1 <= spent <= 5
        # ... after that, a real user's session and a revoked one each cost exactly one call,
        # during the spray, and get what they would get without it.
        during = await asyncio.gather(
            spray(s, url, cognito_pool, 100),
            get(s, f"{url}/page", amplify_cookie_header(alice)),
            get(s, f"{url}/page", amplify_cookie_header(revoked)),
        )
        statuses += during[0]
        assert cognito_idp.refresh_calls == spent + 2
        status, values, _ = during[1]
        assert status == 200 and refreshed(alice, values)
        known_secrets.add(*values.values())
        status, _, set_cookies = during[2]
        assert status == 200 and cleared(revoked, set_cookies)
        # Two more seconds of spray: one more unproven call per second at most.
        for _ in range(2):
            clock.now += 1
            statuses += await spray(s, url, cognito_pool, 50)
        assert len(statuses) == 300 and all(status < 500 for status in statuses)
        assert cognito_idp.refresh_calls <= spent + 2 + 2 <= 20
        # After the spray a revoked session is still cleared: the spray's rejections never
        # reached the reject-storm guard.
        status, _, set_cookies = await get(s, f"{url}/page", amplify_cookie_header(revoked_later))
        assert status == 200 and cleared(revoked_later, set_cookies)
        metrics = await scrape(s, url)
    limited_total = metric(metrics, 'cookieguard_refresh_total{outcome="limited"}')
    events = refresh_events(no_secrets_in_logs)
    limited = [e for e in events if e["outcome"] == "limited"]
    # Counted every time, logged once per budget and address per minute.
    assert limited_total >= 280
    assert 1 <= len(limited) <= 2 and {e["limit"] for e in limited} <= {"unproven_total", "unproven_address"}
    assert all(e["address"] == "127.0.0.1" and e["proven"] is False for e in limited)
    assert not any(e["outcome"] == "failed" and e.get("error") == "reject_storm" for e in events)
    assert [e["user"] for e in events if e["outcome"] == "refreshed"] == [alice.username]


async def test_one_subject_with_a_hundred_refresh_tokens_costs_five_calls(
    aiohttp_server: Any,
    cognito_idp: CognitoEmulator,
    cognito_pool: PoolInfo,
    make_expiring_user: Callable[..., CognitoUser],
    known_secrets: KnownSecrets,
) -> None:
    """The attacker's own real (expired) access token proves a subject; the made-up refresh
    tokens under it are budgeted per subject, not per address."""
    mallory, bob = make_expiring_user(cognito_pool), make_expiring_user(cognito_pool)
    clock = FrozenClock()
    url = await start_guard(aiohttp_server, cognito_pool, clock, {"unproven_per_address": 1000})
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=64)) as s:
        results = await asyncio.gather(
            *(
                get(s, f"{url}/rsc/{n}", amplify_cookie_header(mallory, refresh_token=f"made-up-{n}"))
                for n in range(100)
            )
        )
        assert all(status < 500 for status, _, _ in results)
        assert cognito_idp.refresh_calls == 5
        # A retry of a token already charged is free of the subject budget (and gets its
        # verdict: the made-up token is rejected, so the session is cleared).
        charged = [n for n, (_, _, sc) in enumerate(results) if cleared(mallory, sc)]
        assert len(charged) == 5
        status, _, set_cookies = await get(
            s, f"{url}/rsc/x", amplify_cookie_header(mallory, refresh_token=f"made-up-{charged[0]}")
        )
        assert status == 200 and cleared(mallory, set_cookies)
        # Another user behind the same address is not affected.
        status, values, _ = await get(s, f"{url}/page", amplify_cookie_header(bob))
        known_secrets.add(*values.values())
        assert status == 200 and refreshed(bob, values)
        assert cognito_idp.refresh_calls == 6


async def test_the_session_endpoint_goes_through_the_same_budgets(
    aiohttp_server: Any, cognito_idp: CognitoEmulator, cognito_pool: PoolInfo
) -> None:
    clock = FrozenClock()
    url = await start_guard(aiohttp_server, cognito_pool, clock)
    async with aiohttp.ClientSession() as s:
        bodies = []
        for _ in range(20):
            async with s.get(
                f"{url}/.cookieguard/session", headers={"Cookie": made_up_session(cognito_pool)}
            ) as resp:
                assert resp.status == 200
                bodies.append(await resp.json())
    assert cognito_idp.refresh_calls == 1
    # A session of nothing but a made-up refresh token whose refresh was held back proved
    # nothing: it is not reported signed in (docs/operations.md "Session endpoint").
    assert [(b["authenticated"], b["reason"]) for b in bodies] == [(False, "rejected")] + [
        (False, "unproven")
    ] * 19
    assert all(body["user"] is None for body in bodies)  # no verified token: no user to report


@pytest.mark.parametrize("trusted", [True, False])
async def test_behind_a_trusted_proxy_the_forwarded_client_is_budgeted(
    aiohttp_server: Any, cognito_idp: CognitoEmulator, cognito_pool: PoolInfo, trusted: bool
) -> None:
    clock = FrozenClock()
    limits: dict[str, Any] = {"unproven_per_second": 100}
    if trusted:
        limits["trusted_proxies"] = ["127.0.0.0/8"]
    url = await start_guard(aiohttp_server, cognito_pool, clock, limits)
    async with aiohttp.ClientSession() as s:
        for _ in range(10):
            await get(s, f"{url}/rsc", made_up_session(cognito_pool), **{"X-Forwarded-For": "203.0.113.7"})
        assert cognito_idp.refresh_calls == 5
        # Another client behind the proxy; from an untrusted peer the header proves nothing and
        # the peer's budget is already spent. A client cannot pick its address by writing the
        # header itself: left of the proxy's entry, it is ignored.
        spoofed = "198.51.100.9, 203.0.113.7"
        await get(s, f"{url}/rsc", made_up_session(cognito_pool), **{"X-Forwarded-For": spoofed})
        assert cognito_idp.refresh_calls == 5
        await get(s, f"{url}/rsc", made_up_session(cognito_pool), **{"X-Forwarded-For": "198.51.100.9"})
        assert cognito_idp.refresh_calls == (6 if trusted else 5)


# ---------------------------------------------------------------------------------------------
# A mass expiry: proven sessions over the IdP ceiling wait for it (docs/security.md "Abuse limits")
# ---------------------------------------------------------------------------------------------


def access_cookie(user: CognitoUser, cookie_header: str) -> str | None:
    return cookie_value(
        cookie_header, AmplifyLayout(user.pool.client_id).cookie_name(user.username, "accessToken")
    )


async def scrape(s: aiohttp.ClientSession, url: str) -> str:
    """The metrics of the guard at `url`, from its admin listener."""
    async with s.get(f"{ADMIN_URLS[url]}/.cookieguard/metrics") as resp:
        return await resp.text()


def metric(text: str, series: str) -> float:
    return next(float(line.split()[-1]) for line in text.splitlines() if line.startswith(series + " "))


async def until_waiting(s: aiohttp.ClientSession, url: str, count: int, timeout_s: float = 10.0) -> None:
    """Poll the queue gauge until `count` sessions wait for the IdP ceiling."""
    deadline = time.monotonic() + timeout_s
    while metric(await scrape(s, url), "cookieguard_refresh_queue_waiting") != count:
        assert time.monotonic() < deadline, f"never {count} waiting"


async def test_three_hundred_users_expiring_at_once_all_reach_the_app_refreshed(
    aiohttp_server: Any,
    cognito_idp: CognitoEmulator,
    cognito_pool: PoolInfo,
    make_expiring_user: Callable[..., CognitoUser],
    known_secrets: KnownSecrets,
) -> None:
    """The default limits (50 IdP calls per second, a queue of 1000, 10 s each), 300 distinct
    signed-in users whose access tokens expired overnight, all at once at one replica, an IdP
    answering in 50 ms. Before the queue, 240 of them reached the app with the expired token."""
    users = [make_expiring_user(cognito_pool) for _ in range(300)]
    cognito_idp.delay_s = 0.05
    url, app = await start_guard_and_app(aiohttp_server, cognito_pool, time.time)
    # The first 50 users send two requests each at once: the second joins the first's refresh
    # (and its wait) for free.
    sent = [(n, user) for n, user in enumerate(users)] + [
        (300 + n, user) for n, user in enumerate(users[:50])
    ]
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as s:
        results = await asyncio.gather(
            *(get(s, f"{url}/page/{n}", amplify_cookie_header(u)) for n, u in sent)
        )
        metrics = await scrape(s, url)
    now = time.time()
    seen = {record["path"]: record["cookie"] for record in seen_by(app)}
    for (n, user), (status, values, _) in zip(sent, results, strict=True):
        known_secrets.add(*values.values())
        assert status == 200 and refreshed(user, values), n
        # What the app got is the fresh access token, never the expired one.
        forwarded = access_cookie(user, seen[f"/page/{n}"])
        assert forwarded is not None and forwarded != user.access_token, n
        claims = decode_claims(forwarded)
        assert claims is not None and claims.exp is not None and claims.exp > now, n
    calls = sorted(call.at for call in cognito_idp.refresh_log)
    assert len(calls) == 300  # one per session: the 50 second requests joined
    # As the IdP counts: whole seconds from its first refresh call.
    per_second = [0] * (int(calls[-1] - calls[0]) + 1)
    for at in calls:
        per_second[int(at - calls[0])] += 1
    assert max(per_second) <= 50, per_second
    assert metric(metrics, 'cookieguard_refresh_total{outcome="limited"}') == 0
    assert metric(metrics, 'cookieguard_refresh_total{outcome="refreshed"}') == 300
    assert metric(metrics, "cookieguard_refresh_queue_waiting") == 0
    # Most of them waited: the histogram saw waits of seconds.
    assert metric(metrics, 'cookieguard_refresh_wait_seconds_bucket{le="2.0"}') < 300


async def test_a_full_queue_forwards_unchanged_and_a_merely_due_session_does_not_wait(
    aiohttp_server: Any,
    cognito_idp: CognitoEmulator,
    cognito_pool: PoolInfo,
    make_cognito_user: Callable[..., CognitoUser],
    make_expiring_user: Callable[..., CognitoUser],
    known_secrets: KnownSecrets,
    no_secrets_in_logs: Any,
) -> None:
    first, waiting, overflow = (make_expiring_user(cognito_pool) for _ in range(3))
    # Valid for about 100 s more, inside `before_expiry` (5m): due, but the app can use it.
    cognito_idp.clock_offset_s = -3500
    due = make_cognito_user(cognito_pool)
    cognito_idp.clock_offset_s = 0
    known_secrets.add(due.access_token, due.id_token, due.refresh_token)
    url, app = await start_guard_and_app(
        aiohttp_server,
        cognito_pool,
        time.time,
        {"idp_calls_per_second": 1, "refresh_queue": 1, "refresh_wait": "10s"},
    )
    async with aiohttp.ClientSession() as s:
        status, values, _ = await get(s, f"{url}/page/first", amplify_cookie_header(first))
        assert status == 200 and refreshed(first, values)  # the one slot: busy for a second
        known_secrets.add(*values.values())
        queued = asyncio.ensure_future(get(s, f"{url}/page/waiting", amplify_cookie_header(waiting)))
        await until_waiting(s, url, 1)
        # The queue is full: forwarded as it came, the expired token and all.
        status, values, _ = await get(s, f"{url}/page/overflow", amplify_cookie_header(overflow))
        assert status == 200 and not refreshed(overflow, values)
        # Still valid: forwarded unchanged at once, while the queued session still waits.
        status, values, _ = await get(s, f"{url}/page/due", amplify_cookie_header(due))
        assert status == 200 and not refreshed(due, values)
        assert not queued.done()
        status, values, _ = await queued
        assert status == 200 and refreshed(waiting, values)
        known_secrets.add(*values.values())
        metrics = await scrape(s, url)
    seen = {record["path"]: record["cookie"] for record in seen_by(app)}
    assert access_cookie(overflow, seen["/page/overflow"]) == overflow.access_token
    assert access_cookie(due, seen["/page/due"]) == due.access_token
    assert access_cookie(waiting, seen["/page/waiting"]) != waiting.access_token
    assert cognito_idp.refresh_calls == 2
    assert metric(metrics, 'cookieguard_refresh_total{outcome="limited"}') == 2
    assert metric(metrics, 'cookieguard_refresh_limited_total{limit="queue_full"}') == 1
    assert metric(metrics, 'cookieguard_refresh_limited_total{limit="idp_ceiling"}') == 1
    limited = {e["user"]: e for e in refresh_events(no_secrets_in_logs) if e["outcome"] == "limited"}
    assert limited[overflow.username]["limit"] == "queue_full" and limited[overflow.username]["proven"]
    assert limited[due.username]["limit"] == "idp_ceiling"


async def test_a_wait_that_runs_out_forwards_unchanged(
    aiohttp_server: Any,
    cognito_idp: CognitoEmulator,
    cognito_pool: PoolInfo,
    make_expiring_user: Callable[..., CognitoUser],
    known_secrets: KnownSecrets,
    no_secrets_in_logs: Any,
) -> None:
    first, late = make_expiring_user(cognito_pool), make_expiring_user(cognito_pool)
    url, app = await start_guard_and_app(
        aiohttp_server, cognito_pool, time.time, {"idp_calls_per_second": 1, "refresh_wait": "200ms"}
    )
    async with aiohttp.ClientSession() as s:
        status, values, _ = await get(s, f"{url}/page/first", amplify_cookie_header(first))
        assert status == 200 and refreshed(first, values)
        known_secrets.add(*values.values())
        status, values, _ = await get(s, f"{url}/page/late", amplify_cookie_header(late))
        assert status == 200 and not refreshed(late, values)
        metrics = await scrape(s, url)
    assert access_cookie(late, seen_by(app)[-1]["cookie"]) == late.access_token
    assert cognito_idp.refresh_calls == 1
    assert metric(metrics, 'cookieguard_refresh_limited_total{limit="wait_expired"}') == 1
    assert metric(metrics, "cookieguard_refresh_queue_waiting") == 0
    (event,) = [e for e in refresh_events(no_secrets_in_logs) if e["outcome"] == "limited"]
    assert event["limit"] == "wait_expired" and event["user"] == late.username and event["wait_ms"] >= 200


SELF_REGISTERED = 40


async def test_forty_self_registered_accounts_cannot_switch_off_clearing_a_revoked_session(
    aiohttp_server: Any,
    cognito_idp: CognitoEmulator,
    cognito_pool: PoolInfo,
    make_expiring_user: Callable[..., CognitoUser],
    known_secrets: KnownSecrets,
    no_secrets_in_logs: Any,
) -> None:
    """Each attacker account proves its subject with its own (expired) access token and sends 5
    made-up refresh tokens under it: 200 proven sessions the IdP rejects. None of those refresh
    tokens ever refreshed, so none counts toward the reject-storm guard (docs/security.md "Threat model"),
    and a genuinely revoked victim is still cleared."""
    bob, victim = make_expiring_user(cognito_pool), make_expiring_user(cognito_pool)
    attackers = [make_expiring_user(cognito_pool) for _ in range(SELF_REGISTERED)]
    cognito_idp.revoke(cognito_pool, victim.refresh_token)
    clock = FrozenClock()
    url = await start_guard(aiohttp_server, cognito_pool, clock, {"idp_calls_per_second": 1000})
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=64)) as s:
        # The site works: a real user refreshes.
        status, values, _ = await get(s, f"{url}/page", amplify_cookie_header(bob))
        known_secrets.add(*values.values())
        assert status == 200 and refreshed(bob, values)
        results = await asyncio.gather(
            *(
                get(s, f"{url}/rsc/{n}", amplify_cookie_header(mallory, refresh_token=f"made-up-{i}-{n}"))
                for i, mallory in enumerate(attackers)
                for n in range(5)
            )
        )
        assert all(status == 200 for status, _, _ in results)
        assert cognito_idp.refresh_calls == 1 + SELF_REGISTERED * 5
        status, _, set_cookies = await get(s, f"{url}/page", amplify_cookie_header(victim))
        assert status == 200 and cleared(victim, set_cookies)
    events = refresh_events(no_secrets_in_logs)
    assert sum(e["outcome"] == "rejected" for e in events) == SELF_REGISTERED * 5 + 1
    assert not any(e.get("error") == "reject_storm" for e in events)
    assert '"reject_storm"' not in no_secrets_in_logs.getvalue()
