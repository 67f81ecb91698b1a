"""Session repair for `@supabase/ssr` apps: `cookieguard run` (a real process) with the supabase
layout and provider kind, against the GoTrue-compatible server (rotation, parent reuse, reuse
interval, family revocation, ES256 JWKS or a legacy HS256 secret, `apikey` check), in front of
the buggy upstream app (tests/support/apps.py), over real HTTP. The cookies cookieguard writes
are read back by the real library (tests/supabase_ssr), and cookieguard reads the library's.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Sequence
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from cryptography.fernet import Fernet

from cookieguard.config import CookieAttributes
from cookieguard.cookies import parse_cookie_header
from cookieguard.session.layouts import LAYOUTS, SupabaseLayout
from cookieguard.session.layouts.supabase import read_session, session_cookies, storage_key
from tests.support.apps import Browser, seen_by, start_buggy_app
from tests.support.gotrue import GoTrueServer
from tests.support.no_secrets import KnownSecrets
from tests.support.proxy_process import CookieguardProcess
from tests.support.redis_server import RedisServer
from tests.support.ssr import needs_node, ssr

Start = Callable[..., CookieguardProcess]
SSR_ATTRS = CookieAttributes(**LAYOUTS["supabase"].attribute_defaults)


@pytest.fixture
async def gotrue(known_secrets: KnownSecrets) -> AsyncIterator[GoTrueServer]:
    async with GoTrueServer() as server:
        known_secrets.add(server.anon_key)
        yield server


def guard_config(
    gotrue: GoTrueServer, upstream: str, *, refresh: dict[str, Any] | None = None, **provider: Any
) -> dict[str, Any]:
    return {
        "upstream": upstream,
        "provider": {
            "kind": "supabase",
            "url": gotrue.url,
            "anon_key": "${SUPABASE_ANON_KEY}",
            "timeout": "2s",
            **provider,
        },
        "cookies": {"layout": "supabase"},
        "refresh": {"before_expiry": "5m", **(refresh or {})},
        "logging": {"level": "debug"},
    }


def start_guard(start: Start, gotrue: GoTrueServer, config: dict[str, Any]) -> CookieguardProcess:
    return start(config, env={"SUPABASE_ANON_KEY": gotrue.anon_key})


def expired_session(
    gotrue: GoTrueServer, known_secrets: KnownSecrets, *, email: str = "alice@example.com", metadata: int = 0
) -> dict[str, Any]:
    """A session signed in two hours ago: its access token (1 h) has expired."""
    gotrue.clock.advance(-7200)
    # 1000 characters (twice: in `user` and in the access token) make the cookie 2 chunks; the Cookie header stays under the upstream's
    # 8 KB header field limit (aiohttp's; Node's is 16 KB in all). Unicode at chunk boundaries is
    # tested in tests/test_layout_supabase.py.
    bio = ("Hello, world! " * (metadata // 14 + 1))[:metadata]
    session = gotrue.sign_in(email, user_metadata={"bio": bio} if metadata else {})
    gotrue.clock.advance(7200)
    session["provider_token"] = "gh-" + "p" * 20  # a field cookieguard does not own
    known_secrets.add(session["refresh_token"], session["access_token"], session["provider_token"])
    return session


def browser_with(gotrue: GoTrueServer, session: dict[str, Any], **others: str) -> Browser:
    browser = Browser(dict(others))
    browser.receive([c.header() for c in session_cookies(storage_key(gotrue.url), session, [], SSR_ATTRS)])
    return browser


def stored(
    gotrue: GoTrueServer, cookies: dict[str, str] | Sequence[tuple[str, str]]
) -> dict[str, Any] | None:
    pairs = list(cookies.items()) if isinstance(cookies, dict) else list(cookies)
    return read_session(pairs, storage_key(gotrue.url))


def note_written(known_secrets: KnownSecrets, gotrue: GoTrueServer, browser: Browser) -> dict[str, Any]:
    session = stored(gotrue, browser.cookies)
    assert session is not None
    known_secrets.add(session["refresh_token"], session["access_token"], *browser.cookies.values())
    return session


async def get(
    http: aiohttp.ClientSession, url: str, cookie: str, *, headers: dict[str, str] | None = None
) -> tuple[int, list[str]]:
    async with http.get(url, headers={"Cookie": cookie, **(headers or {})}, allow_redirects=False) as resp:
        await resp.read()
        return resp.status, resp.headers.getall("Set-Cookie", [])


@pytest.mark.parametrize(("path", "status", "metadata"), [("/redirect", 302, 1000), ("/rewrite", 200, 0)])
async def test_a_redirect_and_a_rewrite_carry_the_refreshed_cookie(
    aiohttp_server: Any,
    cookieguard_process: Start,
    gotrue: GoTrueServer,
    known_secrets: KnownSecrets,
    path: str,
    status: int,
    metadata: int,
) -> None:
    app = await start_buggy_app(aiohttp_server)
    guard = start_guard(cookieguard_process, gotrue, guard_config(gotrue, str(app.make_url(""))))
    session = expired_session(gotrue, known_secrets, metadata=metadata)
    browser = browser_with(gotrue, session, theme="dark")
    chunked = metadata > 0
    key = storage_key(gotrue.url)
    assert (len(browser.cookies) > 2) is chunked and (f"{key}.0" in browser.cookies) is chunked

    async with aiohttp.ClientSession() as http:
        got, set_cookies = await get(http, f"{guard.url}{path}", browser.header())
    assert got == status
    browser.receive(set_cookies)
    fresh = note_written(known_secrets, gotrue, browser)

    # One refresh, rotated; the whole session JSON came back with the new tokens.
    assert (gotrue.stats.refresh_calls, gotrue.stats.refreshed, gotrue.stats.already_used) == (1, 1, 0)
    sid = gotrue.session_id_of(session["refresh_token"])
    assert fresh["refresh_token"] == gotrue.active_refresh_token(sid) != session["refresh_token"]
    claims = gotrue.decode(fresh["access_token"], verify_exp=True)
    assert fresh["expires_at"] == claims["exp"] and fresh["expires_in"] == 3600
    # `user` as GoTrue answered it (as @supabase/ssr saves it); a field we do not own kept.
    assert fresh["user"] == gotrue.users[session["user"]["id"]].as_json(gotrue.clock())
    assert fresh["user"] != session["user"]  # GoTrue's answer stamps `last_sign_in_at`/`updated_at`
    assert fresh["provider_token"] == session["provider_token"]
    assert fresh["token_type"] == "bearer"
    # The attributes are @supabase/ssr's, and no shared cache may keep them.
    assert all("; Path=/; Max-Age=34560000; SameSite=Lax" in c for c in set_cookies if "Max-Age=0" not in c)
    assert not any("HttpOnly" in c or "Secure" in c for c in set_cookies)
    # The app got the new token in its Cookie header, its other cookies untouched.
    (seen,) = seen_by(app)
    upstream = SupabaseLayout(key).read(parse_cookie_header(seen["cookie"]))
    assert upstream is not None and upstream.access_token == fresh["access_token"]
    assert upstream.refresh_token == fresh["refresh_token"] and "theme=dark" in seen["cookie"]
    (event,) = guard.events_once("token_refresh")
    assert event["outcome"] == "refreshed" and event["user"] == "alice@example.com"
    assert event["new_exp"] == claims["exp"] and event["rotated"] is True


async def test_the_apps_own_sign_in_on_the_answer_wins_over_a_refresh_that_grew_the_cookie(
    aiohttp_server: Any, cookieguard_process: Start, gotrue: GoTrueServer, known_secrets: KnownSecrets
) -> None:
    """issue 19, as a user hits it: the request carries a 2-chunk session that is due (its access
    token is gone); the refresh grows it to 3 chunks; on the same answer the app signs another
    account in and writes its own 2 chunks (deleting nothing: the request had only .0 .1). The
    browser must end with exactly the app's session, not app .0 + app .1 + cookieguard's .2."""
    key = storage_key(gotrue.url)
    bob = expired_session(gotrue, known_secrets, email="bob@example.com", metadata=1000)
    apps_write = [c.header() for c in session_cookies(key, bob, [f"{key}.0", f"{key}.1"], SSR_ATTRS)]
    assert [h.split("=", 1)[0] for h in apps_write] == [f"{key}.0", f"{key}.1"]
    seen: list[str] = []

    async def sign_in(request: web.Request) -> web.Response:
        seen.append(request.headers.get("Cookie", ""))
        response = web.Response(status=303, headers={"Location": "/"})
        for header in apps_write:
            response.headers.add("Set-Cookie", header)
        return response

    app = web.Application()
    app.router.add_post("/sign-in", sign_in)
    server = await aiohttp_server(app)
    guard = start_guard(cookieguard_process, gotrue, guard_config(gotrue, str(server.make_url(""))))
    alice = expired_session(gotrue, known_secrets, metadata=1900)
    del alice["access_token"]  # due: only the refresh token is left, so the refresh adds a token
    browser = browser_with(gotrue, alice, theme="dark")
    assert sorted(browser.cookies) == [f"{key}.0", f"{key}.1", "theme"]

    async with (
        aiohttp.ClientSession() as http,
        http.post(
            f"{guard.url}/sign-in", headers={"Cookie": browser.header()}, allow_redirects=False
        ) as resp,
    ):
        assert resp.status == 303
        set_cookies = resp.headers.getall("Set-Cookie", [])
        assert resp.headers["Cache-Control"] == "private, no-store"
    assert gotrue.stats.refreshed == 1
    (cookie,) = seen
    assert f"{key}.2=" in cookie, "the refresh grew the session to 3 chunks upstream"

    browser.receive(set_cookies)
    assert set_cookies == apps_write
    assert sorted(browser.cookies) == [f"{key}.0", f"{key}.1", "theme"]
    assert stored(gotrue, browser.cookies) == bob, "the user who just signed in stays signed in"


@needs_node
@pytest.mark.parametrize("metadata", [0, 1000])
async def test_the_library_and_cookieguard_read_each_others_cookies(
    aiohttp_server: Any,
    cookieguard_process: Start,
    gotrue: GoTrueServer,
    known_secrets: KnownSecrets,
    metadata: int,
) -> None:
    app = await start_buggy_app(aiohttp_server)
    guard = start_guard(cookieguard_process, gotrue, guard_config(gotrue, str(app.make_url(""))))
    session = expired_session(gotrue, known_secrets, metadata=metadata)
    session.pop("provider_token")
    # The library writes the (expired) session, as the app's sign-in would have.
    written = await ssr({"op": "write", "url": gotrue.url, "session": session, "cookieHeader": ""})
    browser = Browser()
    browser.receive(written["setCookie"])
    assert (len(browser.cookies) > 1) is (metadata > 0)

    async with aiohttp.ClientSession() as http:
        status, set_cookies = await get(http, f"{guard.url}/redirect", browser.header())
    assert status == 302 and gotrue.stats.refreshed == 1
    browser.receive(set_cookies)
    fresh = note_written(known_secrets, gotrue, browser)

    # The library reads cookieguard's cookie: a valid session, nothing to refresh, nothing written.
    answer = await ssr(
        {"op": "read", "url": gotrue.url, "anonKey": gotrue.anon_key, "cookieHeader": browser.header()}
    )
    assert answer["error"] is None and answer["setAll"] == []
    assert answer["session"] == fresh
    assert gotrue.stats.refresh_calls == 1  # the library did not refresh again


@needs_node
async def test_after_a_refresh_the_cookie_holds_the_user_gotrue_answered(
    aiohttp_server: Any, cookieguard_process: Start, gotrue: GoTrueServer, known_secrets: KnownSecrets
) -> None:
    """The user's metadata changed since the cookie was written (the app updated it through
    GoTrue's admin API): after cookieguard's refresh, the real library reads the new `user`
    from the cookie, as it would after its own refresh."""
    app = await start_buggy_app(aiohttp_server)
    guard = start_guard(cookieguard_process, gotrue, guard_config(gotrue, str(app.make_url(""))))
    session = expired_session(gotrue, known_secrets)
    browser = browser_with(gotrue, session)
    gotrue.users[session["user"]["id"]].user_metadata = {"plan": "pro"}

    async with aiohttp.ClientSession() as http:
        status, set_cookies = await get(http, f"{guard.url}/rewrite", browser.header())
    assert status == 200 and gotrue.stats.refreshed == 1
    browser.receive(set_cookies)
    fresh = note_written(known_secrets, gotrue, browser)
    assert session["user"]["user_metadata"] == {} and fresh["user"]["user_metadata"] == {"plan": "pro"}

    answer = await ssr(
        {"op": "read", "url": gotrue.url, "anonKey": gotrue.anon_key, "cookieHeader": browser.header()}
    )
    assert answer["error"] is None and answer["setAll"] == []
    assert answer["session"]["user"]["user_metadata"] == {"plan": "pro"}


async def test_50_concurrent_requests_with_one_expired_session_make_one_refresh(
    aiohttp_server: Any, cookieguard_process: Start, gotrue: GoTrueServer, known_secrets: KnownSecrets
) -> None:
    app = await start_buggy_app(aiohttp_server)
    guard = start_guard(cookieguard_process, gotrue, guard_config(gotrue, str(app.make_url(""))))
    session = expired_session(gotrue, known_secrets, metadata=1000)
    header = browser_with(gotrue, session).header()
    gotrue.delay_next(0.3)  # the refresh is in flight while the other requests arrive

    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as http:
        paths = ["/redirect" if n % 10 == 0 else f"/rsc/{n}" for n in range(50)]
        answers = await asyncio.gather(*(get(http, f"{guard.url}{p}", header) for p in paths))

    assert (gotrue.stats.refresh_calls, gotrue.stats.already_used, gotrue.stats.reused_parent) == (1, 0, 0)
    assert {status for status, _ in answers} == {200, 302}
    sessions = []
    for _, set_cookies in answers:
        browser = Browser()
        browser.receive(set_cookies)
        sessions.append(note_written(known_secrets, gotrue, browser))
    assert len({s["refresh_token"] for s in sessions}) == 1
    assert sessions[0]["refresh_token"] == gotrue.active_refresh_token(
        gotrue.session_id_of(session["refresh_token"])
    )
    key = storage_key(gotrue.url)
    tokens = {
        (s.access_token, s.refresh_token)
        for r in seen_by(app)
        if (s := SupabaseLayout(key).read(parse_cookie_header(r["cookie"]))) is not None
    }
    assert tokens == {(sessions[0]["access_token"], sessions[0]["refresh_token"])}
    refreshed = guard.events_once("token_refresh", 1, lambda e: e["outcome"] == "refreshed")
    outcomes = [e["outcome"] for e in refreshed]
    assert outcomes.count("refreshed") == 1 and set(outcomes) <= {"refreshed", "joined", "reused"}


@pytest.mark.slow
async def test_two_replicas_over_redis_make_one_refresh(
    aiohttp_server: Any,
    cookieguard_process: Start,
    gotrue: GoTrueServer,
    redis_server: RedisServer,
    known_secrets: KnownSecrets,
) -> None:
    app = await start_buggy_app(aiohttp_server)
    store_key = Fernet.generate_key().decode()
    known_secrets.add(store_key)
    config = guard_config(gotrue, str(app.make_url("")))
    config["store"] = {"kind": "redis", "url": redis_server.url, "encryption_key": store_key}
    replicas = [start_guard(cookieguard_process, gotrue, config) for _ in range(2)]
    session = expired_session(gotrue, known_secrets, metadata=1000)
    header = browser_with(gotrue, session).header()
    gotrue.delay_next(0.5)

    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as http:
        answers = await asyncio.gather(
            *(get(http, f"{replicas[n % 2].url}/rsc/{n}", header) for n in range(50))
        )

    assert (gotrue.stats.refresh_calls, gotrue.stats.already_used, gotrue.stats.reused_parent) == (1, 0, 0)
    assert {status for status, _ in answers} == {200}
    refresh_tokens = set()
    for _, set_cookies in answers:
        browser = Browser()
        browser.receive(set_cookies)
        refresh_tokens.add(note_written(known_secrets, gotrue, browser)["refresh_token"])
    assert refresh_tokens == {gotrue.active_refresh_token(gotrue.session_id_of(session["refresh_token"]))}
    per_replica = [[e["outcome"] for e in guard.events("token_refresh")] for guard in replicas]
    assert sum(o.count("refreshed") for o in per_replica) == 1
    assert all(o and set(o) <= {"refreshed", "joined", "reused"} for o in per_replica)


async def revoke_by_reuse(gotrue: GoTrueServer, session: dict[str, Any], known_secrets: KnownSecrets) -> None:
    """Get the family revoked the way "Already Used" happens in production: two refreshes
    elsewhere (another tab, another server), then, past the reuse interval, the oldest token
    comes back: it is neither active nor the active token's parent."""
    token = session["refresh_token"]
    async with aiohttp.ClientSession() as http:
        for _ in range(2):
            async with http.post(
                f"{gotrue.token_url}?grant_type=refresh_token",
                json={"refresh_token": token},
                headers={"apikey": gotrue.anon_key},
            ) as resp:
                assert resp.status == 200
                token = (await resp.json())["refresh_token"]
                known_secrets.add(token)
    gotrue.clock.advance(gotrue.reuse_interval_s + 1)


