"""cookieguard.tokens.providers.cognito against a real Cognito-compatible server (moto, through
cookieguard.ops.demo.emulator), plus a small aiohttp server for answers moto cannot be made to give: error
types with a `:` suffix or a `#` shape id, HTML pages, malformed JSON, hangs, dropped connections,
429 with an HTTP-date Retry-After, oversized bodies. That server answers the way Cognito's JSON
protocol does (x-amz-json-1.1, `x-amzn-ErrorType`, `__type`), but it is a stand-in, not Cognito.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import subprocess
import sys
import time
import traceback
from collections.abc import Awaitable, Callable
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from typing import Any

import aiohttp
import jwt
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from hypothesis import given
from hypothesis import strategies as st

from cookieguard.ops.demo.emulator import CognitoEmulator, PoolInfo
from cookieguard.tokens.providers.base import RefreshError, RefreshRejected, RefreshUnavailable
from cookieguard.tokens.providers.cognito import (
    DEVICE_KEY,
    REJECTING_ERRORS,
    USERNAME,
    CognitoConfig,
    CognitoProvider,
    parse_error_code,
    parse_retry_after,
    secret_hash,
)
from tests.support.apps import close_without_answer
from tests.support.cognito_idp import CognitoUser

APIS = ["get_tokens_from_refresh_token", "initiate_auth"]
API_NAMES = {"get_tokens_from_refresh_token": "GetTokensFromRefreshToken", "initiate_auth": "InitiateAuth"}


@pytest.fixture
async def http() -> Any:
    async with aiohttp.ClientSession() as session:
        yield session


def _claims(token: str) -> dict[str, Any]:
    claims: dict[str, Any] = jwt.decode(token, options={"verify_signature": False})
    return claims


def _provider(pool: PoolInfo, http: aiohttp.ClientSession, api: str, **overrides: Any) -> CognitoProvider:
    return CognitoProvider(replace(pool.provider_config(api=api), **overrides), http)


def _everything_said(exc: BaseException) -> str:
    """Every place an exception's text can surface: str, repr, args, a formatted traceback."""
    return "\n".join([str(exc), repr(exc), repr(exc.args), "".join(traceback.format_exception(exc))])


# ---------------------------------------------------------------------------------------------
# Against the emulator (moto)
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("with_secret", [False, True], ids=["public-client", "secret-client"])
@pytest.mark.parametrize("api", APIS)
async def test_refresh_returns_fresh_tokens(
    api: str,
    with_secret: bool,
    cognito_idp: CognitoEmulator,
    make_cognito_pool: Callable[..., PoolInfo],
    make_cognito_user: Callable[..., CognitoUser],
    http: aiohttp.ClientSession,
) -> None:
    pool = make_cognito_pool(with_secret=with_secret)
    user = make_cognito_user(pool)

    tokens = await _provider(pool, http, api).refresh(user.refresh_token, {USERNAME: user.username})

    access, id_claims = _claims(tokens.access_token), _claims(tokens.id_token or "")
    assert access["token_use"] == "access" and access["client_id"] == pool.client_id
    assert access["username"] == user.username and access["iss"] == pool.issuer
    assert id_claims["token_use"] == "id" and id_claims["aud"] == pool.client_id
    assert tokens.access_token != user.access_token
    assert tokens.expires_in_s == 3600
    assert not tokens.rotated  # moto never rotates unless the client has RefreshTokenRotation
    # moto checks SECRET_HASH on InitiateAuth; for GetTokensFromRefreshToken the emulator checks
    # ClientSecret. Either way the secret went out only for a secret client.
    [call] = cognito_idp.refresh_log
    assert call.api == API_NAMES[api] and call.client_id == pool.client_id
    assert call.sent_secret is with_secret


@pytest.mark.parametrize("api", APIS)
async def test_device_key_is_sent_when_known(
    api: str, cognito_idp: CognitoEmulator, cognito_user: CognitoUser, http: aiohttp.ClientSession
) -> None:
    provider = _provider(cognito_user.pool, http, api)
    await provider.refresh(cognito_user.refresh_token, {DEVICE_KEY: "us-east-1_d3v1ce-k3y"})
    await provider.refresh(cognito_user.refresh_token)

    assert [c.device_key for c in cognito_idp.refresh_log] == ["us-east-1_d3v1ce-k3y", None]


