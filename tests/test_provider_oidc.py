"""cookieguard.tokens.providers.oidc against a real OpenID Provider (panva's oidc-provider, rotation on),
plus a small aiohttp server for answers the real provider cannot be made to give (HTML pages,
malformed JSON, hangs, redirects, 429 with Retry-After, an error_description full of secrets).
"""

from __future__ import annotations

import asyncio
import base64
import json
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import replace
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from cookieguard.tokens.providers.base import RefreshRejected, RefreshUnavailable
from cookieguard.tokens.providers.oidc import OidcConfig, OidcProvider
from tests.support.apps import close_without_answer
from tests.support.oidc_idp import OidcIdp

CLIENT_AUTHS = ["client_secret_basic", "client_secret_post", "none"]


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


def _jwt_part(token: str, index: int) -> dict[str, Any]:
    part = token.split(".")[index]
    decoded: dict[str, Any] = json.loads(base64.urlsafe_b64decode(part + "=" * (-len(part) % 4)))
    return decoded


# ---------------------------------------------------------------------------------------------
# Against the real provider
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("client_auth", CLIENT_AUTHS)
async def test_refresh_with_each_client_auth(
    oidc_idp: OidcIdp, http: aiohttp.ClientSession, client_auth: str
) -> None:
    minted = oidc_idp.mint("alice", client_auth=client_auth)
    provider = OidcProvider(oidc_idp.provider_config(client_auth), http)
    before = oidc_idp.stats()

    tokens = await provider.refresh(minted["refresh_token"])

    assert tokens.rotated
    assert tokens.refresh_token not in (None, minted["refresh_token"])
    assert tokens.expires_in_s == oidc_idp.access_token_ttl_s
    assert tokens.access_token.count(".") == 0  # opaque unless the grant names the API resource
    assert tokens.id_token is not None
    claims = _jwt_part(tokens.id_token, 1)
    assert claims["sub"] == "alice"
    assert claims["aud"] == oidc_idp.client(client_auth).client_id
    assert claims["iss"] == oidc_idp.issuer
    after = oidc_idp.stats()
    assert after["refresh_success"] == before["refresh_success"] + 1
    assert after["refresh_requests"] == before["refresh_requests"] + 1


def test_basic_auth_form_urlencodes_before_base64() -> None:
    """RFC 6749 2.3.1; the real provider rejects the unencoded form of the test secrets."""
    config = OidcConfig(client_id="id:1", client_secret="s e:c%+&/", token_endpoint="http://idp/token")
    provider = OidcProvider(config, session=None)  # type: ignore[arg-type]
    form: dict[str, str] = {}
    headers: dict[str, str] = {}
    provider._authenticate(form, headers)
    scheme, encoded = headers["Authorization"].split(" ")
    assert scheme == "Basic"
    assert base64.b64decode(encoded).decode() == "id%3A1:s+e%3Ac%25%2B%26%2F"
    assert form == {}


async def test_jwt_access_tokens_for_an_api_resource(oidc_idp: OidcIdp, http: aiohttp.ClientSession) -> None:
    minted = oidc_idp.mint("bob", resource=True)
    provider = OidcProvider(oidc_idp.provider_config(), http)

    tokens = await provider.refresh(minted["refresh_token"])

    header, claims = _jwt_part(tokens.access_token, 0), _jwt_part(tokens.access_token, 1)
    assert header["typ"] == "at+jwt"
    assert claims["aud"] == oidc_idp.api_resource  # the resource, not the client id
    assert claims["client_id"] == oidc_idp.client().client_id
    assert claims["sub"] == "bob"
    assert claims["exp"] - claims["iat"] == oidc_idp.access_token_ttl_s
    assert tokens.expires_in_s == oidc_idp.access_token_ttl_s
    # the rotated refresh token keeps the resource: the next access token is a JWT again
    assert tokens.refresh_token is not None
    again = await provider.refresh(tokens.refresh_token)
    assert _jwt_part(again.access_token, 0)["typ"] == "at+jwt"


