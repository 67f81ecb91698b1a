"""The user's problem, end to end: `cookieguard run` in front of an app with the seed's bug,
refreshing against moto's real Cognito server.

The app answers redirects, rewrites, 304, 404, 500, HEAD and streamed bodies without ever writing
refreshed cookies. Behind cookieguard every one of those responses must carry the new tokens'
Set-Cookie, and the app must have received the new access token in its Cookie header.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Callable
from typing import Any
from urllib.parse import unquote

import aiohttp
import pytest

from cookieguard.ops.demo.emulator import CognitoEmulator, PoolInfo
from cookieguard.session.layouts import AmplifyLayout
from cookieguard.tokens.claims import decode_claims
from cookieguard.tokens.providers.cognito import CognitoConfig
from tests.support.apps import RESPONSE_KINDS, cookie_value, seen_by, set_cookie_values, start_buggy_app
from tests.support.cognito_idp import CognitoUser, amplify_cookie_header, cognito_guard_config
from tests.support.no_secrets import KnownSecrets
from tests.support.proxy_process import CookieguardProcess

Start = Callable[..., CookieguardProcess]


def guard_config(pool: PoolInfo, upstream: str, **overrides: Any) -> dict[str, Any]:
    overrides.setdefault("routes", [{"match": "/static/", "refresh": False}, {"match": "/"}])
    return cognito_guard_config(pool, upstream, **overrides)


def names(user: CognitoUser) -> AmplifyLayout:
    return AmplifyLayout(user.pool.client_id)


@pytest.mark.parametrize(("method", "path", "status"), [*RESPONSE_KINDS, ("POST", "/redirect", 302)])
async def test_every_response_carries_fresh_tokens_and_the_app_saw_them(
    aiohttp_server: Any,
    cookieguard_process: Start,
    cognito_idp: CognitoEmulator,
    expiring_user: CognitoUser,
    known_secrets: KnownSecrets,
    method: str,
    path: str,
    status: int,
) -> None:
    app = await start_buggy_app(aiohttp_server)
    guard = cookieguard_process(guard_config(expiring_user.pool, str(app.make_url(""))))
    layout = names(expiring_user)
    access_name = layout.cookie_name(expiring_user.username, "accessToken")
    async with (
        aiohttp.ClientSession() as s,
        s.request(
            method,
            f"{guard.url}{path}",
            headers={"Cookie": amplify_cookie_header(expiring_user)},
            allow_redirects=False,
        ) as resp,
    ):
        assert resp.status == status
        body = await resp.read()
        set_cookies = resp.headers.getall("Set-Cookie", [])
        assert resp.headers.get("Cache-Control") == "private, no-store"
    written = set_cookie_values(set_cookies)
    new_access = unquote(written[access_name])
    known_secrets.add(new_access)
    assert new_access != expiring_user.access_token
    claims = decode_claims(new_access, CognitoConfig.user_claims)
    assert claims is not None and claims.exp is not None and claims.user == expiring_user.username
    assert set(written) >= {
        access_name,
        layout.cookie_name(expiring_user.username, "idToken"),
        layout.cookie_name(expiring_user.username, "refreshToken"),
        layout.cookie_name(expiring_user.username, "clockDrift"),
        layout.last_auth_user_name,
    }
    for line in set_cookies:
        assert "Path=/" in line and "Secure" in line and "SameSite=Lax" in line and "HttpOnly" not in line
    # The app itself received the new access token: its middleware had nothing to refresh.
    seen = seen_by(app)
    assert len(seen) == 1
    assert unquote(cookie_value(seen[0]["cookie"], access_name) or "") == new_access
    assert cookie_value(seen[0]["cookie"], "_ga") == "GA1.1.123456789.1700000000"
    assert cognito_idp.refresh_calls == 1
    if path == "/stream":
        assert body == b"part0\npart1\npart2\n"
    event = await asyncio.to_thread(guard.wait_for_event, "token_refresh")
    assert event["outcome"] == "refreshed" and event["user"] == expiring_user.username
    assert len(event["session"]) == 12 and event["new_exp"] > event["old_exp"]


async def test_log_context_is_per_request_on_a_kept_alive_connection(
    aiohttp_server: Any, cookieguard_process: Start, expiring_user: CognitoUser
) -> None:
    """Every log line of a request carries its own route, and the session a refresh named stays
    with that request: the next request on the same connection (one task in aiohttp) logs
    neither."""
    app = await start_buggy_app(aiohttp_server)
    guard = cookieguard_process(
        guard_config(expiring_user.pool, str(app.make_url("")), logging={"level": "info", "access_log": True})
    )
    opened: list[object] = []

    async def on_open(*args: object) -> None:
        opened.append(args)

    trace = aiohttp.TraceConfig()
    trace.on_connection_create_end.append(on_open)
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=1), trace_configs=[trace]) as s:
        for path, headers in (
            ("/page", {"Cookie": amplify_cookie_header(expiring_user)}),
            ("/static/app.js", {}),
            ("/page", {}),
        ):
            async with s.get(f"{guard.url}{path}", headers=headers) as resp:
                assert resp.status == 200
                await resp.read()
    assert len(opened) == 1, "the three requests did not share one connection"
    await asyncio.to_thread(guard.wait_for_event, "access", 5, lambda _: len(guard.events("access")) == 3)
    refresh = guard.events("token_refresh")
    access = guard.events("access")
    assert [(e["path"], e["route"]) for e in access] == [
        ("/page", "/"),
        ("/static/app.js", "/static/"),
        ("/page", "/"),
    ]
    assert len(refresh) == 1 and refresh[0]["route"] == "/"
    assert access[0]["session"] == refresh[0]["session"]
    assert "session" not in access[1] and "session" not in access[2]


async def test_a_fresh_token_is_forwarded_untouched(
    aiohttp_server: Any,
    cookieguard_process: Start,
    cognito_idp: CognitoEmulator,
    cognito_pool: PoolInfo,
    make_cognito_user: Callable[..., CognitoUser],
    known_secrets: KnownSecrets,
) -> None:
    user = make_cognito_user(cognito_pool)  # an hour left
    known_secrets.add(user.refresh_token)
    app = await start_buggy_app(aiohttp_server)
    guard = cookieguard_process(guard_config(cognito_pool, str(app.make_url(""))))
    header = amplify_cookie_header(user)
    async with aiohttp.ClientSession() as s, s.get(f"{guard.url}/page", headers={"Cookie": header}) as resp:
        assert resp.status == 200 and "Set-Cookie" not in resp.headers
    assert seen_by(app)[0]["cookie"] == header
    assert cognito_idp.refresh_calls == 0


async def test_static_routes_skip_the_session_entirely(
    aiohttp_server: Any, cookieguard_process: Start, cognito_idp: CognitoEmulator, expiring_user: CognitoUser
) -> None:
    app = await start_buggy_app(aiohttp_server)
    guard = cookieguard_process(guard_config(expiring_user.pool, str(app.make_url(""))))
    header = amplify_cookie_header(expiring_user)
    async with (
        aiohttp.ClientSession() as s,
        s.get(f"{guard.url}/static/app.js", headers={"Cookie": header}) as resp,
    ):
        assert resp.status == 200 and "Set-Cookie" not in resp.headers
    assert cognito_idp.refresh_calls == 0


async def test_fifty_concurrent_requests_make_one_refresh(
    aiohttp_server: Any,
    cookieguard_process: Start,
    cognito_idp: CognitoEmulator,
    expiring_user: CognitoUser,
    known_secrets: KnownSecrets,
) -> None:
    app = await start_buggy_app(aiohttp_server)
    guard = cookieguard_process(guard_config(expiring_user.pool, str(app.make_url(""))))
    header = amplify_cookie_header(expiring_user)
    access_name = names(expiring_user).cookie_name(expiring_user.username, "accessToken")
    cognito_idp.delay_s = 0.3  # the refresh is still running when the others arrive

    async def one(s: aiohttp.ClientSession, n: int) -> str:
        async with s.get(f"{guard.url}/page/{n}", headers={"Cookie": header}) as resp:
            assert resp.status == 200
            return set_cookie_values(resp.headers.getall("Set-Cookie", []))[access_name]

    connector = aiohttp.TCPConnector(limit=100)
    async with aiohttp.ClientSession(connector=connector) as s:
        tokens = await asyncio.gather(*(one(s, n) for n in range(50)))
    known_secrets.add(*(unquote(t) for t in tokens))
    assert cognito_idp.refresh_calls == 1
    assert len(set(tokens)) == 1
    assert {unquote(cookie_value(r["cookie"], access_name) or "") for r in seen_by(app)} == {
        unquote(tokens[0])
    }
    outcomes = [e["outcome"] for e in guard.events("token_refresh")]
    await asyncio.to_thread(
        guard.wait_for_event, "token_refresh", 5, lambda e: len(guard.events("token_refresh")) >= 50
    )
    outcomes = [e["outcome"] for e in guard.events("token_refresh")]
    assert outcomes.count("refreshed") == 1 and len(outcomes) == 50
    assert set(outcomes) <= {"refreshed", "joined", "reused"}


@pytest.mark.parametrize("api", ["get_tokens_from_refresh_token", "initiate_auth"])
@pytest.mark.parametrize("with_secret", [False, True])
async def test_both_cognito_apis_with_and_without_client_secret(
    aiohttp_server: Any,
    cookieguard_process: Start,
    cognito_idp: CognitoEmulator,
    make_cognito_pool: Callable[..., PoolInfo],
    make_cognito_user: Callable[..., CognitoUser],
    known_secrets: KnownSecrets,
    api: str,
    with_secret: bool,
) -> None:
    pool = make_cognito_pool(with_secret=with_secret)
    cognito_idp.access_token_lifetime_s = -60
    user = make_cognito_user(pool, "jane+test@example.com")
    cognito_idp.access_token_lifetime_s = 3600
    known_secrets.add(user.refresh_token, pool.client_secret)
    app = await start_buggy_app(aiohttp_server)
    guard = cookieguard_process(guard_config(pool, str(app.make_url("")), provider={"api": api}))
    access_name = AmplifyLayout(pool.client_id).cookie_name(user.username, "accessToken")
    assert "jane%2Btest%40example.com" not in access_name and "jane+test%40example.com" in access_name
    async with (
        aiohttp.ClientSession() as s,
        s.get(
            f"{guard.url}/redirect",
            headers={"Cookie": amplify_cookie_header(user)},
            allow_redirects=False,
        ) as resp,
    ):
        assert resp.status == 302
        written = set_cookie_values(resp.headers.getall("Set-Cookie", []))
    assert unquote(written[access_name]) != user.access_token
    assert cognito_idp.refresh_calls_by_api == {
        "GetTokensFromRefreshToken" if api == "get_tokens_from_refresh_token" else "InitiateAuth": 1
    }
    assert cognito_idp.refresh_log[0].sent_secret is with_secret


@pytest.mark.parametrize("mode", ["clear", "pass", "login"])
async def test_revoked_refresh_token_follows_on_rejected(
    aiohttp_server: Any,
    cookieguard_process: Start,
    cognito_idp: CognitoEmulator,
    expiring_user: CognitoUser,
    mode: str,
) -> None:
    cognito_idp.revoke(expiring_user.pool, expiring_user.refresh_token)
    app = await start_buggy_app(aiohttp_server)
    guard = cookieguard_process(
        guard_config(
            expiring_user.pool, str(app.make_url("")), refresh={"on_rejected": mode, "login_url": "/signin"}
        )
    )
    layout = names(expiring_user)
    auth_names = {
        layout.cookie_name(expiring_user.username, k) for k in ("accessToken", "idToken", "refreshToken")
    }
    header = amplify_cookie_header(expiring_user)
    page = {"Cookie": header, "Accept": "text/html", "Sec-Fetch-Mode": "navigate"}
    fetch = {"Cookie": header, "Accept": "application/json", "Sec-Fetch-Mode": "cors"}
    async with aiohttp.ClientSession() as s:
        async with s.get(f"{guard.url}/page", headers=page, allow_redirects=False) as nav:
            nav_status, nav_location = nav.status, nav.headers.get("Location")
            nav_cookies = nav.headers.getall("Set-Cookie", [])
        async with s.get(f"{guard.url}/api/data", headers=fetch, allow_redirects=False) as bg:
            bg_status = bg.status
    expired = {line.split("=", 1)[0] for line in nav_cookies if "Max-Age=0" in line}
    if mode == "clear":
        assert nav_status == 200 and bg_status == 200
        assert auth_names <= expired
        for request in seen_by(app):
            assert not any(cookie_value(request["cookie"], n) for n in auth_names)
            assert cookie_value(request["cookie"], "_ga")
    elif mode == "pass":
        assert nav_status == 200 and bg_status == 200 and not nav_cookies
        assert [r["cookie"] for r in seen_by(app)] == [header, header]
    else:
        assert (nav_status, nav_location) == (302, "/signin") and bg_status == 401
        assert auth_names <= expired
        assert seen_by(app) == []
    # The dead token went to the IdP once; the second request found the verdict in the store.
    assert cognito_idp.refresh_calls == 1
    event = await asyncio.to_thread(guard.wait_for_event, "token_refresh")
    assert event["outcome"] == "rejected" and event["error"] == "NotAuthorizedException"


@pytest.mark.parametrize("failure", [500, 503, "InternalErrorException", "timeout"])
async def test_idp_trouble_never_signs_the_user_out(
    aiohttp_server: Any,
    cookieguard_process: Start,
    cognito_idp: CognitoEmulator,
    expiring_user: CognitoUser,
    failure: int | str,
) -> None:
    if failure == "timeout":
        cognito_idp.delay_s = 3.0  # provider.timeout is 2 s
    else:
        cognito_idp.fail_next = [failure]
    app = await start_buggy_app(aiohttp_server)
    guard = cookieguard_process(guard_config(expiring_user.pool, str(app.make_url(""))))
    header = amplify_cookie_header(expiring_user)
    async with aiohttp.ClientSession() as s:
        for _ in range(3):  # the later ones fall inside the session's backoff
            async with s.get(f"{guard.url}/page", headers={"Cookie": header}) as resp:
                assert resp.status == 200 and "Set-Cookie" not in resp.headers
    assert [r["cookie"] for r in seen_by(app)] == [header] * 3
    assert cognito_idp.refresh_calls == 1
    events = await asyncio.to_thread(
        guard.wait_for_event, "token_refresh", 5, lambda e: len(guard.events("token_refresh")) >= 3
    )
    events = guard.events("token_refresh")
    assert [e["outcome"] for e in events] == ["failed"] * 3
    # moto-style 500s carry a JSON `__type`, so the code is the IdP's; a gateway's HTML 503 has none.
    expected = {
        500: "InternalErrorException",
        503: "http_503",
        "InternalErrorException": "InternalErrorException",
        "timeout": "timeout",
    }
    assert events[0]["error"] == expected[failure]
    assert [e["error"] for e in events[1:]] == ["backoff", "backoff"]


async def test_idp_connection_refused_passes_the_request_unchanged(
    aiohttp_server: Any, cookieguard_process: Start, expiring_user: CognitoUser
) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        dead = f"http://127.0.0.1:{sock.getsockname()[1]}"
    app = await start_buggy_app(aiohttp_server)
    guard = cookieguard_process(
        guard_config(expiring_user.pool, str(app.make_url("")), provider={"endpoint": dead})
    )
    header = amplify_cookie_header(expiring_user)
    async with aiohttp.ClientSession() as s, s.get(f"{guard.url}/page", headers={"Cookie": header}) as resp:
        assert resp.status == 200 and "Set-Cookie" not in resp.headers
    assert seen_by(app)[0]["cookie"] == header
    event = await asyncio.to_thread(guard.wait_for_event, "token_refresh")
    assert (event["outcome"], event["error"]) == ("failed", "connection_error")


async def test_the_apps_own_sign_out_cookie_wins_over_cookieguards(
    aiohttp_server: Any, cookieguard_process: Start, cognito_idp: CognitoEmulator, expiring_user: CognitoUser
) -> None:
    app = await start_buggy_app(aiohttp_server)
    guard = cookieguard_process(guard_config(expiring_user.pool, str(app.make_url(""))))
    access_name = names(expiring_user).cookie_name(expiring_user.username, "accessToken")
    async with (
        aiohttp.ClientSession() as s,
        s.get(
            f"{guard.url}/logout",
            headers={"Cookie": amplify_cookie_header(expiring_user)},
            allow_redirects=False,
        ) as resp,
    ):
        set_cookies = resp.headers.getall("Set-Cookie", [])
    for_access = [line for line in set_cookies if line.startswith(access_name + "=")]
    assert for_access == [f"{access_name}=; Path=/; Max-Age=0"]


@pytest.mark.parametrize(
    "header",
    [
        "garbage",
        "=; ;;; =x; a",
        "CognitoIdentityServiceProvider.{cid}.LastAuthUser=%E0%A4%A",
        "CognitoIdentityServiceProvider.{cid}.LastAuthUser=bob; CognitoIdentityServiceProvider.{cid}.bob.accessToken=not.a.jwt; CognitoIdentityServiceProvider.{cid}.bob.refreshToken=x",
        "CognitoIdentityServiceProvider.{cid}.LastAuthUser=bob; CognitoIdentityServiceProvider.{cid}.bob.accessToken=eyJ!!!.eyJ$$$.sig; CognitoIdentityServiceProvider.{cid}.bob.refreshToken=x",
        "CognitoIdentityServiceProvider.{cid}.LastAuthUser=bob; CognitoIdentityServiceProvider.{cid}.bob.accessToken=a.b.c.d.e",
        "CognitoIdentityServiceProvider.{cid}.LastAuthUser=bob; CognitoIdentityServiceProvider.{cid}.bob.accessToken="
        + "A" * 8192,
        "CognitoIdentityServiceProvider.{cid}.LastAuthUser=" + "%FF%FE" * 100,
        'a="quoted"; b=x=y; =nameless; c=%ZZ',
    ],
)
async def test_malformed_cookies_and_tokens_never_cause_a_5xx(
    aiohttp_server: Any, cookieguard_process: Start, cognito_pool: PoolInfo, header: str
) -> None:
    app = await start_buggy_app(aiohttp_server)
    guard = cookieguard_process(guard_config(cognito_pool, str(app.make_url(""))))
    async with (
        aiohttp.ClientSession() as s,
        s.get(
            f"{guard.url}/page", headers={"Cookie": header.replace("{cid}", cognito_pool.client_id)}
        ) as resp,
    ):
        # The test app (aiohttp's default 8 KB header limit) may refuse the 8 KB cookie with a 400;
        # cookieguard itself forwards it and never answers 5xx.
        assert resp.status == 200 or (resp.status == 400 and len(seen_by(app)) == 0 and len(header) > 8000)
        assert resp.status < 500
    async with aiohttp.ClientSession() as s, s.get(f"{guard.url}/.cookieguard/healthz") as resp:
        assert resp.status == 200


SHARED_CACHE_HEADERS = {
    "Cache-Control": "public, max-age=60, s-maxage=600",
    "CDN-Cache-Control": "max-age=600",
    "Surrogate-Control": "max-age=600",
    "Cloudflare-CDN-Cache-Control": "max-age=600",
    "Vercel-CDN-Cache-Control": "max-age=600",
    "Edge-Control": "cache-maxage=600s",
    "Expires": "Wed, 21 Oct 2037 07:28:00 GMT",
    "X-Accel-Expires": "600",  # nginx's proxy cache honours it over Cache-Control
}


async def start_signing_out_app(aiohttp_server: Any, user: CognitoUser) -> Any:
    """An app whose pages tell CDNs to cache them, and whose sign-out clears only the access token."""
    from aiohttp import web

    layout = names(user)

    async def page(request: web.Request) -> web.Response:
        return web.Response(text="cacheable", headers=SHARED_CACHE_HEADERS)

    async def sign_out(request: web.Request) -> web.Response:
        response = web.Response(status=302, headers={"Location": "/", **SHARED_CACHE_HEADERS})
        response.headers.add(
            "Set-Cookie", f"{layout.cookie_name(user.username, 'accessToken')}=; Path=/; Max-Age=0"
        )
        return response

    async def own_login(request: web.Request) -> web.Response:
        # The app's own sign-in writes the tokens itself; cookieguard adds nothing here.
        response = web.Response(text="signed in", headers=SHARED_CACHE_HEADERS)
        response.headers.add("Set-Cookie", f"{layout.cookie_name(user.username, 'idToken')}=abc; Path=/")
        return response

    app = web.Application()
    app.router.add_get("/sign-out", sign_out)
    app.router.add_get("/own-login", own_login)
    app.router.add_get("/{tail:.*}", page)
    return await aiohttp_server(app)


async def test_an_answer_with_tokens_drops_every_shared_cache_directive(
    aiohttp_server: Any,
    cookieguard_process: Start,
    cognito_idp: CognitoEmulator,
    expiring_user: CognitoUser,
    known_secrets: KnownSecrets,
) -> None:
    app = await start_signing_out_app(aiohttp_server, expiring_user)
    guard = cookieguard_process(guard_config(expiring_user.pool, str(app.make_url(""))))
    async with aiohttp.ClientSession() as s:
        async with s.get(
            f"{guard.url}/page", headers={"Cookie": amplify_cookie_header(expiring_user)}
        ) as resp:
            assert resp.status == 200 and cognito_idp.refresh_calls == 1
            known_secrets.add(
                *(
                    unquote(v)
                    for k, v in set_cookie_values(resp.headers.getall("Set-Cookie")).items()
                    if "Token" in k
                )
            )
            assert resp.headers.getall("Cache-Control") == ["private, no-store"]
            for name in SHARED_CACHE_HEADERS.keys() - {"Cache-Control"}:
                assert name not in resp.headers, name
        # The app's own token cookie, with no refresh of ours, is just as private.
        async with s.get(f"{guard.url}/own-login") as resp:
            assert resp.headers.getall("Cache-Control") == ["private, no-store"]
            assert "CDN-Cache-Control" not in resp.headers and "Expires" not in resp.headers
        # An answer without tokens keeps what the app said.
        async with s.get(f"{guard.url}/page") as resp:
            assert resp.headers["CDN-Cache-Control"] == "max-age=600"
            assert resp.headers["Cache-Control"] == SHARED_CACHE_HEADERS["Cache-Control"]


async def test_an_app_that_clears_only_the_access_token_ends_the_session(
    aiohttp_server: Any,
    cookieguard_process: Start,
    cognito_idp: CognitoEmulator,
    expiring_user: CognitoUser,
    known_secrets: KnownSecrets,
) -> None:
    """The access token is due, so cookieguard refreshes; the app answers with its sign-out, which
    clears the access token only. None of cookieguard's fresh tokens is written, the session's
    other auth cookies are expired too, and the next request refreshes nothing."""
    from tests.support.apps import Browser, amplify_cookies

    app = await start_signing_out_app(aiohttp_server, expiring_user)
    guard = cookieguard_process(guard_config(expiring_user.pool, str(app.make_url(""))))
    layout = names(expiring_user)
    browser = Browser(
        amplify_cookies(
            expiring_user.pool.client_id,
            expiring_user.username,
            access_token=expiring_user.access_token,
            id_token=expiring_user.id_token,
            refresh_token=expiring_user.refresh_token,
        )
    )
    async with aiohttp.ClientSession() as s:
        async with s.get(
            f"{guard.url}/sign-out", headers={"Cookie": browser.header()}, allow_redirects=False
        ) as resp:
            assert resp.status == 302 and cognito_idp.refresh_calls == 1
            set_cookies = resp.headers.getall("Set-Cookie", [])
            assert resp.headers.getall("Cache-Control") == ["private, no-store"]
        written = set_cookie_values(set_cookies)
        known_secrets.add(*(unquote(v) for k, v in written.items() if "Token" in k))
        assert all(value == "" for value in written.values()), "no token, no LastAuthUser of ours"
        for key in ("refreshToken", "idToken", "clockDrift", "signInDetails"):
            assert written[layout.cookie_name(expiring_user.username, key)] == ""
        assert written[layout.last_auth_user_name] == ""
        browser.receive(set_cookies)
        assert set(browser.cookies) == {"_ga"}
        async with s.get(f"{guard.url}/page", headers={"Cookie": browser.header()}) as resp:
            assert resp.status == 200 and "Set-Cookie" not in resp.headers
    assert cognito_idp.refresh_calls == 1, "the sign-out held: nothing left to refresh"