async def test_secret_hash_uses_the_username(
    cognito_pool_with_secret: PoolInfo,
    make_cognito_user: Callable[..., CognitoUser],
    http: aiohttp.ClientSession,
) -> None:
    """moto recomputes SECRET_HASH from the username the refresh token was issued to."""
    user = make_cognito_user(cognito_pool_with_secret)
    provider = _provider(cognito_pool_with_secret, http, "initiate_auth")

    with pytest.raises(RefreshRejected) as rejected:
        await provider.refresh(user.refresh_token, {USERNAME: "somebody-else"})
    assert rejected.value.code == "NotAuthorizedException"
    assert (await provider.refresh(user.refresh_token, {USERNAME: user.username})).access_token


def test_secret_hash_matches_the_documented_formula() -> None:
    expected = base64.b64encode(hmac.new(b"s3cret", b"alice" + b"client-1", hashlib.sha256).digest()).decode()
    assert secret_hash("s3cret", "alice", "client-1") == expected


async def test_initiate_auth_without_username_does_not_ask_the_idp(
    cognito_idp: CognitoEmulator,
    cognito_pool_with_secret: PoolInfo,
    make_cognito_user: Callable[..., CognitoUser],
    http: aiohttp.ClientSession,
) -> None:
    """No username, no SECRET_HASH: Cognito would say NotAuthorizedException, which would read as
    a dead session. It is our input that is incomplete, so the session is kept."""
    user = make_cognito_user(cognito_pool_with_secret)
    with pytest.raises(RefreshUnavailable) as unavailable:
        await _provider(cognito_pool_with_secret, http, "initiate_auth").refresh(user.refresh_token)
    assert unavailable.value.code == "missing_username"
    assert cognito_idp.refresh_calls == 0
    # GetTokensFromRefreshToken sends the secret itself and needs no username.
    assert await _provider(cognito_pool_with_secret, http, "get_tokens_from_refresh_token").refresh(
        user.refresh_token
    )


@pytest.mark.parametrize("api", APIS)
async def test_revoked_refresh_token_is_rejected(
    api: str, cognito_idp: CognitoEmulator, cognito_user: CognitoUser, http: aiohttp.ClientSession
) -> None:
    provider = _provider(cognito_user.pool, http, api)
    assert await provider.refresh(cognito_user.refresh_token)

    cognito_idp.revoke(cognito_user.pool, cognito_user.refresh_token)

    with pytest.raises(RefreshRejected) as rejected:
        await provider.refresh(cognito_user.refresh_token)
    assert (rejected.value.code, rejected.value.status) == ("NotAuthorizedException", 400)


@pytest.mark.parametrize("api", APIS)
async def test_unknown_refresh_token_is_rejected(
    api: str, cognito_pool: PoolInfo, http: aiohttp.ClientSession
) -> None:
    with pytest.raises(RefreshRejected) as rejected:
        await _provider(cognito_pool, http, api).refresh("not-a-refresh-token")
    assert rejected.value.code == "NotAuthorizedException"


async def test_global_sign_out_rejects_the_refresh_token(
    cognito_idp: CognitoEmulator, cognito_user: CognitoUser, http: aiohttp.ClientSession
) -> None:
    pool = cognito_user.pool
    cognito_idp.call_api(
        "AdminUserGlobalSignOut", {"UserPoolId": pool.user_pool_id, "Username": cognito_user.username}
    )
    with pytest.raises(RefreshRejected):
        await _provider(pool, http, "get_tokens_from_refresh_token").refresh(cognito_user.refresh_token)


async def test_rotation_returns_a_new_refresh_token_and_spends_the_old(
    make_cognito_pool: Callable[..., PoolInfo],
    make_cognito_user: Callable[..., CognitoUser],
    http: aiohttp.ClientSession,
) -> None:
    pool = make_cognito_pool(rotate_refresh_tokens=True)
    user = make_cognito_user(pool)
    provider = _provider(pool, http, "get_tokens_from_refresh_token")

    first = await provider.refresh(user.refresh_token)
    assert first.rotated and first.refresh_token != user.refresh_token

    with pytest.raises(RefreshRejected) as reused:
        await provider.refresh(user.refresh_token)
    assert reused.value.code == "RefreshTokenReuseException"

    second = await provider.refresh(first.refresh_token or "")
    assert second.rotated and second.refresh_token not in (user.refresh_token, first.refresh_token)


