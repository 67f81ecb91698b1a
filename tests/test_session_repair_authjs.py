"""The `authjs` cookie layout through `cookieguard run`, against a real aiohttp upstream, the real
oidc-provider (rotating refresh tokens, reuse revokes the grant: tests/oidc_provider) and the real
Auth.js libraries (tests/authjs_node: @auth/core 0.41.3 for v5, next-auth 4.24.15 for v4), which
write the sessions the browser carries and decrypt what cookieguard wrote back.

docs/providers/authjs.md states what these tests hold cookieguard to.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from email.utils import parsedate_to_datetime
from typing import Any

import aiohttp
import pytest
import yaml
from aiohttp import web
from aiohttp.test_utils import TestServer

from cookieguard.config import Config
from cookieguard.loader import ConfigError, parse_config
from cookieguard.ops.explain import explain
from cookieguard.session.layouts.authjs import Keys, TokenFields, decrypt
from tests.support.apps import seen_by, start_buggy_app
from tests.support.authjs import authjs, needs_node
from tests.support.cognito_idp import cognito_guard_config
from tests.support.no_secrets import KnownSecrets
from tests.support.oidc_idp import OidcIdp
from tests.support.proxy_process import CookieguardProcess

pytestmark = needs_node

Start = Callable[..., CookieguardProcess]
SECRET = "the-app's-AUTH_SECRET-0123456789abcdef"
OTHER_SECRET = "somebody-else's-secret-0123456789abcdef"
V5 = "authjs.session-token"
V4 = "next-auth.session-token"
V4_FIELDS = {
    "access_token": "accessToken",
    "refresh_token": "refreshToken",
    "expires_at": "accessTokenExpires",
    "expires_at_unit": "ms",
    "error_value": "RefreshAccessTokenError",
}


def guard_config(idp: OidcIdp, upstream: str, *, version: int = 5, **extra: Any) -> dict[str, Any]:
    client = idp.client("client_secret_basic")
    authjs_keys: dict[str, Any] = {"version": version, "secrets": [SECRET]}
    if version == 4:
        authjs_keys["fields"] = V4_FIELDS
    refresh = {"before_expiry": "30s", **extra.pop("refresh", {})}
    return {
        "upstream": upstream,
        "provider": {
            "kind": "oidc",
            "issuer": idp.issuer,
            "client_id": client.client_id,
            "client_secret": client.client_secret,
        },
        "cookies": {"layout": "authjs", "authjs": authjs_keys},
        "verify": {"signature": True},
        "refresh": refresh,
        "logging": {"level": "debug"},
        **extra,
    }


def guide_claims(minted: dict[str, Any], *, expires_in_s: float = -10.0) -> dict[str, Any]:
    """What the refresh guide's jwt callback keeps (access token due), plus the app's own fields."""
    return {
        "name": "Ada Lovelace",
        "email": "ada@example.test",
        "picture": None,
        "sub": "user-1",
        "access_token": minted["access_token"],
        "refresh_token": minted["refresh_token"],
        "expires_at": int(time.time() + expires_in_s),
        "roles": ["admin", "ops"],
        "profile": {"locale": "de", "bio": "Grüße, 世界"},
    }


async def library_cookie(version: int, name: str, claims: dict[str, Any], secret: str = SECRET) -> str:
    """The session cookie the real library encodes (it stamps iat, exp, jti)."""
    [encoded] = await authjs(
        [{"op": "encode", "version": version, "secret": secret, "salt": name, "token": claims}]
    )
    return str(encoded["jwt"])


async def library_reads(version: int, cookie_header: str, *, secure: bool = False) -> dict[str, Any] | None:
    [answer] = await authjs(
        [{"op": "get_token", "version": version, "secret": SECRET, "cookie": cookie_header, "secure": secure}]
    )
    payload: dict[str, Any] | None = answer["payload"]
    return payload


def cookies_set(set_cookies: list[str]) -> dict[str, tuple[str, str]]:
    """name -> (value, attributes) of Set-Cookie headers."""
    out: dict[str, tuple[str, str]] = {}
    for line in set_cookies:
        pair, _, attributes = line.partition(";")
        name, _, value = pair.partition("=")
        out[name.strip()] = (value, attributes)
    return out


def value_in(cookie_header: str, name: str) -> str | None:
    for part in cookie_header.split("; "):
        key, _, value = part.partition("=")
        if key == name:
            return value
    return None


@pytest.fixture
def minted(oidc_idp: OidcIdp, known_secrets: KnownSecrets) -> dict[str, Any]:
    """A fresh grant with opaque access tokens (60 s): only `expires_at` says when they expire."""
    oidc_idp.reset()
    grant = oidc_idp.mint("ada", resource=False)
    known_secrets.add(SECRET, OTHER_SECRET, grant["refresh_token"], grant["access_token"], grant["id_token"])
    known_secrets.add(oidc_idp.client("client_secret_basic").client_secret)
    return grant


@pytest.fixture
async def app(aiohttp_server: Any) -> TestServer:
    return await start_buggy_app(aiohttp_server)


async def refreshed_on_redirect(url: str, name: str, old: str) -> tuple[str, str]:
    """GET /redirect with the session cookie `name`: the 302 must carry the refreshed cookie,
    returned as (value, attributes)."""
    async with (
        aiohttp.ClientSession() as s,
        s.get(f"{url}/redirect", headers={"Cookie": f"{name}={old}"}, allow_redirects=False) as resp,
    ):
        assert resp.status == 302
        return cookies_set(resp.headers.getall("Set-Cookie", []))[name]


async def test_one_refresh_for_30_requests_and_every_answer_carries_the_cookie_the_upstream_saw(
    oidc_idp: OidcIdp,
    minted: dict[str, Any],
    app: TestServer,
    cookieguard_process: Start,
    known_secrets: KnownSecrets,
) -> None:
    old_claims = guide_claims(minted)
    old = await library_cookie(5, V5, old_claims)
    known_secrets.add(old)
    guard = cookieguard_process(guard_config(oidc_idp, str(app.make_url(""))))
    header = f"theme=dark; {V5}={old}; authjs.csrf-token=abc"
    async with aiohttp.ClientSession() as s:

        async def one(path: str) -> tuple[int, list[str]]:
            async with s.get(f"{guard.url}{path}", headers={"Cookie": header}, allow_redirects=False) as resp:
                return resp.status, resp.headers.getall("Set-Cookie", [])

        paths = ["/redirect", "/rewrite", *(f"/rsc/{n}" for n in range(28))]
        answers = await asyncio.gather(*(one(p) for p in paths))
    stats = oidc_idp.stats()
    assert (stats["refresh_requests"], stats["refresh_success"], stats["invalid_grant"]) == (1, 1, 0)
    assert answers[0][0] == 302 and answers[1][0] == 200
    written = [cookies_set(set_cookies)[V5] for _, set_cookies in answers]
    assert len({value for value, _ in written}) == 1  # one write per refresh, the same bytes everywhere
    fresh, attributes = written[0]
    known_secrets.add(fresh)
    # The upstream got those very bytes in the same request, its other cookies kept in place.
    assert {value_in(r["cookie"], V5) for r in seen_by(app)} == {fresh}
    assert all(
        r["cookie"].startswith("theme=dark; ") and r["cookie"].endswith("; authjs.csrf-token=abc")
        for r in seen_by(app)
    )

    # The real library decrypts it: new tokens, every old claim (iat, exp, jti too) as it was.
    before = await library_reads(5, header)
    after = await library_reads(5, f"{V5}={fresh}")
    assert before is not None and after is not None
    known_secrets.add(after["access_token"], after["refresh_token"])
    assert after["refresh_token"] != minted["refresh_token"]  # rotated, and written back
    assert after["access_token"] != minted["access_token"]
    assert abs(after["expires_at"] - (time.time() + oidc_idp.access_token_ttl_s)) < 10
    changed = {k for k in before if before[k] != after.get(k)}
    assert changed == {"access_token", "refresh_token", "expires_at"} and set(after) == set(before)

    # Auth.js's attributes: HttpOnly, SameSite=Lax, Path=/, no Secure on the plain name, Expires = exp.
    parts = {
        p.strip().split("=", 1)[0]: p.strip().partition("=")[2] for p in attributes.split(";") if p.strip()
    }
    assert set(parts) == {"Path", "Expires", "HttpOnly", "SameSite"}
    assert parts["Path"] == "/" and parts["SameSite"] == "Lax"
    assert parsedate_to_datetime(parts["Expires"]).timestamp() == after["exp"] == before["exp"]

    # The browser keeps the new cookie: the next request needs nothing.
    async with (
        aiohttp.ClientSession() as s,
        s.get(f"{guard.url}/next", headers={"Cookie": f"{V5}={fresh}"}) as resp,
    ):
        assert "Set-Cookie" not in resp.headers
    assert oidc_idp.stats()["refresh_requests"] == 1
    events = guard.events_once("token_refresh", 1, lambda e: e["outcome"] == "refreshed")
    assert [e["outcome"] for e in events].count("refreshed") == 1
    assert all(e["proven"] for e in events)  # decrypting with the app's secret proves the session


async def test_v4_with_millisecond_expiry_works_by_configuration_only(
    oidc_idp: OidcIdp,
    minted: dict[str, Any],
    app: TestServer,
    cookieguard_process: Start,
    known_secrets: KnownSecrets,
) -> None:
    name = "__Secure-" + V4
    claims = {
        "name": "Ada",
        "sub": "user-1",
        "accessToken": minted["access_token"],
        "refreshToken": minted["refresh_token"],
        "accessTokenExpires": int(time.time() * 1000) - 1000,
        "user": {"id": "u1", "email": "ada@example.test"},
    }
    old = await library_cookie(4, name, claims)
    known_secrets.add(old)
    guard = cookieguard_process(guard_config(oidc_idp, str(app.make_url("")), version=4))
    fresh, attributes = await refreshed_on_redirect(guard.url, name, old)
    known_secrets.add(fresh)
    assert oidc_idp.stats()["refresh_requests"] == 1
    assert "Secure" in [p.strip() for p in attributes.split(";")]  # a __Secure- name
    assert value_in(seen_by(app)[0]["cookie"], name) == fresh
    after = await library_reads(4, f"{name}={fresh}", secure=True)
    assert after is not None
    known_secrets.add(after["accessToken"], after["refreshToken"])
    assert after["refreshToken"] != minted["refresh_token"] and after["accessToken"] != minted["access_token"]
    assert abs(after["accessTokenExpires"] - (time.time() + oidc_idp.access_token_ttl_s) * 1000) < 10_000
    assert after["user"] == claims["user"] and after["name"] == "Ada"


async def test_a_cookie_made_with_another_secret_is_forwarded_untouched_without_an_idp_call(
    oidc_idp: OidcIdp,
    minted: dict[str, Any],
    app: TestServer,
    cookieguard_process: Start,
    known_secrets: KnownSecrets,
) -> None:
    foreign = await library_cookie(5, V5, guide_claims(minted), secret=OTHER_SECRET)
    known_secrets.add(foreign)
    guard = cookieguard_process(guard_config(oidc_idp, str(app.make_url(""))))
    header = f"{V5}={foreign}; theme=dark"
    async with aiohttp.ClientSession() as s:
        for path in ("/redirect", "/page", "/.cookieguard/session"):
            async with s.get(f"{guard.url}{path}", headers={"Cookie": header}, allow_redirects=False) as resp:
                assert resp.status < 500
                assert "Set-Cookie" not in resp.headers
    assert oidc_idp.stats()["refresh_requests"] == 0
    assert [r["cookie"] for r in seen_by(app)] == [header, header]
    assert guard.events("token_refresh") == []


@pytest.mark.parametrize("policy", ["flag", "clear", "login"])
async def test_a_rejected_refresh_flags_clears_or_sends_to_login(
    policy: str,
    oidc_idp: OidcIdp,
    minted: dict[str, Any],
    app: TestServer,
    cookieguard_process: Start,
    known_secrets: KnownSecrets,
) -> None:
    claims = {**guide_claims(minted), "refresh_token": "a-refresh-token-the-idp-never-issued"}
    old = await library_cookie(5, V5, claims)
    known_secrets.add(old, claims["refresh_token"])
    config = guard_config(
        oidc_idp, str(app.make_url("")), refresh={"on_rejected": policy, "login_url": "/login"}
    )
    guard = cookieguard_process(config)
    header = f"{V5}={old}; theme=dark"
    async with (
        aiohttp.ClientSession() as s,
        s.get(
            f"{guard.url}/page",
            headers={"Cookie": header, "Accept": "text/html", "Sec-Fetch-Mode": "navigate"},
            allow_redirects=False,
        ) as resp,
    ):
        status, set_cookies = resp.status, cookies_set(resp.headers.getall("Set-Cookie", []))
    assert oidc_idp.stats()["invalid_grant"] == 1
    if policy == "login":
        assert status == 302 and seen_by(app) == []
        assert set_cookies[V5][0] == "" and "Max-Age=0" in set_cookies[V5][1]
        return
    upstream = seen_by(app)[0]["cookie"]
    if policy == "clear":
        assert upstream == "theme=dark"
        assert set_cookies[V5][0] == "" and "Max-Age=0" in set_cookies[V5][1]
        return
    # flag: the app sees its own error field in this very request, tokens and claims kept.
    flagged = set_cookies[V5][0]
    known_secrets.add(flagged)
    assert value_in(upstream, V5) == flagged
    after = await library_reads(5, f"{V5}={flagged}")
    assert after is not None
    assert after["error"] == "RefreshTokenError"
    assert (
        after["refresh_token"] == claims["refresh_token"] and after["access_token"] == claims["access_token"]
    )
    # A flagged session is never refreshed again.
    async with (
        aiohttp.ClientSession() as s,
        s.get(f"{guard.url}/again", headers={"Cookie": f"{V5}={flagged}"}) as resp,
    ):
        assert "Set-Cookie" not in resp.headers
    assert oidc_idp.stats()["refresh_requests"] == 1


async def test_the_apps_own_write_of_the_session_cookie_wins_whole(
    aiohttp_server: Any,
    oidc_idp: OidcIdp,
    minted: dict[str, Any],
    cookieguard_process: Start,
    known_secrets: KnownSecrets,
) -> None:
    """The app signs someone in (its own session cookie, chunked) on the answer to a request
    whose session cookieguard refreshed: none of cookieguard's session cookies is added."""
    seen: list[str] = []

    async def sign_in(request: web.Request) -> web.Response:
        seen.append(request.headers.get("Cookie", ""))
        response = web.Response(status=302, headers={"Location": "/"})
        response.headers.add("Set-Cookie", f"{V5}.0=apps-own-first-chunk; Path=/; HttpOnly; SameSite=Lax")
        response.headers.add("Set-Cookie", f"{V5}.1=apps-own-second-chunk; Path=/; HttpOnly; SameSite=Lax")
        return response

    web_app = web.Application()
    web_app.router.add_get("/api/auth/callback/oidc", sign_in)
    upstream = await aiohttp_server(web_app)
    old = await library_cookie(5, V5, guide_claims(minted))
    known_secrets.add(old)
    guard = cookieguard_process(guard_config(oidc_idp, str(upstream.make_url(""))))
    async with (
        aiohttp.ClientSession() as s,
        s.get(
            f"{guard.url}/api/auth/callback/oidc", headers={"Cookie": f"{V5}={old}"}, allow_redirects=False
        ) as resp,
    ):
        set_cookies = resp.headers.getall("Set-Cookie", [])
    assert oidc_idp.stats()["refresh_requests"] == 1  # refreshed: the upstream saw fresh tokens
    fresh = value_in(seen[0], V5)
    assert fresh and fresh != old
    known_secrets.add(fresh)
    assert set_cookies == [
        f"{V5}.0=apps-own-first-chunk; Path=/; HttpOnly; SameSite=Lax",
        f"{V5}.1=apps-own-second-chunk; Path=/; HttpOnly; SameSite=Lax",
    ]


