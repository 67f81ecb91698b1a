"""The reject-storm guard (cookieguard/session/guard.py): pure, on an injected clock, and its hook in the
refresher, and end to end: `cookieguard run` with a wrong client secret against moto.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import aiohttp
from structlog.testing import capture_logs

from cookieguard.config import RefreshConfig, StoreConfig
from cookieguard.ops.demo.emulator import CognitoEmulator, PoolInfo
from cookieguard.session.guard import MIN_REJECTED_RATIO, MIN_REJECTED_SESSIONS, WINDOW_S, RejectStormGuard
from cookieguard.session.limits import Claimant
from cookieguard.session.refresh import Refresher, store_key
from cookieguard.store.memory import MemoryStore
from cookieguard.tokens.providers.base import RefreshRejected, TokenSet
from tests.support.apps import seen_by, start_buggy_app
from tests.support.cognito_idp import CognitoUser
from tests.support.no_secrets import KnownSecrets
from tests.support.proxy_process import CookieguardProcess
from tests.test_faults import cookie_header, guard_config
from tests.test_refresh import Clock, ScriptedProvider


def test_the_defaults_are_the_documented_ones() -> None:
    assert (WINDOW_S, MIN_REJECTED_SESSIONS, MIN_REJECTED_RATIO) == (60.0, 20, 0.9)


def test_a_storm_starts_at_the_twentieth_distinct_rejected_session() -> None:
    guard = RejectStormGuard()
    changes = [guard.record(f"s{n}", rejected=True, now=100.0 + n) for n in range(19)]
    assert changes == [None] * 19 and not guard.storming
    change = guard.record("s19", rejected=True, now=119.0)
    assert change is not None and change.started
    assert (change.rejected_sessions, change.sessions, change.window_s) == (20, 20, 60.0)
    assert guard.storming
    # Once per transition: more rejections change nothing.
    assert guard.record("s20", rejected=True, now=120.0) is None


def test_one_session_rejected_many_times_counts_once() -> None:
    guard = RejectStormGuard()
    for n in range(100):
        assert guard.record("the-same-dead-session", rejected=True, now=float(n) / 10) is None
    assert guard.rejected_sessions == 1 and not guard.storming


def test_successes_keep_the_ratio_below_the_threshold() -> None:
    guard = RejectStormGuard()
    # 30 dead sessions among 10 good ones: 75 % rejected, below 90 %.
    for n in range(10):
        guard.record(f"good{n}", rejected=False, now=1.0)
    for n in range(30):
        assert guard.record(f"dead{n}", rejected=True, now=2.0) is None
    assert not guard.storming and guard.rejected_sessions == 30 and guard.sessions == 40


def test_the_ratio_is_inclusive_at_ninety_percent() -> None:
    guard = RejectStormGuard()
    for n in range(3):
        guard.record(f"good{n}", rejected=False, now=1.0)
    changes = [guard.record(f"dead{n}", rejected=True, now=2.0) for n in range(27)]
    assert changes[-1] is not None and changes[-1].started  # 27 / 30 = 0.9
    assert [c for c in changes if c is not None] == [changes[-1]]


def test_the_storm_ends_when_successes_bring_the_ratio_down() -> None:
    guard = RejectStormGuard()
    for n in range(20):
        guard.record(f"dead{n}", rejected=True, now=10.0)
    assert guard.storming
    changes = [guard.record(f"good{n}", rejected=False, now=11.0) for n in range(3)]
    # 20 / 22 is still >= 90 %; 20 / 23 is not.
    assert changes[:2] == [None, None]
    assert changes[2] is not None and not changes[2].started
    assert (changes[2].rejected_sessions, changes[2].sessions) == (20, 23)
    assert not guard.storming


def test_a_session_that_refreshes_again_stops_counting_as_rejected() -> None:
    guard = RejectStormGuard()
    for n in range(20):
        guard.record(f"s{n}", rejected=True, now=1.0)
    assert guard.storming
    change = guard.record("s0", rejected=False, now=2.0)  # its latest verdict is what counts
    assert change is not None and not change.started
    assert guard.rejected_sessions == 19


def test_the_window_slides_on_the_injected_clock() -> None:
    guard = RejectStormGuard()
    for n in range(20):
        guard.record(f"old{n}", rejected=True, now=float(n))  # t = 0 .. 19
    assert guard.storming
    assert guard.check(now=59.5) is None  # all still within 60 s
    change = guard.check(now=60.0)  # the t=0 verdict leaves the window: 19 sessions
    assert change is not None and not change.started and guard.rejected_sessions == 19
    assert guard.check(now=200.0) is None and guard.sessions == 0


def test_slow_rejections_spread_over_more_than_the_window_never_storm() -> None:
    guard = RejectStormGuard()
    for n in range(500):  # a dead session every 4 s: 15 per window
        assert guard.record(f"s{n}", rejected=True, now=n * 4.0) is None
    assert not guard.storming


def test_memory_is_bounded() -> None:
    guard = RejectStormGuard(max_sessions=1000)
    for n in range(5000):
        guard.record(f"s{n}", rejected=n % 2 == 0, now=1.0)
    assert guard.sessions == 1000 and guard.rejected_sessions == 500


# -- the hook in the refresher ---------------------------------------------------------------


def _refresher(provider: ScriptedProvider, store: MemoryStore, clock: Clock) -> Refresher:
    return Refresher(
        provider,
        store,
        RefreshConfig(backoff_s=5.0),
        StoreConfig(lock_lease_s=0.3),
        clock=clock,
    )


async def test_in_a_storm_rejections_become_failed_are_not_stored_and_back_off() -> None:
    provider = ScriptedProvider(answers=[RefreshRejected("NotAuthorizedException", status=400)] * 25)
    store, clock = MemoryStore(), Clock()
    refresher = _refresher(provider, store, clock)
    with capture_logs() as logs:
        results = [await refresher.refresh(f"R{n}") for n in range(25)]
    assert [r.outcome for r in results] == ["rejected"] * 19 + ["failed"] * 6
    assert {r.error for r in results[19:]} == {"reject_storm"}
    assert all(r.idp_status == 400 for r in results)
    # The rejections before the storm are remembered for grace; the ones in it are not.
    assert await store.get_result(store_key("R0")) is not None
    assert await store.get_result(store_key("R19")) is None
    # A storm session backs off like any IdP trouble: no call until the backoff has passed.
    again = await refresher.refresh("R19")
    assert (again.outcome, again.error, len(provider.calls)) == ("failed", "backoff", 25)
    storms = [e for e in logs if e["event"] == "reject_storm"]
    assert storms == [
        {
            "event": "reject_storm",
            "log_level": "warning",
            "state": "started",
            "rejected_sessions": 20,
            "sessions": 20,
            "window_s": 60.0,
        }
    ]


async def test_successes_end_the_storm_and_rejections_count_again() -> None:
    rejected = RefreshRejected("NotAuthorizedException", status=400)
    provider = ScriptedProvider(answers=[rejected] * 20)  # then successes (the script's default)
    clock = Clock()
    refresher = _refresher(provider, MemoryStore(), clock)
    with capture_logs() as logs:
        for n in range(20):
            await refresher.refresh(f"dead{n}")
        assert refresher.guard.storming
        for n in range(3):
            assert (await refresher.refresh(f"good{n}")).outcome == "refreshed"
        assert not refresher.guard.storming
        provider.answers = [rejected]
        assert (await refresher.refresh("one-more-dead")).outcome == "rejected"
    assert [e["state"] for e in logs if e["event"] == "reject_storm"] == ["started", "ended"]


async def test_transient_failures_do_not_count_either_way() -> None:
    from cookieguard.tokens.providers.base import RefreshUnavailable

    provider = ScriptedProvider(answers=[RefreshUnavailable("http_503", status=503)] * 50)
    refresher = _refresher(provider, MemoryStore(), Clock())
    for n in range(50):
        assert (await refresher.refresh(f"R{n}")).outcome == "failed"
    assert refresher.guard.sessions == 0 and not refresher.guard.storming


# -- end to end: a wrong client secret against moto -------------------------------------------

STORM_USERS = MIN_REJECTED_SESSIONS + 5


async def test_a_wrong_client_secret_stops_clearing_users_after_the_threshold(
    aiohttp_server: Any,
    cookieguard_process: Callable[..., CookieguardProcess],
    cognito_idp: CognitoEmulator,
    make_cognito_pool: Callable[..., PoolInfo],
    make_cognito_user: Callable[..., CognitoUser],
    known_secrets: KnownSecrets,
) -> None:
    pool = make_cognito_pool(with_secret=True)
    cognito_idp.access_token_lifetime_s = -60
    users = [make_cognito_user(pool) for _ in range(STORM_USERS)]
    cognito_idp.access_token_lifetime_s = 3600
    for user in users:
        known_secrets.add(user.refresh_token, user.access_token, user.id_token)
    typo = (pool.client_secret or "")[:-1] + "x"  # an operator's typo
    known_secrets.add(pool.client_secret, typo)
    app = await start_buggy_app(aiohttp_server)
    guard = cookieguard_process(guard_config(pool, str(app.make_url("")), provider={"client_secret": typo}))

    cleared = []
    async with aiohttp.ClientSession() as s:
        for user in users:  # one after the other: the order of the IdP's verdicts is known
            header = cookie_header(user)
            async with s.get(f"{guard.url}/page", headers={"Cookie": header}) as resp:
                assert resp.status == 200
                expired = [c for c in resp.headers.getall("Set-Cookie", []) if "Max-Age=0" in c]
            cleared.append(bool(expired))
            if not expired:
                assert seen_by(app)[-1]["cookie"] == header  # forwarded exactly as it came
        # A storm session asks again at once: it is backing off, the IdP is not called.
        async with s.get(f"{guard.url}/page", headers={"Cookie": cookie_header(users[-1])}) as resp:
            assert resp.status == 200 and "Set-Cookie" not in resp.headers
    below = MIN_REJECTED_SESSIONS - 1
    assert cleared == [True] * below + [False] * (STORM_USERS - below)
    assert cognito_idp.refresh_calls == STORM_USERS
    events = await asyncio.to_thread(
        guard.wait_for_event,
        "token_refresh",
        10,
        lambda _: len(guard.events("token_refresh")) >= STORM_USERS + 1,
    )
    events = guard.events("token_refresh")
    assert [(e["outcome"], e["error"]) for e in events] == (
        [("rejected", "NotAuthorizedException")] * below
        + [("failed", "reject_storm")] * (STORM_USERS - below)
        + [("failed", "backoff")]
    )
    storms = guard.events("reject_storm")
    assert len(storms) == 1
    assert storms[0]["level"] == "warning" and storms[0]["state"] == "started"
    assert (storms[0]["rejected_sessions"], storms[0]["sessions"]) == (MIN_REJECTED_SESSIONS,) * 2


async def test_rejections_of_unproven_sessions_never_start_a_storm() -> None:
    """Anybody can make up refresh tokens the IdP rejects: 100 of them (unbudgeted here) must not
    switch off clearing for a real session that was revoked."""
    rejected = RefreshRejected("NotAuthorizedException", status=400)
    provider = ScriptedProvider(answers=[rejected] * 101)
    refresher = _refresher(provider, MemoryStore(), Clock())
    sprayed = [await refresher.refresh(f"made-up-{n}", claimant=Claimant("203.0.113.7")) for n in range(100)]
    assert {r.outcome for r in sprayed} == {"rejected"} and len(provider.calls) == 100
    assert not refresher.guard.storming and refresher.guard.sessions == 0
    real = await refresher.refresh("revoked", claimant=Claimant("198.51.100.1", subject="sub-alice"))
    assert real.outcome == "rejected" and refresher.guard.rejected_sessions == 1


async def test_without_signature_checks_every_verdict_feeds_the_guard() -> None:
    """verify.signature false: nothing can be proven, so the guard counts every session."""
    rejected = RefreshRejected("NotAuthorizedException", status=400)
    provider = ScriptedProvider(answers=[rejected] * 25)
    refresher = Refresher(
        provider,
        MemoryStore(),
        RefreshConfig(backoff_s=5.0),
        StoreConfig(lock_lease_s=0.3),
        clock=Clock(),
        unproven_feed_guard=True,
    )
    results = [await refresher.refresh(f"R{n}", claimant=Claimant("10.0.0.1")) for n in range(25)]
    assert [r.outcome for r in results] == ["rejected"] * 19 + ["failed"] * 6


async def test_after_a_success_only_refresh_tokens_that_worked_here_feed_the_guard() -> None:
    """Self-registered accounts prove their subjects; their made-up refresh tokens never
    refreshed, so 200 rejections of them start no storm and a revoked victim is rejected."""
    rejected = RefreshRejected("NotAuthorizedException", status=400)
    provider = ScriptedProvider(answers=[TokenSet(access_token="A")] + [rejected] * 201)
    refresher = _refresher(provider, MemoryStore(), Clock())
    assert (
        await refresher.refresh("bob", claimant=Claimant("10.0.0.2", subject="bob"))
    ).outcome == "refreshed"
    for account in range(40):
        for n in range(5):
            claimant = Claimant("203.0.113.7", subject=f"mallory-{account}")
            assert (
                await refresher.refresh(f"made-up-{account}-{n}", claimant=claimant)
            ).outcome == "rejected"
    assert not refresher.guard.storming and refresher.guard.rejected_sessions == 0
    victim = await refresher.refresh("victim", claimant=Claimant("198.51.100.1", subject="victim"))
    assert victim.outcome == "rejected"


async def test_refresh_tokens_that_worked_and_are_then_rejected_still_start_a_storm() -> None:
    """The IdP's client secret rotated under a running process: every user's working (here:
    rotated, so the IdP's own successor) refresh token is rejected at once; those count."""
    rejected = RefreshRejected("NotAuthorizedException", status=400)
    rotated = [TokenSet(access_token="A", refresh_token=f"R{n}-next") for n in range(25)]
    provider = ScriptedProvider(answers=[*rotated, *[rejected] * 25])
    clock = Clock()
    refresher = _refresher(provider, MemoryStore(), clock)
    users = [Claimant("10.0.0.1", subject=f"user-{n}") for n in range(25)]
    for n, user in enumerate(users):
        assert (await refresher.refresh(f"R{n}", claimant=user)).outcome == "refreshed"
    clock.now += WINDOW_S + 1  # the successes have left the window
    outcomes = [
        (await refresher.refresh(f"R{n}-next", claimant=user)).outcome for n, user in enumerate(users)
    ]
    assert outcomes == ["rejected"] * 19 + ["failed"] * 6 and refresher.guard.storming


async def test_before_any_success_one_subject_counts_once_however_many_tokens_it_sends() -> None:
    rejected = RefreshRejected("NotAuthorizedException", status=400)
    provider = ScriptedProvider(answers=[rejected] * 100)
    refresher = _refresher(provider, MemoryStore(), Clock())
    for n in range(100):
        await refresher.refresh(f"made-up-{n}", claimant=Claimant("203.0.113.7", subject="mallory"))
    assert not refresher.guard.storming and refresher.guard.rejected_sessions == 1
