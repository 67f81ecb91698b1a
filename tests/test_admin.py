"""Admin endpoints through `cookieguard run`: healthz, readyz, metrics, and the session endpoint
(the browser's session health check) against moto's Cognito server.

The session endpoint repairs the session exactly as a proxied request would (same refresh, same
Set-Cookie), answers JSON that never holds a token, and is never forwarded to the app.
"""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import Callable
from typing import Any
from urllib.parse import unquote

import aiohttp
import pytest

from cookieguard.cookies import encode_uri_component
from cookieguard.edge.admin import session_report
from cookieguard.edge.proxy import SessionCheck
from cookieguard.ops.demo.emulator import CognitoEmulator, PoolInfo
from cookieguard.session.layouts import AmplifyLayout
from cookieguard.tokens.claims import decode_claims
from tests.support.apps import seen_by, set_cookie_values, start_buggy_app
from tests.support.cognito_idp import CognitoUser, amplify_cookie_header, cognito_guard_config
from tests.support.no_secrets import KnownSecrets, find_leaks
from tests.support.proxy_process import CookieguardProcess

Start = Callable[..., CookieguardProcess]
SESSION = "/.cookieguard/session"
guard_config = cognito_guard_config
cookie_header = amplify_cookie_header
FIELDS = {"authenticated", "user", "expires_at", "expires_in", "refreshed"}


@pytest.fixture
def expiring_user(cognito_pool: PoolInfo, make_expiring_user: Callable[..., CognitoUser]) -> CognitoUser:
    """A signed-in user (with a `+` in the name) whose access and id tokens expired a minute ago."""
    return make_expiring_user(cognito_pool, "jane+tag@example.com")


async def get_session(
    guard: CookieguardProcess, cookie: str | None, **headers: str
) -> tuple[int, dict[str, Any], aiohttp.typedefs.LooseHeaders, list[str]]:
    if cookie is not None:
        headers["Cookie"] = cookie
    async with aiohttp.ClientSession() as s, s.get(f"{guard.url}{SESSION}", headers=headers) as resp:
        body = await resp.text()
        assert not find_leaks(body, set()), "the session endpoint answered with a token"
        return resp.status, await resp.json(), resp.headers, resp.headers.getall("Set-Cookie", [])


# ---------------------------------------------------------------------------------------------
# healthz, readyz, metrics
# ---------------------------------------------------------------------------------------------


async def test_healthz_readyz_metrics(
    aiohttp_server: Any, cookieguard_process: Start, cognito_pool: PoolInfo
) -> None:
    app = await start_buggy_app(aiohttp_server)
    guard = cookieguard_process(guard_config(cognito_pool, str(app.make_url(""))))
    async with aiohttp.ClientSession() as s:
        async with s.get(f"{guard.url}/.cookieguard/healthz") as resp:
            assert (resp.status, await resp.text()) == (200, "ok\n")
            assert resp.headers["Cache-Control"] == "no-store"
        async with s.head(f"{guard.url}/.cookieguard/healthz") as resp:
            assert resp.status == 200
        async with s.get(f"{guard.admin_url}/.cookieguard/readyz") as resp:
            assert resp.status == 200
            assert await resp.json() == {"ready": True, "config": "loaded", "store": "ok"}
        async with s.get(f"{guard.admin_url}/.cookieguard/metrics") as resp:
            assert resp.status == 200
            assert resp.headers["Content-Type"].startswith("text/plain; version=")
            text = await resp.text()
    for name in (
        "cookieguard_refresh_total",
        "cookieguard_refresh_duration_seconds",
        "cookieguard_requests_total",
        "cookieguard_upstream_duration_seconds",
        "cookieguard_idp_calls_in_flight",
        "cookieguard_sessions_in_flight",  # the deprecated alias, for one release
        "process_resident_memory_bytes",
    ):
        assert f"# TYPE {name} " in text
    assert seen_by(app) == []  # admin endpoints are never proxied


async def test_admin_prefix_is_configurable(aiohttp_server: Any, cookieguard_process: Start) -> None:
    app = await start_buggy_app(aiohttp_server)
    guard = cookieguard_process({"upstream": str(app.make_url("")), "admin_prefix": "/_guard"})
    async with aiohttp.ClientSession() as s:
        async with s.get(f"{guard.url}/_guard/healthz") as resp:
            assert resp.status == 200
        async with s.get(f"{guard.url}/.cookieguard/healthz") as resp:
            assert resp.status == 200 and "page" in await resp.text()  # now the app's own path


# ---------------------------------------------------------------------------------------------
# The session endpoint
# ---------------------------------------------------------------------------------------------