async def test_rotation_grace_period_lets_a_retry_through(
    make_cognito_pool: Callable[..., PoolInfo],
    make_cognito_user: Callable[..., CognitoUser],
    http: aiohttp.ClientSession,
) -> None:
    pool = make_cognito_pool(rotate_refresh_tokens=True, retry_grace_period_s=60)
    user = make_cognito_user(pool)
    provider = _provider(pool, http, "get_tokens_from_refresh_token")

    first = await provider.refresh(user.refresh_token)
    retry = await provider.refresh(user.refresh_token)  # e.g. the first answer was lost

    assert first.rotated and retry.rotated and retry.refresh_token != first.refresh_token


async def test_initiate_auth_on_a_rotating_client_keeps_the_session(
    make_cognito_pool: Callable[..., PoolInfo],
    make_cognito_user: Callable[..., CognitoUser],
    http: aiohttp.ClientSession,
) -> None:
    """Rotation needs GetTokensFromRefreshToken; asking with REFRESH_TOKEN_AUTH is our
    misconfiguration and must not sign the user out."""
    pool = make_cognito_pool(rotate_refresh_tokens=True)
    user = make_cognito_user(pool)
    with pytest.raises(RefreshUnavailable) as unavailable:
        await _provider(pool, http, "initiate_auth").refresh(user.refresh_token)
    assert unavailable.value.code == "InvalidParameterException"


async def test_wrong_secret_hash_echoed_by_moto_never_reaches_the_exception(
    cognito_pool_with_secret: PoolInfo,
    make_cognito_user: Callable[..., CognitoUser],
    http: aiohttp.ClientSession,
) -> None:
    user = make_cognito_user(cognito_pool_with_secret)
    wrong_secret = "wrong-client-secret-0123456789"
    wrong_hash = secret_hash(wrong_secret, user.username, cognito_pool_with_secret.client_id)
    # Prove the premise: moto puts the SECRET_HASH it was sent in its error message.
    echo = await http.post(
        cognito_pool_with_secret.endpoint + "/",
        data=json.dumps(
            {
                "ClientId": cognito_pool_with_secret.client_id,
                "AuthFlow": "REFRESH_TOKEN_AUTH",
                "AuthParameters": {"REFRESH_TOKEN": user.refresh_token, "SECRET_HASH": wrong_hash},
            }
        ),
        headers={
            "Content-Type": "application/x-amz-json-1.1",
            "X-Amz-Target": "AWSCognitoIdentityProviderService.InitiateAuth",
        },
    )
    assert wrong_hash in await echo.text()

    provider = _provider(cognito_pool_with_secret, http, "initiate_auth", client_secret=wrong_secret)
    with pytest.raises(RefreshRejected) as rejected:
        await provider.refresh(user.refresh_token, {USERNAME: user.username})

    # Cognito answers a wrong secret with NotAuthorizedException: indistinguishable by code from
    # a dead session (documented in providers/cognito.py).
    assert rejected.value.code == "NotAuthorizedException"
    said = _everything_said(rejected.value)
    for secret in (wrong_hash, wrong_secret, user.refresh_token):
        assert secret not in said
    assert rejected.value.__cause__ is None and rejected.value.__context__ is None


async def test_token_lifetime_follows_the_emulator_setting(
    cognito_idp: CognitoEmulator, cognito_user: CognitoUser, http: aiohttp.ClientSession
) -> None:
    cognito_idp.access_token_lifetime_s = 5
    tokens = await _provider(cognito_user.pool, http, "get_tokens_from_refresh_token").refresh(
        cognito_user.refresh_token
    )
    access = _claims(tokens.access_token)
    assert tokens.expires_in_s == 5 and access["exp"] - access["iat"] == 5