async def test_discovery_from_issuer(oidc_idp: OidcIdp, http: aiohttp.ClientSession) -> None:
    config = oidc_idp.provider_config(token_endpoint=None, jwks_url=None, issuer=oidc_idp.issuer + "/")
    provider = OidcProvider(config, http)
    assert provider.token_endpoint is None
    assert provider.jwks_url is None

    tokens = await provider.refresh(oidc_idp.mint("carol")["refresh_token"])

    assert tokens.rotated
    assert provider.token_endpoint == oidc_idp.token_endpoint
    assert provider.jwks_url == oidc_idp.jwks_url
    async with http.get(provider.jwks_url) as response:
        assert (await response.json())["keys"][0]["kty"] == "RSA"


async def test_resolve_jwks_url_discovers_when_only_issuer_knows_it(
    oidc_idp: OidcIdp, http: aiohttp.ClientSession
) -> None:
    config = oidc_idp.provider_config(jwks_url=None, issuer=oidc_idp.issuer)
    provider = OidcProvider(config, http)
    assert await provider.resolve_jwks_url() == oidc_idp.jwks_url
    assert provider.token_endpoint == oidc_idp.token_endpoint  # configured value untouched


async def test_rotation_replaces_the_refresh_token(oidc_idp: OidcIdp, http: aiohttp.ClientSession) -> None:
    provider = OidcProvider(oidc_idp.provider_config(), http)
    refresh_token = oidc_idp.mint("dave")["refresh_token"]
    seen = {refresh_token}
    for _ in range(3):
        tokens = await provider.refresh(refresh_token)
        assert tokens.refresh_token is not None
        assert tokens.refresh_token not in seen
        seen.add(tokens.refresh_token)
        refresh_token = tokens.refresh_token


async def test_reusing_a_rotated_out_token_is_rejected_and_revokes_the_grant(
    oidc_idp: OidcIdp, http: aiohttp.ClientSession
) -> None:
    """What PEERS.md says, shown on this machine: a single retry with a spent refresh token
    signs the user out (the new refresh token dies with the grant). cookieguard must never do it."""
    provider = OidcProvider(oidc_idp.provider_config(), http)
    old = oidc_idp.mint("erin")["refresh_token"]
    new = (await provider.refresh(old)).refresh_token
    assert new is not None
    before = oidc_idp.stats()

    with pytest.raises(RefreshRejected) as reused:
        await provider.refresh(old)
    assert reused.value.code == "invalid_grant"
    assert reused.value.status == 400
    assert str(reused.value) == "invalid_grant"  # not "grant request is invalid"

    with pytest.raises(RefreshRejected) as revoked:
        await provider.refresh(new)
    assert revoked.value.code == "invalid_grant"
    after = oidc_idp.stats()
    assert after["grants_revoked"] == before["grants_revoked"] + 1
    assert after["invalid_grant"] == before["invalid_grant"] + 2


async def test_unknown_refresh_token_is_rejected(oidc_idp: OidcIdp, http: aiohttp.ClientSession) -> None:
    provider = OidcProvider(oidc_idp.provider_config(), http)
    with pytest.raises(RefreshRejected) as caught:
        await provider.refresh("not-a-refresh-token")
    assert caught.value.code == "invalid_grant"


async def test_wrong_client_secret_is_unavailable_and_spends_nothing(
    oidc_idp: OidcIdp, http: aiohttp.ClientSession
) -> None:
    """An operator's typo must not sign everybody out: invalid_client keeps the session, and the
    refresh token still works once the secret is right."""
    refresh_token = oidc_idp.mint("frank")["refresh_token"]
    for client_auth in ("client_secret_basic", "client_secret_post"):
        wrong = OidcProvider(oidc_idp.provider_config(client_auth, client_secret="typo"), http)
        with pytest.raises(RefreshUnavailable) as caught:
            await wrong.refresh(refresh_token)
        assert caught.value.code == "invalid_client"
        assert caught.value.status == 401

    right = OidcProvider(oidc_idp.provider_config(), http)
    assert (await right.refresh(refresh_token)).rotated