def test_flag_is_a_config_error_with_another_layout() -> None:
    with pytest.raises(ConfigError) as error:
        parse_config("upstream: http://a\ncookies: {layout: named}\nrefresh: {on_rejected: flag}\n", env={})
    assert error.value.problems == [
        "refresh.on_rejected: flag is only valid with layout authjs (not with layout named)"
    ]


@pytest.mark.parametrize(
    ("authjs_keys", "problem"),
    [
        ({}, "cookies.authjs.secrets: required with layout authjs"),
        ({"secrets": []}, "cookies.authjs.secrets: must name at least one secret"),
        ({"secrets": "s"}, "cookies.authjs.secrets: must be a list"),
        (
            {"version": 4, "secrets": ["a", "b"]},
            "cookies.authjs.secrets: next-auth 4 (version: 4) takes exactly one secret",
        ),
        ({"version": 3, "secrets": ["a"]}, "cookies.authjs.version: must be 5"),
        (
            {"secrets": ["a"], "fields": {"expires_at_unit": "us"}},
            "cookies.authjs.fields.expires_at_unit: must be one of s, ms",
        ),
        (
            {"secrets": ["a"], "fields": {"acces_token": "x"}},
            "cookies.authjs.fields.acces_token: unknown key",
        ),
        (
            {"secrets": ["a"], "cookie_name": "bad name"},
            "cookies.authjs.cookie_name: not a valid cookie name",
        ),
    ],
)
def test_bad_authjs_keys_name_their_key_path(authjs_keys: dict[str, Any], problem: str) -> None:
    text = yaml.safe_dump({"upstream": "http://a", "cookies": {"layout": "authjs", "authjs": authjs_keys}})
    with pytest.raises(ConfigError) as error:
        parse_config(text, env={})
    assert any(p.startswith(problem) for p in error.value.problems), error.value.problems


