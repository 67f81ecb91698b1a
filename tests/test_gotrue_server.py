"""The GoTrue test server (tests/support/gotrue.py) follows supabase/auth's refresh rules.

Other tests trust its answers, so its own behaviour is pinned here over real HTTP.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Mapping
from typing import Any

import aiohttp
import jwt
import pytest

from tests.support.gotrue import DEAD_SESSIONS, GoTrueServer, end_session


@pytest.fixture
async def gotrue() -> AsyncIterator[GoTrueServer]:
    async with GoTrueServer(reuse_interval_s=10) as server:
        yield server


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


async def refresh(
    http: aiohttp.ClientSession,
    server: GoTrueServer,
    refresh_token: Any,
    *,
    apikey: str | None = "default",
    headers: dict[str, str] | None = None,
) -> tuple[int, dict[str, Any], Mapping[str, str]]:
    sent = {"apikey": server.anon_key if apikey == "default" else apikey} if apikey is not None else {}
    sent.update(headers or {})
    async with http.post(
        f"{server.token_url}?grant_type=refresh_token", json={"refresh_token": refresh_token}, headers=sent
    ) as response:
        return response.status, await response.json(), response.headers


async def test_refresh_rotates_the_token_and_answers_like_gotrue(
    gotrue: GoTrueServer, http: aiohttp.ClientSession
) -> None:
    first = gotrue.sign_in("alice@example.com")
    status, body, _ = await refresh(http, gotrue, first["refresh_token"])
    assert status == 200
    assert set(body) == {"access_token", "token_type", "expires_in", "expires_at", "refresh_token", "user"}
    assert body["token_type"] == "bearer"
    assert body["refresh_token"] != first["refresh_token"]
    assert len(body["refresh_token"]) == 12 and body["refresh_token"].isalnum()
    assert body["expires_at"] - gotrue.clock() == pytest.approx(3600, abs=1)
    assert body["user"]["email"] == "alice@example.com"
    assert gotrue.stats.refresh_calls == 1 and gotrue.stats.refreshed == 1


async def test_access_token_verifies_against_the_published_jwks(
    gotrue: GoTrueServer, http: aiohttp.ClientSession
) -> None:
    session = gotrue.sign_in("bob@example.com")
    jwks_client = jwt.PyJWKClient(gotrue.jwks_url)
    # PyJWKClient fetches with urllib (blocking): off the loop, which serves the JWKS.
    signing_key = await asyncio.to_thread(jwks_client.get_signing_key_from_jwt, session["access_token"])
    claims = jwt.decode(
        session["access_token"],
        signing_key.key,
        algorithms=["ES256"],
        audience="authenticated",
        issuer=f"{gotrue.url}/auth/v1",
    )
    assert jwt.get_unverified_header(session["access_token"])["kid"] == gotrue.kid
    assert claims["sub"] == session["user"]["id"]
    assert claims["role"] == "authenticated"
    assert claims["email"] == "bob@example.com"
    assert claims["session_id"] == gotrue.session_id_of(session["refresh_token"])
    assert claims["exp"] == session["expires_at"]


@pytest.mark.parametrize("algorithm", ["RS256", "HS256"])
async def test_other_signing_modes(algorithm: str, http: aiohttp.ClientSession) -> None:
    async with GoTrueServer(algorithm=algorithm) as server:
        token = server.sign_in()["access_token"]
        async with http.get(server.jwks_url) as response:
            jwks = await response.json()
        if algorithm == "HS256":
            assert jwks == {"keys": []}
            assert server.jwt_secret
            claims = jwt.decode(token, server.jwt_secret, algorithms=["HS256"], audience="authenticated")
        else:
            key = jwt.PyJWK(jwks["keys"][0]).key
            claims = jwt.decode(token, key, algorithms=["RS256"], audience="authenticated")
        assert claims["iss"] == server.issuer


async def test_parent_reuse_returns_the_active_token_even_after_the_interval(
    gotrue: GoTrueServer, http: aiohttp.ClientSession
) -> None:
    parent = gotrue.sign_in()["refresh_token"]
    _, child, _ = await refresh(http, gotrue, parent)
    gotrue.clock.advance(5)
    status, again, _ = await refresh(http, gotrue, parent)
    assert status == 200 and again["refresh_token"] == child["refresh_token"]
    # service.go checks the parent case before the reuse interval: a lost answer is recoverable.
    gotrue.clock.advance(3600)
    status, later, _ = await refresh(http, gotrue, parent)
    assert status == 200 and later["refresh_token"] == child["refresh_token"]
    assert gotrue.stats.reused_parent == 2
    assert gotrue.stats.already_used == 0


async def three_generations(http: aiohttp.ClientSession, gotrue: GoTrueServer) -> tuple[str, str, str]:
    """Sign in and refresh twice: the grandparent, parent and child refresh tokens."""
    grandparent = gotrue.sign_in()["refresh_token"]
    _, parent, _ = await refresh(http, gotrue, grandparent)
    _, child, _ = await refresh(http, gotrue, parent["refresh_token"])
    return grandparent, parent["refresh_token"], child["refresh_token"]


async def test_older_token_inside_the_interval_is_swapped(
    gotrue: GoTrueServer, http: aiohttp.ClientSession
) -> None:
    grandparent, parent, child = await three_generations(http, gotrue)
    gotrue.clock.advance(9)
    status, body, _ = await refresh(http, gotrue, grandparent)
    assert status == 200
    assert body["refresh_token"] not in (grandparent, parent, child)


async def test_older_token_after_the_interval_revokes_the_family(
    gotrue: GoTrueServer, http: aiohttp.ClientSession
) -> None:
    grandparent, _, child = await three_generations(http, gotrue)
    gotrue.clock.advance(11)
    status, body, headers = await refresh(http, gotrue, grandparent)
    assert status == 400
    assert body == {
        "code": 400,
        "error_code": "refresh_token_already_used",
        "msg": "Invalid Refresh Token: Already Used",
    }
    assert headers["x-sb-error-code"] == "refresh_token_already_used"
    assert gotrue.stats.already_used == 1
    assert gotrue.active_refresh_token(gotrue.session_id_of(child)) is None
    # The family revocation stamps updated_at, so the last active token is refused once the
    # reuse interval has passed again (models.RevokeTokenFamily).
    gotrue.clock.advance(11)
    status, body, _ = await refresh(http, gotrue, child)
    assert status == 400 and body["error_code"] == "refresh_token_already_used"


async def test_api_version_2024_error_shape(gotrue: GoTrueServer, http: aiohttp.ClientSession) -> None:
    status, body, headers = await refresh(
        http, gotrue, "abcdefghijkl", headers={"X-Supabase-Api-Version": "2024-01-01"}
    )
    assert status == 400
    assert body == {
        "code": "refresh_token_not_found",
        "message": "Invalid Refresh Token: Refresh Token Not Found",
    }
    assert headers["X-Supabase-Api-Version"] == "2024-01-01"


@pytest.mark.parametrize(
    ("action", "code"),
    DEAD_SESSIONS,
)
async def test_dead_sessions(
    action: str, code: str, gotrue: GoTrueServer, http: aiohttp.ClientSession
) -> None:
    token = gotrue.sign_in("carol@example.com")["refresh_token"]
    end_session(gotrue, action, "carol@example.com", token)
    status, body, _ = await refresh(http, gotrue, token)
    assert (status, body["error_code"]) == (400, code)


async def test_malformed_tokens_fail_validation(gotrue: GoTrueServer, http: aiohttp.ClientSession) -> None:
    for bad in ["short", "ABCDEFGHIJKL", 12345, None]:
        status, body, _ = await refresh(http, gotrue, bad)
        assert (status, body["error_code"]) == (400, "validation_failed")


async def test_apikey_is_checked(gotrue: GoTrueServer, http: aiohttp.ClientSession) -> None:
    token = gotrue.sign_in()["refresh_token"]
    status, body, _ = await refresh(http, gotrue, token, apikey=None)
    assert status == 401 and body["message"] == "No API key found in request"
    status, body, _ = await refresh(http, gotrue, token, apikey="sb_publishable_wrong")
    assert status == 401 and body["message"] == "Invalid API key"
    # Refused at the gateway: the token was not spent.
    status, _, _ = await refresh(http, gotrue, token)
    assert status == 200


async def test_injected_faults_and_password_grant(gotrue: GoTrueServer, http: aiohttp.ClientSession) -> None:
    token = gotrue.sign_in("dave@example.com")["refresh_token"]
    gotrue.fail_next(429, retry_after="7")
    gotrue.fail_next(503)
    status, _, headers = await refresh(http, gotrue, token)
    assert status == 429 and headers["Retry-After"] == "7"
    status, _, _ = await refresh(http, gotrue, token)
    assert status == 503
    status, _, _ = await refresh(http, gotrue, token)
    assert status == 200
    assert gotrue.stats.refresh_calls == 3
    async with http.post(
        f"{gotrue.token_url}?grant_type=password",
        json={"email": "dave@example.com", "password": "password"},
        headers={"apikey": gotrue.anon_key},
    ) as response:
        assert response.status == 200
        assert (await response.json())["user"]["email"] == "dave@example.com"