async def test_refresh_token_of_another_client_is_rejected(
    oidc_idp: OidcIdp, http: aiohttp.ClientSession
) -> None:
    """A known limit, documented rather than hidden: oidc-provider answers a valid client that is
    not the token's client with invalid_grant, the same code as a dead session. It does not spend
    or revoke the token; only the (redacted) description would tell the cases apart."""
    refresh_token = oidc_idp.mint("gina", client_auth="client_secret_basic")["refresh_token"]
    other = OidcProvider(oidc_idp.provider_config("client_secret_post"), http)
    with pytest.raises(RefreshRejected):
        await other.refresh(refresh_token)
    assert (await OidcProvider(oidc_idp.provider_config(), http).refresh(refresh_token)).rotated


@pytest.mark.parametrize(
    ("status", "delay_ms", "timeout_s", "code"),
    [(503, 0, 5.0, "http_503"), (500, 0, 5.0, "http_500"), (200, 1500, 0.3, "timeout")],
)
async def test_idp_faults_are_unavailable_and_keep_the_session(
    oidc_idp: OidcIdp, http: aiohttp.ClientSession, status: int, delay_ms: int, timeout_s: float, code: str
) -> None:
    refresh_token = oidc_idp.mint("hank")["refresh_token"]
    provider = OidcProvider(oidc_idp.provider_config(timeout_s=timeout_s), http)
    oidc_idp.reset()
    oidc_idp.fault(status, delay_ms=delay_ms)

    with pytest.raises(RefreshUnavailable) as caught:
        await provider.refresh(refresh_token)

    assert caught.value.code == code
    assert oidc_idp.stats()["faults_injected"] == 1  # one request: no retry
    assert (await provider.refresh(refresh_token)).rotated


async def test_idp_down_is_connection_error(oidc_idp: OidcIdp, http: aiohttp.ClientSession) -> None:
    port = await _closed_port()
    provider = OidcProvider(oidc_idp.provider_config(token_endpoint=f"http://127.0.0.1:{port}/token"), http)
    with pytest.raises(RefreshUnavailable) as caught:
        await provider.refresh("rt")
    assert caught.value.code == "connection_error"


# ---------------------------------------------------------------------------------------------
# Shapes the real provider cannot produce: a scripted aiohttp server
# ---------------------------------------------------------------------------------------------

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class FakeIdp:
    def __init__(self, server: TestServer, requests: list[dict[str, Any]]) -> None:
        self.server = server
        self.requests = requests

    def url(self, path: str) -> str:
        return str(self.server.make_url(path))

    def config(self, **overrides: Any) -> OidcConfig:
        config = OidcConfig(client_id="client", client_secret="secret", token_endpoint=self.url("/token"))
        return replace(config, **overrides)


@pytest.fixture
def fake_idp(aiohttp_server: Any) -> Callable[[Handler], Awaitable[FakeIdp]]:
    async def start(token_handler: Handler) -> FakeIdp:
        requests: list[dict[str, Any]] = []

        async def token(request: web.Request) -> web.StreamResponse:
            requests.append(dict(await request.post()))
            return await token_handler(request)

        async def elsewhere(request: web.Request) -> web.StreamResponse:
            requests.append({"path": request.path, **dict(await request.post())})
            return web.json_response({"access_token": "leaked"})

        app = web.Application()
        app.router.add_post("/token", token)
        app.router.add_post("/elsewhere", elsewhere)
        return FakeIdp(await aiohttp_server(app), requests)

    return start


def _reply(status: int, body: str | bytes, content_type: str = "application/json", **headers: str) -> Handler:
    async def handler(request: web.Request) -> web.StreamResponse:
        return web.Response(status=status, body=body, content_type=content_type, headers=headers)

    return handler