def test_authjs_keys_with_another_layout_are_a_config_error() -> None:
    with pytest.raises(ConfigError) as error:
        parse_config("upstream: http://a\ncookies: {layout: named, authjs: {secrets: [a]}}\n", env={})
    assert error.value.problems == ["cookies.authjs: only valid with layout authjs (not with layout named)"]


async def test_explain_decrypts_and_describes_without_printing_a_token(known_secrets: KnownSecrets) -> None:
    claims = {
        "name": "Ada",
        "email": "ada@example.test",
        "sub": "user-1",
        "access_token": "an-opaque-access-token-value",
        "refresh_token": "a-refresh-token-value-0123",
        "expires_at": int(time.time()) - 5,
    }
    cookie = await library_cookie(5, V5, claims)
    known_secrets.add(cookie, str(claims["access_token"]), str(claims["refresh_token"]), SECRET)
    provider = {
        "kind": "oidc",
        "token_endpoint": "http://127.0.0.1:9/token",
        "client_id": "c",
        "client_auth": "none",
    }
    cookies = {"layout": "authjs", "authjs": {"secrets": [SECRET]}}
    config: Config = parse_config(
        yaml.safe_dump({"upstream": "http://a", "provider": provider, "cookies": cookies}), env={}
    )
    lines = explain(f"{V5}={cookie}", config, now_s=time.time())
    text = "\n".join(lines)
    assert "Auth.js v5 session cookie authjs.session-token: A256CBC-HS512, kid" in text
    assert "claims: access_token, email, exp, expires_at, iat, jti, name, refresh_token, sub" in text
    assert "user: ada@example.test" in text
    assert "verdict: REFRESH: the access token expired" in text  # from expires_at: the token is opaque
    assert "proven: yes (the session cookie decrypts with the app's secret; subject user-1)" in text
    for value in [cookie, SECRET, claims["access_token"], claims["refresh_token"]]:
        assert value not in text
    # With another secret: no session at all.
    other = await library_cookie(5, V5, claims, secret=OTHER_SECRET)
    assert "user: none" in "\n".join(explain(f"{V5}={other}", config, now_s=time.time()))