async def test_emulator_tokens_verify_against_its_jwks(
    cognito_user: CognitoUser, http: aiohttp.ClientSession
) -> None:
    pool = cognito_user.pool
    tokens = await _provider(pool, http, "get_tokens_from_refresh_token").refresh(cognito_user.refresh_token)
    async with http.get(pool.jwks_url) as response:
        jwks = await response.json()
    assert [key["kid"] for key in jwks["keys"]] == ["dummy"]  # one static key for every pool
    assert jwt.get_unverified_header(tokens.access_token)["kid"] == "dummy"
    key = jwt.PyJWKSet.from_dict(jwks)["dummy"]
    claims = jwt.decode(
        tokens.id_token or "", key, algorithms=["RS256"], audience=pool.client_id, issuer=pool.issuer
    )
    assert claims["cognito:username"] == cognito_user.username


# ---------------------------------------------------------------------------------------------
# Transient trouble, injected into the emulator's real refresh path
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("failure", "code", "status"),
    [
        (500, "InternalErrorException", 500),
        (503, "http_503", 503),  # an HTML page from a load balancer
        (502, "http_502", 502),
        (429, "TooManyRequestsException", 429),
        ("TooManyRequestsException", "TooManyRequestsException", 400),  # how Cognito throttles
        ("InternalErrorException", "InternalErrorException", 400),
        ("ResourceNotFoundException", "ResourceNotFoundException", 400),
        ("LimitExceededException", "LimitExceededException", 400),
        ("UnexpectedLambdaException", "UnexpectedLambdaException", 400),
    ],
)
@pytest.mark.parametrize("api", APIS)
async def test_idp_trouble_keeps_the_session(
    api: str,
    failure: int | str,
    code: str,
    status: int,
    cognito_idp: CognitoEmulator,
    cognito_user: CognitoUser,
    http: aiohttp.ClientSession,
) -> None:
    cognito_idp.fail_next = [failure]
    provider = _provider(cognito_user.pool, http, api)

    with pytest.raises(RefreshUnavailable) as unavailable:
        await provider.refresh(cognito_user.refresh_token)
    assert (unavailable.value.code, unavailable.value.status) == (code, status)
    assert await provider.refresh(cognito_user.refresh_token)  # the next call goes through
    assert cognito_idp.refresh_calls == 2


@pytest.mark.parametrize("code", sorted(REJECTING_ERRORS))
async def test_session_ending_codes_reject(
    code: str, cognito_idp: CognitoEmulator, cognito_user: CognitoUser, http: aiohttp.ClientSession
) -> None:
    cognito_idp.fail_next = [code]
    with pytest.raises(RefreshRejected) as rejected:
        await _provider(cognito_user.pool, http, "get_tokens_from_refresh_token").refresh(
            cognito_user.refresh_token
        )
    assert (rejected.value.code, rejected.value.status) == (code, 400)


async def test_retry_after_is_reported(
    cognito_idp: CognitoEmulator, cognito_user: CognitoUser, http: aiohttp.ClientSession
) -> None:
    cognito_idp.fail_next = [429]
    cognito_idp.retry_after_s = 7
    with pytest.raises(RefreshUnavailable) as unavailable:
        await _provider(cognito_user.pool, http, "get_tokens_from_refresh_token").refresh(
            cognito_user.refresh_token
        )
    assert unavailable.value.retry_after_s == 7.0


async def test_slow_idp_times_out(
    cognito_idp: CognitoEmulator, cognito_user: CognitoUser, http: aiohttp.ClientSession
) -> None:
    cognito_idp.delay_s = 1.0
    provider = _provider(cognito_user.pool, http, "get_tokens_from_refresh_token", timeout_s=0.2)
    started = time.perf_counter()
    with pytest.raises(RefreshUnavailable) as unavailable:
        await provider.refresh(cognito_user.refresh_token)
    assert unavailable.value.code == "timeout"
    assert time.perf_counter() - started < 0.9


async def test_emulator_counts_concurrent_refreshes(
    cognito_idp: CognitoEmulator, cognito_user: CognitoUser, http: aiohttp.ClientSession
) -> None:
    cognito_idp.delay_s = 0.2
    provider = _provider(cognito_user.pool, http, "get_tokens_from_refresh_token")
    started = time.perf_counter()
    await asyncio.gather(*(provider.refresh(cognito_user.refresh_token) for _ in range(5)))
    elapsed = time.perf_counter() - started
    assert cognito_idp.wait_for_refresh_calls(5, timeout_s=0)
    assert cognito_idp.refresh_calls_by_api == {"GetTokensFromRefreshToken": 5}
    assert 0.2 <= elapsed < 0.9  # one server thread per request: the delays overlap


