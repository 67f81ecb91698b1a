"""SupabaseProvider against the GoTrue test server (tests/support/gotrue.py), over real HTTP."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import time
from collections.abc import AsyncIterator

import aiohttp
import jwt
import pytest
from aiohttp import web

from cookieguard.config import CookieAttributes, CookiesConfig, VerifyConfig
from cookieguard.loader import ConfigError, parse_config
from cookieguard.logs import get_logger
from cookieguard.session.layouts import SupabaseLayout, make_layout
from cookieguard.tokens.providers.base import ProviderConfig, RefreshRejected, RefreshUnavailable
from cookieguard.tokens.providers.supabase import SupabaseConfig, SupabaseProvider
from cookieguard.tokens.verifier import TokenVerifier
from tests.support.gotrue import DEAD_SESSIONS, GoTrueServer, end_session
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
    DEAD_SESSIONS,
)
async def test_dead_sessions_are_rejected(
    action: str, code: str, gotrue: GoTrueServer, http: aiohttp.ClientSession, known_secrets: KnownSecrets
) -> None:
    token = gotrue.sign_in("erin@example.com")["refresh_token"]
    known_secrets.add(token, gotrue.anon_key)
    end_session(gotrue, action, "erin@example.com", token)
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


# -- the `supabase` kind: configuration and token verification ------------------------------


def supabase_yaml(provider: str, cookies: str = "{layout: supabase}") -> str:
    return f"upstream: http://127.0.0.1:3000\nprovider: {provider}\ncookies: {cookies}\n"


def layout_key(cookies: CookiesConfig, provider: ProviderConfig | None) -> str:
    layout = make_layout(cookies, provider)
    assert isinstance(layout, SupabaseLayout)
    return layout.key


def test_the_kind_reads_url_anon_key_and_derives_the_rest() -> None:
    config = parse_config(
        supabase_yaml("{kind: supabase, url: 'https://abcdefghijklmnop.supabase.co/', anon_key: k}"), env={}
    )
    provider = config.provider
    assert isinstance(provider, SupabaseConfig)
    assert provider.url == "https://abcdefghijklmnop.supabase.co" and provider.client_id == "abcdefghijklmnop"
    assert provider.issuer == "https://abcdefghijklmnop.supabase.co/auth/v1"
    assert provider.default_jwks_url == "https://abcdefghijklmnop.supabase.co/auth/v1/.well-known/jwks.json"
    assert provider.hmac_key is None and "anon_key" not in repr(provider) and "'k'" not in repr(provider)
    assert provider.expectations("access", audience=None).audience == "authenticated"
    assert provider.expectations("access", audience=None).issuers == (provider.issuer,)
    # The layout's defaults are @supabase/ssr's, and its cookie is named after the project ref.
    assert config.cookies.attributes == CookieAttributes(secure=False, max_age_s=34_560_000)
    assert layout_key(config.cookies, provider) == "sb-abcdefghijklmnop-auth-token"
    explicit = parse_config(
        supabase_yaml(
            "{kind: supabase, url: 'https://x.supabase.co', anon_key: k}",
            "{layout: supabase, storage_key: my-app-auth, attributes: {secure: true}}",
        ),
        env={},
    )
    assert layout_key(explicit.cookies, explicit.provider) == "my-app-auth"
    assert explicit.cookies.attributes.secure is True


@pytest.mark.parametrize(
    ("provider", "cookies", "problem"),
    [
        ("{kind: supabase, anon_key: k}", "{layout: supabase}", "provider.url: required for kind supabase"),
        (
            "{kind: supabase, url: 'https://x.supabase.co'}",
            "{layout: supabase}",
            "provider.anon_key: required",
        ),
        (
            "{kind: supabase, url: 'https://x.supabase.co', anon_key: k, client_id: c}",
            "{layout: supabase}",
            "provider.client_id: not used by kind supabase",
        ),
        (
            "{kind: supabase, url: 'https://x.supabase.co', anon_key: k, jwt_secret: short}",
            "{layout: supabase}",
            "provider.jwt_secret: too short",
        ),
        (
            "{kind: supabase, url: 'https://x.supabase.co', anon_key: k, jwt_secret: "
            + "s" * 40
            + ", jwks_url: 'https://x.supabase.co/keys'}",
            "{layout: supabase}",
            "provider.jwt_secret: not with jwks_url",
        ),
        (
            "{kind: supabase, url: 'https://x.supabase.co', anon_key: k}",
            "{layout: supabase, storage_key: 'a;b'}",
            "cookies.storage_key: not a valid cookie name",
        ),
        (
            "{kind: oidc, issuer: 'https://idp', client_id: c}",
            "{layout: named, storage_key: k}",
            "cookies.storage_key: only valid with layout supabase",
        ),
        (
            "{kind: oidc, issuer: 'https://idp', client_id: c}",
            "{layout: supabase}",
            "cookies.layout: supabase layout needs provider.kind supabase",
        ),
        (
            "{kind: supabase, url: 'https://x.supabase.co', anon_key: k}",
            "{layout: amplify}",
            "cookies.layout: amplify layout needs provider.kind cognito (use layout",
        ),
    ],
)
def test_configuration_mistakes_name_the_key(provider: str, cookies: str, problem: str) -> None:
    with pytest.raises(ConfigError) as error:
        parse_config(supabase_yaml(provider, cookies), env={})
    assert any(p.startswith(problem) for p in error.value.problems), error.value.problems


def hs256(claims: dict[str, object], secret: str) -> str:
    return jwt.encode(claims, secret, algorithm="HS256")


async def test_hs256_only_with_the_configured_secret_and_never_beside_a_jwks(
    gotrue: GoTrueServer, http: aiohttp.ClientSession, known_secrets: KnownSecrets
) -> None:
    secret = "legacy-" + "s" * 40
    known_secrets.add(secret)
    url = gotrue.url
    claims = {"iss": f"{url}/auth/v1", "aud": "authenticated", "sub": "u1", "exp": time.time() + 600}
    legacy = SupabaseConfig(url=url, anon_key=gotrue.anon_key, jwt_secret=secret, client_id="127")
    current = SupabaseConfig(url=url, anon_key=gotrue.anon_key, client_id="127")
    with_secret = TokenVerifier(legacy, VerifyConfig(), http)
    with_jwks = TokenVerifier(current, VerifyConfig(), http)
    assert with_secret.jwks_url is None

    good = await with_secret.check(hs256(claims, secret), kind="access")
    assert good.is_valid and good.claims is not None and good.claims.sub == "u1"
    assert (await with_secret.check(hs256(claims, "x" * 40), kind="access")).reason == "bad_signature"
    other_aud = hs256({**claims, "aud": "anon"}, secret)
    assert (await with_secret.check(other_aud, kind="access")).reason == "wrong_audience"
    other_iss = hs256({**claims, "iss": "https://evil/auth/v1"}, secret)
    assert (await with_secret.check(other_iss, kind="access")).reason == "wrong_issuer"
    # An asymmetric token is refused where only the secret is configured (no JWKS is fetched)...
    es256 = gotrue.sign_in()["access_token"]
    assert (await with_secret.check(es256, kind="access")).reason == "alg_not_allowed"
    assert with_secret.jwks_fetches == 0
    # ...and HS256 is refused where keys come from the JWKS, even "signed" with the public key.
    # (Forged by hand: PyJWT itself refuses to use a JWK as an HMAC secret.)
    public_jwk = json.dumps(gotrue.public_jwks()["keys"][0]).encode()
    signing_input = ".".join(
        base64.urlsafe_b64encode(json.dumps(part).encode()).decode().rstrip("=")
        for part in ({"alg": "HS256", "typ": "JWT", "kid": gotrue.kid}, claims)
    )
    mac = hmac.new(public_jwk, signing_input.encode(), hashlib.sha256).digest()
    confused = signing_input + "." + base64.urlsafe_b64encode(mac).decode().rstrip("=")
    assert (await with_jwks.check(confused, kind="access")).reason == "alg_not_allowed"
    assert (await with_jwks.check(es256, kind="access")).is_valid
    assert (await with_jwks.check("not-a-jwt", kind="access")).reason == "not_a_jwt"  # never opaque