def test_the_codec_reads_back_what_the_layout_wrote_for_a_secure_name() -> None:
    """A small check of the layout's own write (the library checks are above): the `__Secure-`
    name keeps its name and key."""
    from cookieguard.session.layouts.authjs import AuthjsLayout, encrypt
    from cookieguard.session.layouts.base import FreshTokens

    keys = Keys(5, [SECRET])
    name = "__Secure-" + V5
    now = time.time()
    token = encrypt(
        keys,
        {"sub": "u", "access_token": "a", "refresh_token": "r", "expires_at": now, "exp": now + 99},
        name,
        "A256CBC-HS512",
    )
    layout = AuthjsLayout(keys, TokenFields())
    session = layout.read([(name, token)])
    assert session is not None and session.sealed_subject == "u" and session.expires_at == now
    tokens = FreshTokens(access_token="a2", id_token=None, refresh_token="r", expires_in_s=60)
    header = layout.cookie_header([(name, token)], session, tokens)
    written = layout.set_cookies(
        session, tokens, parse_config("upstream: http://a\n", env={}).cookies.attributes
    )
    assert header == f"{name}={written[0].value}" and written[0].secure
    jwt = decrypt(keys, written[0].value, name, now)
    assert jwt is not None and jwt.claims["access_token"] == "a2" and jwt.claims["refresh_token"] == "r"