SECRET_DESCRIPTION = "the secret you sent was s3cr3t-echo and refresh token rt-echo"


@pytest.mark.parametrize(
    ("handler", "code", "status"),
    [
        (_reply(503, "<html>Service Unavailable</html>", "text/html"), "http_503", 503),
        (_reply(502, "Bad Gateway", "text/plain"), "http_502", 502),
        (_reply(200, "<html><body>Sign in</body></html>", "text/html"), "bad_response", 200),
        (_reply(200, "{not json"), "bad_response", 200),
        (_reply(200, '["a list"]'), "bad_response", 200),
        (_reply(200, '{"token_type": "Bearer"}'), "bad_response", 200),
        (_reply(200, '{"access_token": 42}'), "bad_response", 200),
        (_reply(200, b"\xff\xfe not utf-8"), "bad_response", 200),
        (_reply(200, b'{"access_token": "' + b"a" * (2 * 1024 * 1024) + b'"}'), "bad_response", 200),
        (_reply(400, "<html>Bad Request</html>", "text/html"), "http_400", 400),
        (
            _reply(400, '{"error": "invalid_client", "error_description": "' + SECRET_DESCRIPTION + '"}'),
            "invalid_client",
            400,
        ),
        (_reply(400, '{"error": "unauthorized_client"}'), "unauthorized_client", 400),
        (_reply(400, '{"error": "invalid_request"}'), "invalid_request", 400),
        (_reply(400, '{"error": "is this <b>code</b>? ' + SECRET_DESCRIPTION + '"}'), "http_400", 400),
        (_reply(403, '{"error": "invalid_grant"}'), "invalid_grant", 403),
        (_reply(307, "", Location="/elsewhere"), "http_307", 307),
    ],
    ids=lambda value: None if callable(value) else str(value),
)
async def test_bad_answers_are_unavailable(
    fake_idp: Callable[[Handler], Awaitable[FakeIdp]],
    http: aiohttp.ClientSession,
    handler: Handler,
    code: str,
    status: int,
) -> None:
    idp = await fake_idp(handler)
    with pytest.raises(RefreshUnavailable) as caught:
        await OidcProvider(idp.config(), http).refresh("rt-echo")
    assert caught.value.code == code
    assert caught.value.status == status
    assert _exception_text(caught.value) == code
    assert len(idp.requests) == 1  # never retried, never followed to a redirect target


def _exception_text(exc: BaseException) -> str:
    texts = {str(exc), *map(str, exc.args)}
    assert "s3cr3t-echo" not in repr(exc) and "rt-echo" not in repr(exc)
    # no chained exception (whose text or locals a traceback renderer could show)
    assert exc.__cause__ is None
    assert exc.__context__ is None or exc.__suppress_context__
    assert len(texts) == 1
    return texts.pop()


async def test_error_description_never_reaches_the_exception(
    fake_idp: Callable[[Handler], Awaitable[FakeIdp]], http: aiohttp.ClientSession
) -> None:
    body = json.dumps({"error": "invalid_grant", "error_description": SECRET_DESCRIPTION})
    idp = await fake_idp(_reply(400, body))
    with pytest.raises(RefreshRejected) as caught:
        await OidcProvider(idp.config(), http).refresh("rt-echo")
    assert _exception_text(caught.value) == "invalid_grant"
    assert caught.value.status == 400


async def test_401_invalid_grant_is_rejected(
    fake_idp: Callable[[Handler], Awaitable[FakeIdp]], http: aiohttp.ClientSession
) -> None:
    idp = await fake_idp(_reply(401, '{"error": "invalid_grant"}'))
    with pytest.raises(RefreshRejected):
        await OidcProvider(idp.config(), http).refresh("rt")