def test_emulator_puts_moto_back_when_stopped() -> None:
    """In a fresh process: after the last emulator stops, moto's classes are as they were."""
    script = """
from moto.cognitoidp.models import CognitoIdpUserPool
from moto.cognitoidp.responses import CognitoIdpResponse
from cookieguard.ops.demo.emulator import CognitoEmulator
before = (CognitoIdpUserPool.create_jwt, CognitoIdpResponse.initiate_auth)
with CognitoEmulator() as a, CognitoEmulator() as b:
    assert a.port != b.port
    a.stop()
    assert hasattr(CognitoIdpResponse, "get_tokens_from_refresh_token")  # b still runs
assert (CognitoIdpUserPool.create_jwt, CognitoIdpResponse.initiate_auth) == before
assert not hasattr(CognitoIdpResponse, "get_tokens_from_refresh_token")
assert not hasattr(CognitoIdpResponse, "revoke_token")
print("restored")
"""
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "restored"


async def test_emulator_pools_live_in_the_region_asked_for(http: aiohttp.ClientSession) -> None:
    with CognitoEmulator(region="eu-west-1") as emulator:
        pool = emulator.create_pool(with_secret=True)
        emulator.create_user(pool, "alice", "Correct-Horse-9")
        user = emulator.sign_in(pool, "alice", "Correct-Horse-9")
        tokens = await _provider(pool, http, "initiate_auth").refresh(
            user["RefreshToken"], {USERNAME: "alice"}
        )
    assert pool.user_pool_id.startswith("eu-west-1_") and pool.region == "eu-west-1"
    assert (
        _claims(tokens.access_token)["iss"]
        == f"https://cognito-idp.eu-west-1.amazonaws.com/{pool.user_pool_id}"
    )


def test_emulator_refuses_a_busy_port(cognito_emulator: CognitoEmulator) -> None:
    with pytest.raises(OSError, match="cannot start the Cognito emulator"):
        CognitoEmulator(port=cognito_emulator.port).start()


# ---------------------------------------------------------------------------------------------
# Against a stand-in server, for answers moto cannot give
# ---------------------------------------------------------------------------------------------

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@pytest.fixture
def fake_cognito(
    aiohttp_server: Callable[..., Awaitable[TestServer]], http: aiohttp.ClientSession
) -> Callable[..., Awaitable[CognitoProvider]]:
    """fake_cognito(handler, api=..., **config) -> a provider pointed at a server running `handler`."""

    async def start(
        handler: Handler, api: str = "get_tokens_from_refresh_token", **config: Any
    ) -> CognitoProvider:
        app = web.Application()
        app.router.add_post("/", handler)
        server = await aiohttp_server(app)
        settings: dict[str, Any] = {
            "client_id": "client-1",
            "user_pool_id": "eu-west-1_Fake",
            "api": api,
            "endpoint": str(server.make_url("/")),
            "timeout_s": 2.0,
        }
        settings.update(config)
        return CognitoProvider(CognitoConfig(**settings), http)

    return start


def _answer(status: int, body: Any, headers: dict[str, str] | None = None) -> Handler:
    async def handler(request: web.Request) -> web.StreamResponse:
        text = body if isinstance(body, str) else json.dumps(body)
        content_type = "text/html" if isinstance(body, str) else "application/x-amz-json-1.1"
        return web.Response(
            status=status, text=text, headers={"Content-Type": content_type, **(headers or {})}
        )

    return handler