@pytest.mark.parametrize(
    ("on_rejected", "revoke"), [("clear", "reuse"), ("pass", "sign_out"), ("login", "sign_out")]
)
async def test_a_revoked_family_is_handled_per_on_rejected(
    aiohttp_server: Any,
    cookieguard_process: Start,
    gotrue: GoTrueServer,
    known_secrets: KnownSecrets,
    on_rejected: str,
    revoke: str,
) -> None:
    app = await start_buggy_app(aiohttp_server)
    config = guard_config(gotrue, str(app.make_url("")), refresh={"on_rejected": on_rejected})
    guard = start_guard(cookieguard_process, gotrue, config)
    session = expired_session(gotrue, known_secrets, metadata=1000)
    if revoke == "reuse":
        await revoke_by_reuse(gotrue, session, known_secrets)
    else:
        gotrue.sign_out(gotrue.session_id_of(session["refresh_token"]))
    browser = browser_with(gotrue, session, theme="dark")
    key = storage_key(gotrue.url)

    async with aiohttp.ClientSession() as http:
        html = {"Accept": "text/html", "Sec-Fetch-Mode": "navigate"}
        status, set_cookies = await get(http, f"{guard.url}/page", browser.header(), headers=html)
        background = await get(
            http, f"{guard.url}/api/x", browser.header(), headers={"Accept": "application/json"}
        )

    expected_code = "refresh_token_already_used" if revoke == "reuse" else "refresh_token_not_found"
    assert gotrue.stats.errors[expected_code] == 1  # asked once; the second request was not a retry
    events = guard.events_once("token_refresh")
    assert events[0]["outcome"] == "rejected" and events[0]["error"] == expected_code
    deleted = {c.split("=", 1)[0] for c in set_cookies if "Max-Age=0" in c}
    if on_rejected == "pass":
        assert status == 200 and set_cookies == []
        assert all(key in r["cookie"] for r in seen_by(app))
        return
    assert deleted == {n for n in browser.cookies if n.startswith(key)}  # every chunk
    if on_rejected == "clear":
        assert status == 200
        (seen, *_) = seen_by(app)
        assert key not in seen["cookie"] and "theme=dark" in seen["cookie"]
    else:
        assert status == 302 and background[0] == 401 and seen_by(app) == []


