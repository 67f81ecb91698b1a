"""A week in the life of one user, simulated: access tokens live 1 h, refresh tokens rotate, the
user comes back every 5-60 minutes, and a third of the requests hit a page the buggy app answers
with a redirect that drops its refreshed cookies (the seed's bug, `cookieguard.ops.demo.app`).

Time is simulated, not slept: cookieguard, the app and the IdP (moto, minting tokens under a
shifted clock) all read one injected wall clock that the test moves forward. The same schedule
is run twice: straight at the app (the user is signed out at the first unlucky expiry) and through
cookieguard (never signed out, one refresh per expiry, never a refresh token used twice).
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import aiohttp
import pytest

from cookieguard.app import build_app
from cookieguard.config import CookieAttributes
from cookieguard.loader import parse_config
from cookieguard.ops.demo.app import DemoApp
from cookieguard.ops.demo.emulator import CognitoEmulator, PoolInfo
from tests.support.apps import Browser, amplify_cookies
from tests.support.cognito_idp import CognitoUser
from tests.support.no_secrets import KnownSecrets

# a simulated week of requests: `make test PYTEST_ARGS="-m 'not slow'"` skips it
pytestmark = pytest.mark.slow

WEEK_S = 7 * 24 * 3600


class SimClock:
    def __init__(self) -> None:
        self.offset_s = 0.0

    def __call__(self) -> float:
        return time.time() + self.offset_s


@dataclass
class WeekResult:
    requests: int
    signed_out_at_request: int | None
    expiries: int


def schedule(seed: int = 7) -> list[tuple[float, str]]:
    rng = random.Random(seed)
    out, t = [], 0.0
    while t < WEEK_S:
        t += rng.uniform(5 * 60, 60 * 60)
        out.append((t, "/" if rng.random() < 1 / 3 else "/dashboard"))
    return out


async def live_a_week(
    base_url: str, browser: Browser, clock: SimClock, idp: CognitoEmulator, pool: PoolInfo
) -> WeekResult:
    """Follow the schedule; stop at the first sign-out (landing on /login)."""
    expiries, last_exp = 0, None
    plan = schedule()
    async with aiohttp.ClientSession(cookie_jar=aiohttp.DummyCookieJar()) as s:
        for n, (at_s, path) in enumerate(plan):
            clock.offset_s = at_s
            idp.clock_offset_s = at_s
            current = path
            for _hop in range(5):
                async with s.get(
                    base_url + current,
                    headers={"Cookie": browser.header(), "Accept": "text/html"},
                    allow_redirects=False,
                ) as resp:
                    browser.receive(resp.headers.getall("Set-Cookie", []))
                    if resp.status in (301, 302, 303, 307, 308):
                        current = resp.headers["Location"]
                        continue
                    break
            if current == "/login":
                return WeekResult(n + 1, n + 1, expiries)
            exp = access_exp(browser, pool)
            if exp != last_exp:
                expiries += last_exp is not None
                last_exp = exp
    return WeekResult(len(plan), None, expiries)


def access_exp(browser: Browser, pool: PoolInfo) -> float | None:
    from urllib.parse import unquote

    from cookieguard.tokens.claims import decode_claims

    for name, value in browser.cookies.items():
        if name.startswith(f"CognitoIdentityServiceProvider.{pool.client_id}.") and name.endswith(
            ".accessToken"
        ):
            claims = decode_claims(unquote(value))
            return claims.exp if claims else None
    return None


@pytest.fixture
def week_pool(make_cognito_pool: Callable[..., PoolInfo]) -> PoolInfo:
    return make_cognito_pool(rotate_refresh_tokens=True)


def signed_in_browser(user: CognitoUser, known_secrets: KnownSecrets) -> Browser:
    known_secrets.add(user.refresh_token, user.access_token, user.id_token)
    return Browser(
        amplify_cookies(
            user.pool.client_id,
            user.username,
            access_token=user.access_token,
            id_token=user.id_token,
            refresh_token=user.refresh_token,
        )
    )


async def test_a_week_directly_against_the_buggy_app_signs_the_user_out(
    aiohttp_server: Any,
    cognito_idp: CognitoEmulator,
    week_pool: PoolInfo,
    make_cognito_user: Callable[..., CognitoUser],
    known_secrets: KnownSecrets,
) -> None:
    clock = SimClock()
    user = make_cognito_user(week_pool)
    app = DemoApp(
        week_pool, clock=clock, refresh_tolerance_s=5, cookie_attributes=CookieAttributes(secure=False)
    )
    server = await aiohttp_server(app.build())
    result = await live_a_week(
        str(server.make_url("")).rstrip("/"),
        signed_in_browser(user, known_secrets),
        clock,
        cognito_idp,
        week_pool,
    )
    print(
        f"\ndirect: signed out at request {result.signed_out_at_request} after {result.expiries} token renewals"
    )
    assert result.signed_out_at_request is not None
    assert any(e.action == "refresh_rejected" and e.error == "RefreshTokenReuseException" for e in app.events)
    assert any(e.cookies_dropped for e in app.events)


async def test_a_week_through_cookieguard_never_signs_the_user_out(
    aiohttp_server: Any,
    cognito_idp: CognitoEmulator,
    week_pool: PoolInfo,
    make_cognito_user: Callable[..., CognitoUser],
    known_secrets: KnownSecrets,
    no_secrets_in_logs: Any,
) -> None:
    clock = SimClock()
    user = make_cognito_user(week_pool)
    app = DemoApp(
        week_pool, clock=clock, refresh_tolerance_s=5, cookie_attributes=CookieAttributes(secure=False)
    )
    upstream = await aiohttp_server(app.build())
    config = parse_config(
        f"""
        upstream: {str(upstream.make_url("")).rstrip("/")}
        provider:
          kind: cognito
          user_pool_id: {week_pool.user_pool_id}
          client_id: {week_pool.client_id}
          endpoint: {week_pool.endpoint}
          jwks_url: {week_pool.jwks_url}
        cookies: {{attributes: {{secure: false}}}}
        refresh: {{before_expiry: 5m}}
        """,
        env={},
    )
    guard = await aiohttp_server(build_app(config, clock=clock))
    started = time.monotonic()
    result = await live_a_week(
        str(guard.make_url("")).rstrip("/"),
        signed_in_browser(user, known_secrets),
        clock,
        cognito_idp,
        week_pool,
    )
    elapsed = time.monotonic() - started
    calls = cognito_idp.refresh_calls
    print(
        f"\nthrough cookieguard: {result.requests} requests over 7 simulated days in {elapsed:.1f}s, {result.expiries} renewals, {calls} IdP refreshes"
    )
    assert result.signed_out_at_request is None
    assert result.requests > 250 and result.expiries >= 100
    # One refresh per renewal, each by cookieguard; the app never had to refresh (or lost cookies).
    assert calls == result.expiries
    assert app.refreshes == 0
    import json

    events = [
        json.loads(line) for line in no_secrets_in_logs.getvalue().splitlines() if '"token_refresh"' in line
    ]
    assert [e["outcome"] for e in events] == ["refreshed"] * calls