async def test_no_cookies_means_not_authenticated(
    aiohttp_server: Any, cookieguard_process: Start, cognito_pool: PoolInfo
) -> None:
    app = await start_buggy_app(aiohttp_server)
    guard = cookieguard_process(guard_config(cognito_pool, str(app.make_url(""))))
    for cookie in (None, "_ga=GA1.1.1.1", "garbage; =;;"):
        status, body, headers, set_cookies = await get_session(guard, cookie)
        assert status == 200
        assert body == {
            "authenticated": False,
            "user": None,
            "expires_at": None,
            "expires_in": None,
            "refreshed": False,
            "reason": "no_session",
        }
        assert headers["Cache-Control"] == "no-store"
        assert headers["Content-Type"].startswith("application/json")
        assert set_cookies == []
    assert seen_by(app) == []


async def test_a_fresh_session_is_reported_without_a_refresh(
    aiohttp_server: Any,
    cookieguard_process: Start,
    cognito_idp: CognitoEmulator,
    cognito_pool: PoolInfo,
    make_cognito_user: Callable[..., CognitoUser],
    known_secrets: KnownSecrets,
) -> None:
    user = make_cognito_user(cognito_pool)
    known_secrets.add(user.refresh_token, user.access_token, user.id_token)
    app = await start_buggy_app(aiohttp_server)
    guard = cookieguard_process(guard_config(cognito_pool, str(app.make_url(""))))
    status, body, headers, set_cookies = await get_session(guard, cookie_header(user))
    claims = decode_claims(user.access_token)
    assert claims is not None and claims.exp is not None
    assert status == 200 and set(body) >= FIELDS
    assert body["authenticated"] is True and body["refreshed"] is False and body["reason"] == "ok"
    assert body["user"] == user.username
    assert body["expires_at"] == int(claims.exp)
    assert 3500 < body["expires_in"] <= 3600
    assert set_cookies == [] and headers["Cache-Control"] == "no-store"
    assert cognito_idp.refresh_calls == 0
    assert seen_by(app) == []


async def test_a_due_session_is_refreshed_and_the_fresh_cookies_come_back(
    aiohttp_server: Any,
    cookieguard_process: Start,
    cognito_idp: CognitoEmulator,
    expiring_user: CognitoUser,
    known_secrets: KnownSecrets,
) -> None:
    app = await start_buggy_app(aiohttp_server)
    guard = cookieguard_process(guard_config(expiring_user.pool, str(app.make_url(""))))
    layout = AmplifyLayout(expiring_user.pool.client_id)
    access_name = layout.cookie_name(expiring_user.username, "accessToken")
    before = time.time()
    status, body, headers, set_cookies = await get_session(guard, cookie_header(expiring_user))
    written = set_cookie_values(set_cookies)
    new_access = unquote(written[access_name])
    known_secrets.add(new_access, unquote(written[layout.cookie_name(expiring_user.username, "idToken")]))
    assert status == 200
    assert body["authenticated"] is True and body["refreshed"] is True and body["reason"] == "refreshed"
    assert body["user"] == expiring_user.username
    new_claims = decode_claims(new_access)
    assert new_claims is not None and new_claims.exp is not None
    assert body["expires_at"] == int(new_claims.exp) and body["expires_in"] > 3000
    assert body["expires_at"] >= before + 3000
    # The same cookies a proxied request would have received.
    assert set(written) >= {
        access_name,
        layout.cookie_name(expiring_user.username, "idToken"),
        layout.cookie_name(expiring_user.username, "refreshToken"),
        layout.cookie_name(expiring_user.username, "clockDrift"),
        layout.last_auth_user_name,
    }
    for line in set_cookies:
        assert "Path=/" in line and "Secure" in line and "SameSite=Lax" in line
    assert headers["Cache-Control"] == "no-store"
    assert cognito_idp.refresh_calls == 1
    event = await asyncio.to_thread(guard.wait_for_event, "token_refresh")
    assert event["outcome"] == "refreshed" and event["route"] == SESSION
    # The browser now holds fresh tokens: a page load through the proxy has nothing to refresh.
    fresh = cookie_header(expiring_user, access_token=new_access)
    async with aiohttp.ClientSession() as s, s.get(f"{guard.url}/page", headers={"Cookie": fresh}) as resp:
        assert resp.status == 200 and "Set-Cookie" not in resp.headers
    assert cognito_idp.refresh_calls == 1
    assert [r["path"] for r in seen_by(app)] == ["/page"]  # the session check itself never reached the app


