"""Start-up with the IdP down (docs/providers/oidc.md, "Any OIDC provider", its start-up item): the
proxy starts and serves, and refreshes once the IdP is back, for both provider kinds.

In process: `build_app` served by aiohttp's test server, a real upstream, and the real IdPs
(moto's Cognito server, panva's oidc-provider) brought up only after the proxy has started.
"""

from __future__ import annotations

import asyncio
import json
import socket
import time
from dataclasses import dataclass
from typing import Any

import aiohttp
import yaml
from aiohttp.test_utils import TestServer
from cryptography.hazmat.primitives.asymmetric import rsa

from cookieguard.app import build_app
from cookieguard.loader import parse_config
from cookieguard.ops.demo.emulator import CognitoEmulator
from tests.support.apps import amplify_cookies, seen_by, set_cookie_values, start_buggy_app
from tests.support.no_secrets import KnownSecrets
from tests.support.oidc_idp import start_oidc_idp

PASSWORD = "Correct-Horse-9"
HOUR_S = 3600.0
POLL_DEADLINE_S = 30.0


@dataclass
class Clock:
    """The proxy's wall clock (build_app's `clock`): moved forward to make a session expire."""

    offset_s: float = 0.0

    def __call__(self) -> float:
        return time.time() + self.offset_s


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def unsigned_jwt(**claims: Any) -> str:
    """A JWT signed by a key nobody publishes: while the JWKS is out of reach it is UNKNOWN,
    exactly like a real token (the proxy cannot tell them apart without keys)."""
    import jwt

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    return jwt.encode(claims, key, algorithm="RS256", headers={"kid": "not-published"})


def cookie_header(cookies: dict[str, str]) -> str:
    return "; ".join(f"{k}={v}" for k, v in cookies.items())


async def get(guard: TestServer, path: str, cookies: str) -> tuple[int, list[str]]:
    url = guard.make_url(path)
    async with (
        aiohttp.ClientSession() as s,
        s.get(url, headers={"Cookie": cookies}, allow_redirects=False) as r,
    ):
        await r.read()
        return r.status, r.headers.getall("Set-Cookie", [])


async def poll_until_refreshed(guard: TestServer, cookies: str, name: str) -> dict[str, str]:
    """Ask until a refresh writes `name` (the IdP has just come up: the proxy retries discovery,
    JWKS and the refresh after their bounded back-offs, without a restart)."""
    deadline = time.monotonic() + POLL_DEADLINE_S
    while True:
        status, set_cookies = await get(guard, "/after", cookies)
        assert status == 200
        written = set_cookie_values(set_cookies)
        if written.get(name):
            return written
        assert not set_cookies  # anything short of a refresh leaves the browser's cookies alone
        assert time.monotonic() < deadline, "no refresh within the deadline after the IdP came up"
        await asyncio.sleep(0.2)


async def test_cognito_idp_down_at_start_up(aiohttp_server: Any, known_secrets: KnownSecrets) -> None:
    emulator = CognitoEmulator().start()
    try:
        pool = emulator.create_pool()
        emulator.create_user(pool, "alice@example.com", PASSWORD, email="alice@example.com")
        tokens = emulator.sign_in(pool, "alice@example.com", PASSWORD)
        known_secrets.add(tokens["AccessToken"], tokens["IdToken"], tokens["RefreshToken"])
        emulator.stop()  # the IdP is down from here until the proxy has served with it down
        upstream = await start_buggy_app(aiohttp_server)
        config = parse_config(
            yaml.safe_dump(
                {
                    "upstream": str(upstream.make_url("")).rstrip("/"),
                    "provider": pool.provider_yaml(timeout="2s"),
                    "refresh": {"backoff": "100ms"},
                }
            ),
            env={},
        )
        clock = Clock()
        guard = await aiohttp_server(build_app(config, clock=clock))
        session = cookie_header(
            amplify_cookies(
                pool.client_id,
                "alice@example.com",
                access_token=tokens["AccessToken"],
                id_token=tokens["IdToken"],
                refresh_token=tokens["RefreshToken"],
            )
        )
        await _serves_with_the_idp_down(guard, upstream, clock, session)

        emulator.start()  # the same port: the IdP is back
        written = await poll_until_refreshed(
            guard, session, f"CognitoIdentityServiceProvider.{pool.client_id}.alice%40example.com.accessToken"
        )
        known_secrets.add(*written.values())
        assert emulator.refresh_calls >= 1
    finally:
        emulator.stop()


async def test_oidc_issuer_only_idp_down_at_start_up(
    aiohttp_server: Any, known_secrets: KnownSecrets
) -> None:
    """config/oidc.yaml's shape: only the issuer, so the token endpoint and the JWKS URL come from
    discovery, which cannot run while the IdP is down. This used to stop the proxy at start-up."""
    port = free_port()
    issuer = f"http://127.0.0.1:{port}"
    secret = "basic-s3cret:with %+&=/ chars"  # tests/oidc_provider/server.js's fixed client
    known_secrets.add(secret)
    upstream = await start_buggy_app(aiohttp_server)
    config = parse_config(
        json.dumps(
            {
                "upstream": str(upstream.make_url("")).rstrip("/"),
                "provider": {
                    "kind": "oidc",
                    "issuer": issuer,
                    "client_id": "cookieguard-basic",
                    "client_secret": secret,
                    "timeout": "2s",
                },
                "cookies": {"layout": "named", "names": {"access_token": "at", "refresh_token": "rt"}},
                "refresh": {"backoff": "100ms"},
                # The session below carries only its refresh token (unproven); the polls after the
                # outage must not run into the per-address budget, which is not what this tests.
                "limits": {"unproven_per_address": 1000, "unproven_per_second": 1000},
            }
        ),
        env={},
    )
    clock = Clock()
    guard = await aiohttp_server(build_app(config, clock=clock))
    now = int(time.time())
    session = cookie_header(
        {
            "at": unsigned_jwt(iss=issuer, sub="alice", iat=now, exp=now + 600),
            "rt": "not-yet-a-grant",
            "theme": "dark",
        }
    )
    await _serves_with_the_idp_down(guard, upstream, clock, session)

    with start_oidc_idp(port=port) as idp:  # the IdP comes up, after the proxy
        minted = idp.mint("alice", resource=True)
        known_secrets.add(minted["refresh_token"], minted["access_token"], minted["id_token"])
        clock.offset_s = 0.0
        expired = cookie_header({"rt": minted["refresh_token"], "theme": "dark"})  # access cookie gone
        written = await poll_until_refreshed(guard, expired, "at")
        known_secrets.add(written.get("at"), written.get("rt"))
        assert written["rt"] not in ("", minted["refresh_token"])  # rotated
        assert idp.stats()["refresh_success"] == 1


async def _serves_with_the_idp_down(
    guard: TestServer, upstream: TestServer, clock: Clock, session: str
) -> None:
    # A fresh session: forwarded unchanged.
    status, set_cookies = await get(guard, "/fresh", session)
    assert (status, set_cookies) == (200, [])
    # The same session an hour later: due, the refresh cannot reach the IdP, and the request is
    # forwarded unchanged; nothing is expired in the browser (IdP trouble never signs out).
    clock.offset_s = 2 * HOUR_S
    status, set_cookies = await get(guard, "/expired", session)
    assert (status, set_cookies) == (200, [])
    assert [r["cookie"] for r in seen_by(upstream)] == [session, session]