@pytest.mark.parametrize(
    ("status", "retry_after", "expected_s"),
    [
        (429, "7", 7.0),
        (503, "120", 120.0),
        (429, None, None),
        (429, "soon", None),
        (429, "Thu, 01 Jan 1970 00:00:00 GMT", 0.0),
    ],
)
async def test_rate_limits_carry_retry_after(
    fake_idp: Callable[[Handler], Awaitable[FakeIdp]],
    http: aiohttp.ClientSession,
    status: int,
    retry_after: str | None,
    expected_s: float | None,
) -> None:
    headers = {"Retry-After": retry_after} if retry_after else {}
    idp = await fake_idp(_reply(status, '{"error": "slow_down"}', **headers))
    with pytest.raises(RefreshUnavailable) as caught:
        await OidcProvider(idp.config(), http).refresh("rt")
    assert caught.value.code == f"http_{status}"
    assert caught.value.retry_after_s == expected_s


async def test_hanging_idp_is_a_timeout_after_one_attempt(
    fake_idp: Callable[[Handler], Awaitable[FakeIdp]], http: aiohttp.ClientSession
) -> None:
    never = asyncio.Event()

    async def hang(request: web.Request) -> web.StreamResponse:
        await never.wait()
        raise AssertionError("unreachable")

    idp = await fake_idp(hang)
    started = time.monotonic()
    with pytest.raises(RefreshUnavailable) as caught:
        await OidcProvider(idp.config(timeout_s=0.2), http).refresh("rt")
    assert caught.value.code == "timeout"
    assert time.monotonic() - started < 2
    assert len(idp.requests) == 1


async def test_reset_connection_is_connection_error(
    fake_idp: Callable[[Handler], Awaitable[FakeIdp]], http: aiohttp.ClientSession
) -> None:
    idp = await fake_idp(close_without_answer)
    with pytest.raises(RefreshUnavailable) as caught:
        await OidcProvider(idp.config(), http).refresh("rt")
    assert caught.value.code in ("connection_error", "bad_response")


@pytest.mark.parametrize(
    ("answer", "expires_in_s", "rotated"),
    [
        ({"access_token": "at", "expires_in": "3600"}, 3600, False),
        ({"access_token": "at", "expires_in": 299.9}, 299, False),
        ({"access_token": "at", "expires_in": True}, None, False),
        ({"access_token": "at", "expires_in": -5}, None, False),
        ({"access_token": "at", "refresh_token": "old-rt"}, None, False),  # echoed: not a rotation
        ({"access_token": "at", "refresh_token": ""}, None, False),
        ({"access_token": "at", "refresh_token": "new-rt", "id_token": "idt", "expires_in": 60}, 60, True),
    ],
)
async def test_success_shapes(
    fake_idp: Callable[[Handler], Awaitable[FakeIdp]],
    http: aiohttp.ClientSession,
    answer: dict[str, Any],
    expires_in_s: int | None,
    rotated: bool,
) -> None:
    idp = await fake_idp(_reply(200, json.dumps(answer)))
    tokens = await OidcProvider(idp.config(client_auth="client_secret_post"), http).refresh("old-rt")
    assert tokens.access_token == "at"
    assert tokens.expires_in_s == expires_in_s
    assert tokens.rotated is rotated
    assert tokens.id_token == answer.get("id_token")
    assert idp.requests == [
        {
            "grant_type": "refresh_token",
            "refresh_token": "old-rt",
            "client_id": "client",
            "client_secret": "secret",
        }
    ]


# ---------------------------------------------------------------------------------------------
# Discovery failures
# ---------------------------------------------------------------------------------------------