async def test_concurrent_session_checks_and_page_loads_share_one_refresh(
    aiohttp_server: Any,
    cookieguard_process: Start,
    cognito_idp: CognitoEmulator,
    expiring_user: CognitoUser,
    known_secrets: KnownSecrets,
) -> None:
    app = await start_buggy_app(aiohttp_server)
    guard = cookieguard_process(guard_config(expiring_user.pool, str(app.make_url(""))))
    header = {"Cookie": cookie_header(expiring_user)}
    access_name = AmplifyLayout(expiring_user.pool.client_id).cookie_name(
        expiring_user.username, "accessToken"
    )
    cognito_idp.delay_s = 0.3

    async def one(s: aiohttp.ClientSession, path: str) -> str:
        async with s.get(f"{guard.url}{path}", headers=header) as resp:
            assert resp.status == 200
            return set_cookie_values(resp.headers.getall("Set-Cookie", []))[access_name]

    async with aiohttp.ClientSession() as s:
        tokens = await asyncio.gather(*(one(s, SESSION if n % 2 else f"/page/{n}") for n in range(10)))
    known_secrets.add(*(unquote(t) for t in tokens))
    assert len(set(tokens)) == 1
    assert cognito_idp.refresh_calls == 1


@pytest.mark.parametrize("mode", ["clear", "login", "pass"])
async def test_a_revoked_session_is_not_authenticated(
    aiohttp_server: Any,
    cookieguard_process: Start,
    cognito_idp: CognitoEmulator,
    expiring_user: CognitoUser,
    mode: str,
) -> None:
    cognito_idp.revoke(expiring_user.pool, expiring_user.refresh_token)
    app = await start_buggy_app(aiohttp_server)
    guard = cookieguard_process(
        guard_config(expiring_user.pool, str(app.make_url("")), refresh={"on_rejected": mode})
    )
    layout = AmplifyLayout(expiring_user.pool.client_id)
    auth_names = {
        layout.cookie_name(expiring_user.username, k) for k in ("accessToken", "idToken", "refreshToken")
    }
    # A fetch from a page: not a navigation, but the endpoint answers JSON in every mode.
    status, body, _, set_cookies = await get_session(
        guard, cookie_header(expiring_user), Accept="*/*", **{"Sec-Fetch-Mode": "cors"}
    )
    assert status == 200 and body["refreshed"] is False and body["reason"] == "rejected"
    expired = {line.split("=", 1)[0] for line in set_cookies if "Max-Age=0" in line}
    assert body["authenticated"] is False and body["user"] == expiring_user.username
    if mode == "pass":
        # The operator asked cookieguard to leave the cookies alone; the token is still expired.
        assert set_cookies == [] and body["expires_in"] == 0 and body["user"] == expiring_user.username
    else:
        assert body["expires_at"] is None and auth_names <= expired
    assert cognito_idp.refresh_calls == 1
    event = await asyncio.to_thread(guard.wait_for_event, "token_refresh")
    assert event["outcome"] == "rejected"


async def test_an_expired_token_without_refresh_token_is_not_authenticated(
    aiohttp_server: Any,
    cookieguard_process: Start,
    cognito_idp: CognitoEmulator,
    cognito_pool: PoolInfo,
    make_cognito_user: Callable[..., CognitoUser],
    known_secrets: KnownSecrets,
) -> None:
    cognito_idp.access_token_lifetime_s = -60  # already expired when minted
    user = make_cognito_user(cognito_pool)
    known_secrets.add(user.refresh_token, user.access_token, user.id_token)
    app = await start_buggy_app(aiohttp_server)
    guard = cookieguard_process(guard_config(cognito_pool, str(app.make_url(""))))
    status, body, _, set_cookies = await get_session(guard, cookie_header(user, refresh_token=None))
    assert status == 200 and body["authenticated"] is False and body["reason"] == "expired"
    assert body["user"] == user.username and body["expires_in"] == 0
    assert set_cookies == [] and cognito_idp.refresh_calls == 0


async def test_idp_trouble_keeps_the_session_authenticated(
    aiohttp_server: Any, cookieguard_process: Start, cognito_idp: CognitoEmulator, expiring_user: CognitoUser
) -> None:
    cognito_idp.fail_next = [503]
    app = await start_buggy_app(aiohttp_server)
    guard = cookieguard_process(guard_config(expiring_user.pool, str(app.make_url(""))))
    status, body, _, set_cookies = await get_session(guard, cookie_header(expiring_user))
    assert status == 200 and set_cookies == []
    assert body["authenticated"] is True and body["refreshed"] is False
    assert body["reason"] == "refresh_unavailable" and body["expires_in"] == 0


