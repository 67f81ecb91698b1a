"""SupabaseProvider against the GoTrue test server (tests/support/gotrue.py), over real HTTP."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import aiohttp
import pytest
from aiohttp import web

from cookieguard.logs import get_logger
from cookieguard.providers.base import RefreshRejected, RefreshUnavailable
from cookieguard.providers.supabase import SupabaseProvider
from tests.support.gotrue import GoTrueServer
from tests.support.no_secrets import KnownSecrets


@pytest.fixture
async def gotrue() -> AsyncIterator[GoTrueServer]:
    async with GoTrueServer() as server:
        yield server


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


def provider(server: GoTrueServer, http: aiohttp.ClientSession, **overrides: object) -> SupabaseProvider:
    args: dict[str, object] = {
        "url": server.url,
        "anon_key": server.anon_key,
        "timeout_s": 5.0,
        "session": http,
    }
    args.update(overrides)
    return SupabaseProvider(**args)  # type: ignore[arg-type]


def assert_quiet(exc: BaseException, *secrets: str) -> None:
    """The exception says its code and nothing else, and chains nothing a traceback could show."""
    text = f"{exc!s} {exc!r} {exc.args!r}"
    for secret in secrets:
        assert secret not in text
    assert "Invalid Refresh Token" not in text and "injected" not in text
    assert exc.__cause__ is None
    assert exc.__context__ is None or exc.__suppress_context__
    # What the proxy logs on a failed refresh; the autouse no-secret fixture reads it.
    get_logger().warning("token_refresh", outcome=type(exc).__name__, error=str(exc))


async def test_refresh_rotates_and_returns_expires_in(
    gotrue: GoTrueServer, http: aiohttp.ClientSession, known_secrets: KnownSecrets
) -> None:
    session = gotrue.sign_in()
    known_secrets.add(gotrue.anon_key, session["refresh_token"], session["access_token"])
    tokens = await provider(gotrue, http).refresh(session["refresh_token"])
    known_secrets.add(tokens.access_token, tokens.refresh_token)
    assert tokens.rotated and tokens.refresh_token == gotrue.active_refresh_token(
        gotrue.session_id_of(session["refresh_token"])
    )
    assert tokens.expires_in_s == 3600
    assert gotrue.decode(tokens.access_token)["session_id"] == gotrue.session_id_of(session["refresh_token"])
    assert gotrue.stats.apikeys_seen == [gotrue.anon_key]
    get_logger().info("token_refresh", outcome="refreshed", tokens=repr(tokens))


async def test_sends_what_supabase_js_sends(http: aiohttp.ClientSession) -> None:
    seen: list[tuple[str, dict[str, str], object]] = []

    async def token(request: web.Request) -> web.Response:
        seen.append((str(request.rel_url), dict(request.headers), await request.json()))
        return web.json_response({"access_token": "a.b.c", "refresh_token": "newnewnewnew", "expires_in": 60})

    app = web.Application()
    app.router.add_post("/auth/v1/token", token)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        await SupabaseProvider(f"http://127.0.0.1:{port}/", "anon", timeout_s=5, session=http).refresh(
            "oldoldoldold"
        )
    finally:
        await runner.cleanup()
    [(url, headers, body)] = seen
    assert url == "/auth/v1/token?grant_type=refresh_token"
    assert headers["apikey"] == "anon" and headers["Authorization"] == "Bearer anon"
    assert headers["X-Supabase-Api-Version"] == "2024-01-01"
    assert headers["Content-Type"] == "application/json"
    assert body == {"refresh_token": "oldoldoldold"}


async def test_parent_reuse_gets_the_active_token(gotrue: GoTrueServer, http: aiohttp.ClientSession) -> None:
    parent = gotrue.sign_in()["refresh_token"]
    first = await provider(gotrue, http).refresh(parent)
    again = await provider(gotrue, http).refresh(parent)
    assert again.refresh_token == first.refresh_token
    assert gotrue.stats.already_used == 0


@pytest.mark.parametrize(
    ("action", "code"),
    [
        ("sign_out", "refresh_token_not_found"),
        ("forget_session", "session_not_found"),
        ("expire_session", "session_expired"),
        ("ban", "user_banned"),
    ],
)
async def test_dead_sessions_are_rejected(
    action: str, code: str, gotrue: GoTrueServer, http: aiohttp.ClientSession, known_secrets: KnownSecrets
) -> None:
    token = gotrue.sign_in("erin@example.com")["refresh_token"]
    known_secrets.add(token, gotrue.anon_key)
    getattr(gotrue, action)("erin@example.com" if action == "ban" else gotrue.session_id_of(token))
    with pytest.raises(RefreshRejected) as caught:
        await provider(gotrue, http).refresh(token)
    assert (caught.value.code, caught.value.status) == (code, 400)
    assert_quiet(caught.value, token, gotrue.anon_key)


async def test_reuse_of_an_older_token_is_rejected_and_counted(
    gotrue: GoTrueServer, http: aiohttp.ClientSession, known_secrets: KnownSecrets
) -> None:
    grandparent = gotrue.sign_in()["refresh_token"]
    parent = await provider(gotrue, http).refresh(grandparent)
    assert parent.refresh_token
    await provider(gotrue, http).refresh(parent.refresh_token)
    gotrue.clock.advance(11)
    known_secrets.add(grandparent, gotrue.anon_key)
    with pytest.raises(RefreshRejected) as caught:
        await provider(gotrue, http).refresh(grandparent)
    assert caught.value.code == "refresh_token_already_used"
    assert gotrue.stats.already_used == 1
    assert_quiet(caught.value, grandparent)


async def test_malformed_token_is_rejected(gotrue: GoTrueServer, http: aiohttp.ClientSession) -> None:
    with pytest.raises(RefreshRejected) as caught:
        await provider(gotrue, http).refresh("not-a-gotrue-token")
    assert caught.value.code == "validation_failed"


async def test_wrong_apikey_is_unavailable_and_spends_nothing(
    gotrue: GoTrueServer, http: aiohttp.ClientSession, known_secrets: KnownSecrets
) -> None:
    token = gotrue.sign_in()["refresh_token"]
    known_secrets.add(token, "sb_publishable_wrong-key-1234")
    with pytest.raises(RefreshUnavailable) as caught:
        await provider(gotrue, http, anon_key="sb_publishable_wrong-key-1234").refresh(token)
    assert (caught.value.code, caught.value.status) == ("invalid_api_key", 401)
    assert_quiet(caught.value, token, "sb_publishable_wrong-key-1234")
    assert (await provider(gotrue, http).refresh(token)).rotated


@pytest.mark.parametrize(
    ("status", "retry_after", "code", "retry_after_s"),
    [(500, None, "http_500", None), (503, "30", "http_503", 30.0), (429, "7", "http_429", 7.0)],
)
async def test_server_trouble_is_unavailable(
    status: int,
    retry_after: str | None,
    code: str,
    retry_after_s: float | None,
    gotrue: GoTrueServer,
    http: aiohttp.ClientSession,
) -> None:
    token = gotrue.sign_in()["refresh_token"]
    gotrue.fail_next(status, retry_after=retry_after)
    with pytest.raises(RefreshUnavailable) as caught:
        await provider(gotrue, http).refresh(token)
    assert (caught.value.code, caught.value.retry_after_s) == (code, retry_after_s)
    assert gotrue.stats.refresh_calls == 1  # never retried
    assert (await provider(gotrue, http).refresh(token)).rotated  # the token was not spent


@pytest.mark.parametrize(
    ("status", "body", "code"),
    [
        (200, b"<html>maintenance</html>", "bad_response"),
        (200, b'{"refresh_token": "abcdefghijkl"}', "bad_response"),
        (502, b"<html>bad gateway</html>", "http_502"),
        (409, b'{"code": 409, "error_code": "conflict", "msg": "Too many concurrent"}', "conflict"),
        (
            400,
            b'{"error": "invalid_request", "error_description": "refresh_token required"}',
            "invalid_request",
        ),
    ],
)
async def test_bad_answers_are_unavailable(
    status: int, body: bytes, code: str, gotrue: GoTrueServer, http: aiohttp.ClientSession
) -> None:
    gotrue.fail_next(status, body=body)
    with pytest.raises(RefreshUnavailable) as caught:
        await provider(gotrue, http).refresh(gotrue.sign_in()["refresh_token"])
    assert caught.value.code == code
    assert_quiet(caught.value)


@pytest.mark.parametrize(
    "body",
    [
        b'{"error": "invalid_grant", "error_description": "Invalid Refresh Token: Already Used"}',  # GoTrue < 2024
        b'{"code": 400, "error_code": "refresh_token_already_used", "msg": "Invalid Refresh Token: Already Used"}',
        b'{"code": "refresh_token_already_used", "message": "Invalid Refresh Token: Already Used"}',
    ],
)
async def test_every_error_shape_is_read_by_its_code(
    body: bytes, gotrue: GoTrueServer, http: aiohttp.ClientSession
) -> None:
    gotrue.fail_next(400, body=body)
    with pytest.raises(RefreshRejected) as caught:
        await provider(gotrue, http).refresh(gotrue.sign_in()["refresh_token"])
    assert caught.value.code in ("invalid_grant", "refresh_token_already_used")
    assert_quiet(caught.value)


async def test_a_hanging_server_is_a_timeout(gotrue: GoTrueServer, http: aiohttp.ClientSession) -> None:
    gotrue.delay_next(5)
    started = time.monotonic()
    with pytest.raises(RefreshUnavailable) as caught:
        await provider(gotrue, http, timeout_s=0.2).refresh(gotrue.sign_in()["refresh_token"])
    assert caught.value.code == "timeout"
    assert time.monotonic() - started < 2


async def test_server_down_is_a_connection_error(http: aiohttp.ClientSession) -> None:
    server = await GoTrueServer().start()
    url, key = server.url, server.anon_key
    await server.close()
    with pytest.raises(RefreshUnavailable) as caught:
        await SupabaseProvider(url, key, timeout_s=1, session=http).refresh("abcdefghijkl")
    assert caught.value.code == "connection_error"


async def test_concurrent_refreshes_of_one_token_all_succeed_inside_the_interval(
    gotrue: GoTrueServer, http: aiohttp.ClientSession
) -> None:
    # Without cookieguard's single-flight, GoTrue's parent rule is what keeps racing clients in.
    token = gotrue.sign_in()["refresh_token"]
    results = await asyncio.gather(*(provider(gotrue, http).refresh(token) for _ in range(5)))
    assert len({r.refresh_token for r in results}) == 1
    assert gotrue.stats.refresh_calls == 5 and gotrue.stats.already_used == 0