async def test_cognito_refreshes_an_authjs_session_by_configuration_only(
    app: TestServer,
    cognito_idp: Any,
    cognito_pool: Any,
    expiring_user: Any,
    cookieguard_process: Start,
    known_secrets: KnownSecrets,
) -> None:
    """The same layout with `provider.kind: cognito` (moto's Cognito, GetTokensFromRefreshToken):
    nothing but the provider section changes."""
    claims = {
        "name": "Ada",
        "sub": "user-1",
        "access_token": expiring_user.access_token,
        "refresh_token": expiring_user.refresh_token,
        "expires_at": int(time.time()) - 60,
    }
    old = await library_cookie(5, V5, claims)
    known_secrets.add(SECRET, old)
    config = cognito_guard_config(
        cognito_pool,
        str(app.make_url("")),
        cookies={"layout": "authjs", "authjs": {"version": 5, "secrets": [SECRET]}},
    )
    guard = cookieguard_process(config)
    calls = cognito_idp.refresh_calls
    fresh, _ = await refreshed_on_redirect(guard.url, V5, old)
    known_secrets.add(fresh)
    assert cognito_idp.refresh_calls == calls + 1
    assert value_in(seen_by(app)[0]["cookie"], V5) == fresh
    after = await library_reads(5, f"{V5}={fresh}")
    assert after is not None
    known_secrets.add(after["access_token"])
    assert after["access_token"] != expiring_user.access_token
    assert after["expires_at"] > time.time() and after["name"] == "Ada" and after["sub"] == "user-1"