async def test_request_shape_get_tokens_from_refresh_token(fake_cognito: Any) -> None:
    seen: dict[str, Any] = {}

    async def handler(request: web.Request) -> web.StreamResponse:
        seen.update(headers=dict(request.headers), body=json.loads(await request.read()), path=request.path)
        return await _answer(
            200, {"AuthenticationResult": {"AccessToken": "a", "IdToken": "i", "ExpiresIn": 300}}
        )(request)

    provider = await fake_cognito(handler, client_secret="shh-secret")
    tokens = await provider.refresh("rt-1", {USERNAME: "alice", DEVICE_KEY: "dk-1"})

    assert seen["path"] == "/"
    assert seen["headers"]["Content-Type"] == "application/x-amz-json-1.1"
    assert seen["headers"]["X-Amz-Target"] == "AWSCognitoIdentityProviderService.GetTokensFromRefreshToken"
    assert seen["body"] == {
        "ClientId": "client-1",
        "RefreshToken": "rt-1",
        "ClientSecret": "shh-secret",
        "DeviceKey": "dk-1",
    }
    assert (tokens.access_token, tokens.id_token, tokens.expires_in_s, tokens.rotated) == (
        "a",
        "i",
        300,
        False,
    )


async def test_request_shape_initiate_auth(fake_cognito: Any) -> None:
    seen: dict[str, Any] = {}

    async def handler(request: web.Request) -> web.StreamResponse:
        seen.update(headers=dict(request.headers), body=json.loads(await request.read()))
        return await _answer(200, {"AuthenticationResult": {"AccessToken": "a", "ExpiresIn": 300}})(request)

    provider = await fake_cognito(handler, api="initiate_auth", client_secret="shh-secret")
    tokens = await provider.refresh("rt-1", {USERNAME: "alice", DEVICE_KEY: "dk-1"})

    assert seen["headers"]["X-Amz-Target"] == "AWSCognitoIdentityProviderService.InitiateAuth"
    assert seen["body"] == {
        "AuthFlow": "REFRESH_TOKEN_AUTH",
        "ClientId": "client-1",
        "AuthParameters": {
            "REFRESH_TOKEN": "rt-1",
            "SECRET_HASH": secret_hash("shh-secret", "alice", "client-1"),
            "DEVICE_KEY": "dk-1",
        },
    }
    assert tokens.id_token is None


async def test_refresh_token_sent_back_unchanged_is_not_a_rotation(fake_cognito: Any) -> None:
    provider = await fake_cognito(
        _answer(200, {"AuthenticationResult": {"AccessToken": "a", "RefreshToken": "rt-1"}})
    )
    assert not (await provider.refresh("rt-1")).rotated
    provider = await fake_cognito(
        _answer(200, {"AuthenticationResult": {"AccessToken": "a", "RefreshToken": "rt-2"}})
    )
    assert (await provider.refresh("rt-1")).refresh_token == "rt-2"


@pytest.mark.parametrize(
    ("headers", "body", "code"),
    [
        (
            {
                "x-amzn-ErrorType": "NotAuthorizedException:http://internal.amazon.com/coral/com.amazon.cognito/"
            },
            {},
            "NotAuthorizedException",
        ),
        (
            {},
            {"__type": "com.amazonaws.cognito.identity.idp.model#NotAuthorizedException"},
            "NotAuthorizedException",
        ),
        ({}, {"__type": "UserNotFoundException"}, "UserNotFoundException"),
        (
            {"x-amzn-ErrorType": "TokenRevokedException"},
            {"__type": "InternalErrorException"},
            "TokenRevokedException",
        ),
    ],
    ids=["header-with-colon-suffix", "body-shape-id", "body-plain", "header-wins-over-body"],
)
async def test_error_code_parsing_rejects(
    fake_cognito: Any, headers: dict[str, str], body: Any, code: str
) -> None:
    provider = await fake_cognito(_answer(400, body, headers))
    with pytest.raises(RefreshRejected) as rejected:
        await provider.refresh("rt-1")
    assert rejected.value.code == code