@pytest.mark.parametrize("fault", ["500", "429", "timeout", "bad_apikey"])
async def test_idp_trouble_forwards_unchanged_and_never_signs_out(
    aiohttp_server: Any,
    cookieguard_process: Start,
    gotrue: GoTrueServer,
    known_secrets: KnownSecrets,
    fault: str,
) -> None:
    app = await start_buggy_app(aiohttp_server)
    config = guard_config(gotrue, str(app.make_url("")), timeout="1s")
    env_key = gotrue.anon_key
    if fault == "bad_apikey":
        env_key = "sb_publishable_" + "w" * 30  # the operator's mistake, not the user's
        known_secrets.add(env_key)
    elif fault == "timeout":
        gotrue.delay_next(3.0)
    else:
        gotrue.fail_next(int(fault), retry_after="30" if fault == "429" else None)
    guard = cookieguard_process(config, env={"SUPABASE_ANON_KEY": env_key})
    session = expired_session(gotrue, known_secrets)
    browser = browser_with(gotrue, session)

    async with aiohttp.ClientSession() as http:
        status, set_cookies = await get(http, f"{guard.url}/redirect", browser.header())

    assert status == 302 and set_cookies == []
    (seen,) = seen_by(app)
    assert seen["cookie"] == browser.header()  # exactly as the browser sent it
    (event,) = guard.events_once("token_refresh")
    assert event["outcome"] == "failed"
    assert gotrue.stats.refresh_calls == 1 and gotrue.stats.refreshed == 0
    assert gotrue.stats.errors["refresh_token_already_used"] == 0
    assert gotrue.tokens[session["refresh_token"]].revoked is False  # the session lives on


