"""Session repair against a real OIDC provider with refresh-token rotation and reuse detection
(panva's oidc-provider: using a rotated-out refresh token revokes the whole grant), with the
`named` cookie layout, issuer discovery, JWT and opaque access tokens, and chunked cookies.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import aiohttp
import pytest
from aiohttp.test_utils import TestServer

from cookieguard.cookies import parse_cookie_header
from cookieguard.session.layouts import NamedLayout
from cookieguard.session.layouts.named import CookieNames
from tests.support.apps import RESPONSE_KINDS, Browser, seen_by, set_cookie_values, start_buggy_app
from tests.support.no_secrets import KnownSecrets
from tests.support.oidc_idp import OidcIdp
from tests.support.proxy_process import CookieguardProcess

Start = Callable[..., CookieguardProcess]
NAMES = CookieNames(access_token="at", refresh_token="rt", id_token="idt")


def guard_config(
    idp: OidcIdp, upstream: str, *, before_expiry: str = "5m", **provider: Any
) -> dict[str, Any]:
    client = idp.client("client_secret_basic")
    return {
        "upstream": upstream,
        "provider": {
            "kind": "oidc",
            "issuer": idp.issuer,  # token endpoint and JWKS come from discovery
            "client_id": client.client_id,
            "client_secret": client.client_secret,
            **provider,
        },
        "cookies": {
            "layout": "named",
            "names": {"access_token": "at", "refresh_token": "rt", "id_token": "idt"},
        },
        "verify": {"signature": True, "audience": idp.api_resource},
        "refresh": {"before_expiry": before_expiry},
        "logging": {"level": "debug"},
    }


@pytest.fixture
def session(oidc_idp: OidcIdp, known_secrets: KnownSecrets) -> dict[str, Any]:
    """A fresh grant with JWT access tokens (60 s TTL). The browser lost its access cookie (it
    expired): the session is absent-but-refreshable."""
    oidc_idp.reset()
    minted = oidc_idp.mint("alice", resource=True)
    known_secrets.add(minted["refresh_token"], minted["access_token"], minted["id_token"])
    known_secrets.add(oidc_idp.client("client_secret_basic").client_secret)
    return minted


@pytest.fixture
async def proxied(
    aiohttp_server: Any, cookieguard_process: Start, oidc_idp: OidcIdp
) -> tuple[TestServer, CookieguardProcess]:
    """The buggy app, and `cookieguard run` in front of it with the named layout on the test IdP."""
    app = await start_buggy_app(aiohttp_server)
    return app, cookieguard_process(guard_config(oidc_idp, str(app.make_url(""))))


def upstream_tokens(cookie_header: str) -> tuple[str | None, str | None]:
    read = NamedLayout(NAMES).read(parse_cookie_header(cookie_header))
    return (read.access_token, read.refresh_token) if read else (None, None)


async def test_rotation_is_safe_and_late_requests_reuse_the_result(
    oidc_idp: OidcIdp,
    session: dict[str, Any],
    proxied: tuple[TestServer, CookieguardProcess],
    known_secrets: KnownSecrets,
) -> None:
    app, guard = proxied
    browser = Browser({"rt": session["refresh_token"], "idt": session["id_token"], "theme": "dark"})
    old_cookies = browser.header()
    async with aiohttp.ClientSession() as s:
        # 30 requests of one page load, all with the expiring session: one refresh, one rotation.
        async def one(path: str) -> list[str]:
            async with s.get(
                f"{guard.url}{path}", headers={"Cookie": old_cookies}, allow_redirects=False
            ) as resp:
                assert resp.status in (200, 302)
                return resp.headers.getall("Set-Cookie", [])

        answers = await asyncio.gather(*(one(p) for p in ["/redirect"] + [f"/rsc/{n}" for n in range(29)]))
        stats = oidc_idp.stats()
        assert (stats["refresh_requests"], stats["invalid_grant"], stats["grants_revoked"]) == (1, 0, 0)
        written = [set_cookie_values(a) for a in answers]
        assert len({(w["at"], w["rt"]) for w in written}) == 1
        new_at, new_rt = written[0]["at"], written[0]["rt"]
        known_secrets.add(new_at, new_rt, written[0].get("idt"))
        assert new_rt != session["refresh_token"]  # rotated
        assert {upstream_tokens(r["cookie"]) for r in seen_by(app)} == {(new_at, new_rt)}
        assert all("theme=dark" in r["cookie"] for r in seen_by(app))

        # A late request still carrying the old refresh token (inside grace): same tokens, no IdP call.
        async with s.get(f"{guard.url}/late", headers={"Cookie": old_cookies}) as resp:
            assert set_cookie_values(resp.headers.getall("Set-Cookie", []))["rt"] == new_rt
        assert oidc_idp.stats()["refresh_requests"] == 1

        # The browser keeps the new cookies: the next request needs nothing.
        browser.receive(answers[0])
        async with s.get(f"{guard.url}/next", headers={"Cookie": browser.header()}) as resp:
            assert "Set-Cookie" not in resp.headers

        # Later the new refresh token refreshes fine: the grant was never revoked.
        del browser.cookies["at"]
        async with s.get(f"{guard.url}/later", headers={"Cookie": browser.header()}) as resp:
            later = set_cookie_values(resp.headers.getall("Set-Cookie", []))
        known_secrets.add(later.get("at"), later.get("rt"), later.get("idt"))
        assert later["rt"] not in (new_rt, session["refresh_token"])
    stats = oidc_idp.stats()
    assert (stats["refresh_requests"], stats["refresh_success"], stats["invalid_grant"]) == (2, 2, 0)
    outcomes = [
        e["outcome"] for e in guard.events_once("token_refresh", 2, lambda e: e["outcome"] == "refreshed")
    ]
    assert outcomes.count("refreshed") == 2 and "rejected" not in outcomes and "failed" not in outcomes


async def test_chunked_cookies_are_reassembled_rewritten_and_stale_chunks_deleted(
    oidc_idp: OidcIdp,
    session: dict[str, Any],
    proxied: tuple[TestServer, CookieguardProcess],
    known_secrets: KnownSecrets,
) -> None:
    app, guard = proxied
    refresh = session["refresh_token"]
    third = len(refresh) // 3
    # The app wrote its refresh token in three chunks (as it would for a value over 4 KB), and
    # the browser dropped the expired access cookie: the refresh must use the reassembled token.
    header = (
        f"theme=dark; rt.0={refresh[:third]}; rt.1={refresh[third : 2 * third]}; rt.2={refresh[2 * third :]}"
    )
    async with (
        aiohttp.ClientSession() as s,
        s.get(f"{guard.url}/redirect", headers={"Cookie": header}, allow_redirects=False) as resp,
    ):
        assert resp.status == 302
        set_cookies = resp.headers.getall("Set-Cookie", [])
    written = set_cookie_values(set_cookies)
    known_secrets.add(written.get("at"), written.get("rt"), written.get("idt"))
    stats = oidc_idp.stats()
    assert (stats["refresh_requests"], stats["refresh_success"]) == (1, 1)
    deleted = {line.split("=", 1)[0] for line in set_cookies if "Max-Age=0" in line}
    assert {"rt.0", "rt.1", "rt.2"} <= deleted  # the rotated token fits in one cookie: old chunks go
    assert written["rt"] and written["rt"] != refresh and written["at"]
    # The app saw the new tokens, not the stale chunks, and its other cookies in order.
    forwarded = seen_by(app)[0]["cookie"]
    assert upstream_tokens(forwarded) == (written["at"], written["rt"])
    assert "rt.1" not in forwarded and forwarded.startswith("theme=dark")


async def test_opaque_access_tokens_use_expires_in_from_the_token_response(
    aiohttp_server: Any, cookieguard_process: Start, oidc_idp: OidcIdp, known_secrets: KnownSecrets
) -> None:
    oidc_idp.reset()
    minted = oidc_idp.mint("bob", resource=False)  # opaque access tokens, 60 s TTL
    known_secrets.add(minted["refresh_token"], minted["access_token"])
    app = await start_buggy_app(aiohttp_server)
    config = guard_config(oidc_idp, str(app.make_url("")), before_expiry="30s")
    config["verify"] = {"signature": True}
    guard = cookieguard_process(config)
    async with aiohttp.ClientSession() as s:
        # An opaque token cookieguard has never seen: its lifetime is unknown, so it is left alone.
        async with s.get(
            f"{guard.url}/a", headers={"Cookie": f"at={minted['access_token']}; rt={minted['refresh_token']}"}
        ) as resp:
            assert "Set-Cookie" not in resp.headers
        # No access token but a refresh token: refresh; the response's expires_in is remembered.
        async with s.get(f"{guard.url}/b", headers={"Cookie": f"rt={minted['refresh_token']}"}) as resp:
            written = set_cookie_values(resp.headers.getall("Set-Cookie", []))
        known_secrets.add(written["at"], written["rt"])
        assert written["at"] and len(written["at"]) < 100  # opaque, not a JWT
        async with s.get(
            f"{guard.url}/c", headers={"Cookie": f"at={written['at']}; rt={written['rt']}"}
        ) as resp:
            assert "Set-Cookie" not in resp.headers  # 60 s left > before_expiry 30 s
    assert oidc_idp.stats()["refresh_requests"] == 1


@pytest.mark.parametrize(
    ("handle", "user"),
    [("alice", "alice"), (None, "f81d4fae@example.test")],
    ids=["preferred_username", "email"],
)
async def test_the_reported_user_is_the_oidc_providers_own_claim(
    aiohttp_server: Any,
    cookieguard_process: Start,
    oidc_idp: OidcIdp,
    known_secrets: KnownSecrets,
    handle: str | None,
    user: str,
) -> None:
    """An OIDC id token names its user by `preferred_username` (Keycloak's, with the `profile`
    scope) and `email`: the refresh's log line and the session endpoint report the former when
    the token carries it, else the latter, not the opaque `sub`."""
    oidc_idp.reset()
    minted = oidc_idp.mint("f81d4fae", resource=False, preferred_username=handle)
    known_secrets.add(minted["refresh_token"], minted["access_token"], minted["id_token"])
    app = await start_buggy_app(aiohttp_server)
    config = guard_config(oidc_idp, str(app.make_url("")))
    config["verify"] = {"signature": True}  # opaque access tokens: the id token proves the session
    guard = cookieguard_process(config)
    async with aiohttp.ClientSession() as s:
        cookie = f"idt={minted['id_token']}; rt={minted['refresh_token']}"
        async with s.get(f"{guard.url}/page", headers={"Cookie": cookie}) as resp:
            written = set_cookie_values(resp.headers.getall("Set-Cookie", []))
        known_secrets.add(written["at"], written["rt"], written["idt"])
        # The fresh (opaque) access token, whose lifetime the proxy saw: nothing to refresh, and
        # the minted id token proves the session. (A refresh's id token has no profile claims:
        # oidc-provider, as OIDC Core 5.4 has it, leaves them to userinfo when an access token
        # comes with it.)
        fresh = f"at={written['at']}; idt={minted['id_token']}; rt={written['rt']}"
        async with s.get(f"{guard.url}/.cookieguard/session", headers={"Cookie": fresh}) as resp:
            body = await resp.json()
    (event,) = guard.events_once("token_refresh", 1, lambda e: e["outcome"] == "refreshed")
    assert event["outcome"] == "refreshed" and event["user"] == user and event["proven"] is True
    assert body["authenticated"] is True and body["refreshed"] is False and body["user"] == user


async def test_a_forged_access_token_is_no_session_and_is_never_refreshed(
    oidc_idp: OidcIdp, session: dict[str, Any], proxied: tuple[TestServer, CookieguardProcess]
) -> None:
    import base64
    import json

    header_b64, payload_b64, sig = session["access_token"].split(".")
    payload = json.loads(base64.urlsafe_b64decode(payload_b64 + "=" * (-len(payload_b64) % 4)))
    payload["sub"] = "mallory"
    forged_payload = base64.urlsafe_b64encode(json.dumps(payload).encode()).rstrip(b"=").decode()
    forged = f"{header_b64}.{forged_payload}.{sig}"
    app, guard = proxied
    header = f"at={forged}; rt={session['refresh_token']}"
    async with aiohttp.ClientSession() as s, s.get(f"{guard.url}/page", headers={"Cookie": header}) as resp:
        assert resp.status == 200 and "Set-Cookie" not in resp.headers
    assert oidc_idp.stats()["refresh_requests"] == 0
    assert seen_by(app)[0]["cookie"] == header


@pytest.mark.parametrize(("method", "path", "status"), RESPONSE_KINDS)
async def test_every_response_kind_carries_the_named_layouts_fresh_chunks(
    oidc_idp: OidcIdp,
    session: dict[str, Any],
    proxied: tuple[TestServer, CookieguardProcess],
    known_secrets: KnownSecrets,
    method: str,
    path: str,
    status: int,
) -> None:
    app, guard = proxied
    refresh = session["refresh_token"]
    half = len(refresh) // 2
    header = f"rt.0={refresh[:half]}; rt.1={refresh[half:]}; idt={session['id_token']}"
    async with (
        aiohttp.ClientSession() as s,
        s.request(method, f"{guard.url}{path}", headers={"Cookie": header}, allow_redirects=False) as resp,
    ):
        assert resp.status == status
        await resp.read()
        set_cookies = resp.headers.getall("Set-Cookie", [])
        assert resp.headers.get("Cache-Control") == "private, no-store"
    written = set_cookie_values(set_cookies)
    known_secrets.add(written.get("at"), written.get("rt"), written.get("idt"))
    assert written["at"] and written["rt"] and written["rt"] != refresh
    assert {"rt.0", "rt.1"} <= {line.split("=", 1)[0] for line in set_cookies if "Max-Age=0" in line}
    assert upstream_tokens(seen_by(app)[0]["cookie"]) == (written["at"], written["rt"])
    assert oidc_idp.stats()["refresh_requests"] == 1