async def test_idp_unreachable_keeps_the_session_authenticated(
    aiohttp_server: Any, cookieguard_process: Start, expiring_user: CognitoUser
) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        dead = f"http://127.0.0.1:{sock.getsockname()[1]}"
    app = await start_buggy_app(aiohttp_server)
    guard = cookieguard_process(
        guard_config(expiring_user.pool, str(app.make_url("")), provider={"endpoint": dead})
    )
    status, body, _, set_cookies = await get_session(guard, cookie_header(expiring_user))
    assert (status, body["authenticated"], body["reason"], set_cookies) == (
        200,
        True,
        "refresh_unavailable",
        [],
    )


async def test_a_forged_token_is_not_authenticated_and_never_refreshed(
    aiohttp_server: Any,
    cookieguard_process: Start,
    cognito_idp: CognitoEmulator,
    expiring_user: CognitoUser,
    known_secrets: KnownSecrets,
) -> None:
    head, payload, signature = expiring_user.access_token.split(".")
    forged = f"{head}.{payload}.{signature[::-1]}"
    known_secrets.add(forged)
    app = await start_buggy_app(aiohttp_server)
    guard = cookieguard_process(guard_config(expiring_user.pool, str(app.make_url(""))))
    status, body, _, set_cookies = await get_session(guard, cookie_header(expiring_user, access_token=forged))
    assert status == 200 and body["authenticated"] is False and body["reason"] == "invalid_token"
    assert set_cookies == [] and cognito_idp.refresh_calls == 0


async def test_without_a_provider_the_endpoint_says_so(
    aiohttp_server: Any, cookieguard_process: Start
) -> None:
    app = await start_buggy_app(aiohttp_server)
    guard = cookieguard_process({"upstream": str(app.make_url(""))})
    async with aiohttp.ClientSession() as s, s.get(f"{guard.url}{SESSION}") as resp:
        assert resp.status == 404 and resp.headers["Cache-Control"] == "no-store"
        assert "no provider" in (await resp.json())["error"]
    assert seen_by(app) == []


async def test_nothing_under_the_admin_prefix_is_proxied(
    aiohttp_server: Any, cookieguard_process: Start, cognito_pool: PoolInfo
) -> None:
    app = await start_buggy_app(aiohttp_server)
    guard = cookieguard_process(guard_config(cognito_pool, str(app.make_url(""))))
    async with aiohttp.ClientSession() as s:
        for method, path, status in (
            ("POST", SESSION, 405),
            ("DELETE", "/.cookieguard/healthz", 405),
            ("POST", "/.cookieguard/metrics", 404),  # metrics is on admin_listen only
            ("GET", "/.cookieguard/nope", 404),
            ("PUT", "/.cookieguard/", 404),
        ):
            async with s.request(method, f"{guard.url}{path}") as resp:
                assert resp.status == status, (method, path)
                if status == 405:
                    assert "GET" in resp.headers["Allow"]
    assert seen_by(app) == []


async def test_a_percent_encoded_username_is_reported_decoded(
    aiohttp_server: Any, cookieguard_process: Start, expiring_user: CognitoUser, known_secrets: KnownSecrets
) -> None:
    app = await start_buggy_app(aiohttp_server)
    guard = cookieguard_process(guard_config(expiring_user.pool, str(app.make_url(""))))
    assert encode_uri_component(expiring_user.username) in cookie_header(expiring_user)
    _, body, _, set_cookies = await get_session(guard, cookie_header(expiring_user))
    known_secrets.add(*(unquote(v) for k, v in set_cookie_values(set_cookies).items() if k.endswith("Token")))
    assert body["user"] == "jane+tag@example.com"


# ---------------------------------------------------------------------------------------------
# The report itself (pure)
# ---------------------------------------------------------------------------------------------


def test_report_fields_and_expires_in() -> None:
    check = SessionCheck(
        True, "bob", 1_800_000_120.7, refreshed=True, reason="refreshed", set_cookies=["x=1"]
    )
    assert session_report(check, 1_800_000_000.2) == {
        "authenticated": True,
        "user": "bob",
        "expires_at": 1_800_000_120,
        "expires_in": 120,
        "refreshed": True,
        "reason": "refreshed",
    }
    expired = SessionCheck(False, "bob", 1_700_000_000, reason="expired")
    assert session_report(expired, 1_800_000_000)["expires_in"] == 0
    unknown = SessionCheck(True, "bob", None)
    assert (
        session_report(unknown, 1)["expires_at"] is None and session_report(unknown, 1)["expires_in"] is None
    )