class DiscoveryIdp:
    """Serves a discovery document (or fails, as scripted) and a token endpoint."""

    def __init__(self) -> None:
        self.failures_left = 0
        self.issuer_override: str | None = None
        self.discovery_requests = 0
        self.token_requests = 0
        self.server: TestServer | None = None

    @property
    def issuer(self) -> str:
        assert self.server is not None
        return str(self.server.make_url("/realm")).rstrip("/")

    def app(self) -> web.Application:
        async def metadata(request: web.Request) -> web.StreamResponse:
            self.discovery_requests += 1
            await asyncio.sleep(0)  # let concurrent callers pile up on the lock
            if self.failures_left > 0:
                self.failures_left -= 1
                return web.Response(status=503, text="down")
            return web.json_response(
                {
                    "issuer": self.issuer_override or self.issuer,
                    "token_endpoint": self.issuer + "/token",
                    "jwks_uri": self.issuer + "/jwks",
                }
            )

        async def token(request: web.Request) -> web.StreamResponse:
            self.token_requests += 1
            return web.json_response({"access_token": "at", "expires_in": 60})

        app = web.Application()
        app.router.add_get("/realm/.well-known/openid-configuration", metadata)
        app.router.add_post("/realm/token", token)
        return app


@pytest.fixture
async def discovery_idp(aiohttp_server: Any) -> DiscoveryIdp:
    idp = DiscoveryIdp()
    idp.server = await aiohttp_server(idp.app())
    return idp


def _issuer_config(issuer: str) -> OidcConfig:
    return OidcConfig(client_id="client", client_secret="secret", issuer=issuer)


async def test_failed_discovery_is_unavailable_then_retried(
    discovery_idp: DiscoveryIdp, http: aiohttp.ClientSession
) -> None:
    now = [1000.0]
    provider = OidcProvider(
        _issuer_config(discovery_idp.issuer), http, discovery_retry_s=5.0, clock=lambda: now[0]
    )
    discovery_idp.failures_left = 1

    with pytest.raises(RefreshUnavailable) as first:
        await provider.refresh("rt")
    assert first.value.code == "discovery_http_503"

    now[0] += 1.0  # within the retry window: fail fast, the IdP is not asked again
    with pytest.raises(RefreshUnavailable) as fast:
        await provider.refresh("rt")
    assert fast.value.code == "discovery_http_503"
    assert fast.value.retry_after_s == pytest.approx(4.0)
    assert discovery_idp.discovery_requests == 1
    assert discovery_idp.token_requests == 0

    now[0] += 5.0
    assert (await provider.refresh("rt")).access_token == "at"
    assert discovery_idp.discovery_requests == 2
    assert provider.jwks_url == discovery_idp.issuer + "/jwks"
    await provider.refresh("rt")
    assert discovery_idp.discovery_requests == 2  # cached after success


async def test_concurrent_first_refreshes_share_one_discovery(
    discovery_idp: DiscoveryIdp, http: aiohttp.ClientSession
) -> None:
    provider = OidcProvider(_issuer_config(discovery_idp.issuer), http)
    await asyncio.gather(*(provider.refresh(f"rt-{i}") for i in range(5)))
    assert discovery_idp.discovery_requests == 1
    assert discovery_idp.token_requests == 5


async def test_discovery_issuer_mismatch(discovery_idp: DiscoveryIdp, http: aiohttp.ClientSession) -> None:
    discovery_idp.issuer_override = "https://evil.example"
    provider = OidcProvider(_issuer_config(discovery_idp.issuer), http)
    with pytest.raises(RefreshUnavailable) as caught:
        await provider.refresh("rt")
    assert caught.value.code == "discovery_issuer_mismatch"
    assert discovery_idp.token_requests == 0


async def test_discovery_with_idp_down(http: aiohttp.ClientSession) -> None:
    port = await _closed_port()
    provider = OidcProvider(_issuer_config(f"http://127.0.0.1:{port}"), http)
    with pytest.raises(RefreshUnavailable) as caught:
        await provider.discover()
    assert caught.value.code == "discovery_connection_error"


async def _closed_port() -> int:
    """A loopback port nothing listens on (bound, then released)."""
    server = await asyncio.start_server(lambda r, w: None, "127.0.0.1", 0)
    port: int = server.sockets[0].getsockname()[1]
    server.close()
    await server.wait_closed()
    return port