async def test_a_legacy_hs256_project_refreshes_with_its_jwt_secret(
    aiohttp_server: Any, cookieguard_process: Start, known_secrets: KnownSecrets
) -> None:
    async with GoTrueServer(algorithm="HS256") as gotrue:
        assert gotrue.jwt_secret is not None
        known_secrets.add(gotrue.anon_key, gotrue.jwt_secret)
        app = await start_buggy_app(aiohttp_server)
        good = cookieguard_process(
            guard_config(gotrue, str(app.make_url("")), jwt_secret="${SUPABASE_JWT_SECRET}"),
            env={"SUPABASE_ANON_KEY": gotrue.anon_key, "SUPABASE_JWT_SECRET": gotrue.jwt_secret},
        )
        # Without the secret the same tokens are checked against the (empty) JWKS: HS256 is
        # refused there, so the session is not trusted and never refreshed.
        bad = start_guard(cookieguard_process, gotrue, guard_config(gotrue, str(app.make_url(""))))
        session = expired_session(gotrue, known_secrets)
        header = browser_with(gotrue, session).header()
        async with aiohttp.ClientSession() as http:
            _, refused = await get(http, f"{bad.url}/x", header)
            assert refused == [] and gotrue.stats.refresh_calls == 0
            _, set_cookies = await get(http, f"{good.url}/x", header)
        browser = Browser()
        browser.receive(set_cookies)
        fresh = note_written(known_secrets, gotrue, browser)
        assert gotrue.stats.refreshed == 1
        assert fresh["refresh_token"] == gotrue.active_refresh_token(
            gotrue.session_id_of(session["refresh_token"])
        )