@pytest.mark.parametrize(
    ("status", "body", "headers", "code"),
    [
        (400, {"__type": "TooManyRequestsException"}, {}, "TooManyRequestsException"),
        (400, {"__type": "not a code: s3cret value"}, {}, "http_400"),  # junk never becomes a code
        (400, "<html>Bad Request</html>", {}, "http_400"),
        (403, {"__type": "NotAuthorizedException"}, {}, "NotAuthorizedException"),  # only a 400 rejects
        (500, {"__type": "InternalErrorException"}, {}, "InternalErrorException"),
        (502, "<html><body>502 Bad Gateway</body></html>", {}, "http_502"),
        (504, "", {}, "http_504"),
        (200, "{not json", {}, "bad_response"),
        (200, "<html>maintenance</html>", {}, "bad_response"),
        (200, {"ChallengeName": "SMS_MFA"}, {}, "bad_response"),
        (200, {"AuthenticationResult": {"AccessToken": 42}}, {}, "bad_response"),
        (200, [], {}, "bad_response"),
    ],
)
async def test_unusable_answers_keep_the_session(
    fake_cognito: Any, status: int, body: Any, headers: dict[str, str], code: str
) -> None:
    provider = await fake_cognito(_answer(status, body, headers))
    with pytest.raises(RefreshUnavailable) as unavailable:
        await provider.refresh("rt-1")
    assert unavailable.value.code == code


async def test_retry_after_as_http_date(fake_cognito: Any) -> None:
    when = format_datetime(datetime.now(UTC) + timedelta(seconds=30), usegmt=True)
    provider = await fake_cognito(_answer(429, "slow down", {"Retry-After": when}))
    with pytest.raises(RefreshUnavailable) as unavailable:
        await provider.refresh("rt-1")
    assert unavailable.value.code == "http_429"
    assert unavailable.value.retry_after_s is not None and 25 <= unavailable.value.retry_after_s <= 30


def test_parse_retry_after() -> None:
    now = datetime(2026, 1, 1, tzinfo=UTC)
    assert parse_retry_after("120", now) == 120.0
    assert parse_retry_after("Thu, 01 Jan 2026 00:00:10 GMT", now) == 10.0
    assert parse_retry_after("Wed, 31 Dec 2025 23:00:00 GMT", now) == 0.0  # in the past
    assert parse_retry_after("soon", now) is None
    assert parse_retry_after("-5", now) is None
    assert parse_retry_after(None, now) is None


@given(st.text())
def test_parsed_error_codes_are_always_code_shaped(raw: str) -> None:
    code = parse_error_code({"x-amzn-ErrorType": raw}, None)
    assert code is None or (code.isascii() and code.replace("_", "").replace(".", "").isalnum())


async def test_hung_idp_times_out(fake_cognito: Any) -> None:
    release = asyncio.Event()

    async def hang(request: web.Request) -> web.StreamResponse:
        await release.wait()
        return web.Response()

    provider = await fake_cognito(hang, timeout_s=0.2)
    try:
        with pytest.raises(RefreshUnavailable) as unavailable:
            await provider.refresh("rt-1")
        assert unavailable.value.code == "timeout"
    finally:
        release.set()


async def test_connection_refused(http: aiohttp.ClientSession, unused_tcp_port: int) -> None:
    config = CognitoConfig(
        client_id="client-1",
        user_pool_id="eu-west-1_Fake",
        endpoint=f"http://127.0.0.1:{unused_tcp_port}",
    )
    with pytest.raises(RefreshUnavailable) as unavailable:
        await CognitoProvider(config, http).refresh("rt-1")
    assert unavailable.value.code == "connection_error"


async def test_dropped_connection(fake_cognito: Any) -> None:
    provider = await fake_cognito(close_without_answer)
    with pytest.raises(RefreshUnavailable) as unavailable:
        await provider.refresh("rt-1")
    assert unavailable.value.code == "connection_error"


async def test_oversized_answer(fake_cognito: Any) -> None:
    provider = await fake_cognito(_answer(200, "x" * (512 * 1024)))
    with pytest.raises(RefreshUnavailable) as unavailable:
        await provider.refresh("rt-1")
    assert unavailable.value.code == "bad_response"


async def test_idp_message_never_reaches_the_exception(fake_cognito: Any) -> None:
    refresh_token, client_secret, hash_value = "rt-" + "5f1d0c", "shh-" + "70a2b9", "abc" + "123def"
    leaked = f"SECRET_HASH={hash_value} refresh_token={refresh_token} client_secret={client_secret}"
    provider = await fake_cognito(
        _answer(400, {"__type": "NotAuthorizedException", "message": leaked}), client_secret=client_secret
    )
    with pytest.raises(RefreshError) as error:
        await provider.refresh(refresh_token)
    said = _everything_said(error.value)
    for secret in (hash_value, refresh_token, client_secret):
        assert secret not in said
