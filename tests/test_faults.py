"""Fault injection end to end through `cookieguard run` (issue 8), each with its expected outcome.

IdP faults: 429 with Retry-After, a connection reset mid-response, a 5 s answer (provider.timeout
is 1 s), malformed JSON with 200, an HTML error page (502 from a "load balancer", and 200 from a
captive portal). For every one of them: the user is not signed out (no Set-Cookie), the request
reaches the app with the cookies it came with, `token_refresh` says `outcome=failed` with the
reason, and the session backs off: 50 requests in the backoff window make 1 IdP call.

moto (the Cognito emulator, tests/support/cognito_idp.py) injects 429, slowness and the HTML 502.
The shapes moto cannot produce (a reset in the middle of a response, a 200 whose body is not
JSON or is HTML) come from `FakeCognito`, a small aiohttp test server standing in for the
Cognito endpoint; tokens still come from, and are verified against, moto's pool.

The 500/503/InternalError/timeout/refused cases are in tests/test_session_repair.py, upstream
faults in tests/test_proxy.py and tests/test_hostile.py, Redis dying mid-burst with several
replicas in tests/test_scale_out.py. Here: Redis down at start and back later, and SIGTERM with
50 requests in flight.
"""

from __future__ import annotations

import asyncio
import json
import signal
import socket
import struct
import time
from collections.abc import Callable
from typing import Any

import aiohttp
import pytest
import redis
from aiohttp import web
from aiohttp.test_utils import TestServer
from cryptography.fernet import Fernet

from cookieguard.ops.demo.emulator import CognitoEmulator, PoolInfo
from cookieguard.session.layouts import AmplifyLayout
from tests.support.apps import seen_by, set_cookie_values, start_buggy_app
from tests.support.cognito_idp import CognitoUser, amplify_cookie_header, cognito_guard_config
from tests.support.no_secrets import KnownSecrets
from tests.support.proxy_process import CookieguardProcess
from tests.support.redis_server import RedisServer

Start = Callable[..., CookieguardProcess]
BACKOFF_WINDOW_REQUESTS = 50
cookie_header = amplify_cookie_header


def guard_config(pool: PoolInfo, upstream: str, **overrides: Any) -> dict[str, Any]:
    return cognito_guard_config(pool, upstream, timeout="1s", backoff="5s", **overrides)


async def refresh_events(
    guard: CookieguardProcess, count: int, timeout_s: float = 10.0
) -> list[dict[str, Any]]:
    """The first `count` token_refresh events (log lines arrive asynchronously)."""
    await asyncio.to_thread(
        guard.wait_for_event,
        "token_refresh",
        timeout_s,
        lambda _: len(guard.events("token_refresh")) >= count,
    )
    return guard.events("token_refresh")[:count]


# -- a Cognito endpoint with the shapes moto cannot produce ----------------------------------


class FakeCognito:
    """An aiohttp server answering every refresh call with one broken shape, counting calls."""

    def __init__(self, shape: str) -> None:
        self.shape = shape
        self.calls = 0

    async def handle(self, request: web.Request) -> web.StreamResponse:
        self.calls += 1
        await request.read()
        if self.shape == "reset_mid_response":
            # Status line, headers and half a body, then a TCP RST (SO_LINGER 0): the connection
            # dies in the middle of the answer.
            response = web.StreamResponse(
                status=200, headers={"Content-Type": "application/x-amz-json-1.1", "Content-Length": "400"}
            )
            await response.prepare(request)
            await response.write(b'{"AuthenticationResult": {"TokenType": "Bearer", "Acc')
            transport = request.transport
            assert transport is not None
            sock = transport.get_extra_info("socket")
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            transport.abort()
            return response
        if self.shape == "malformed_json":
            return web.Response(
                status=200,
                body=b'{"AuthenticationResult": {"AccessToken": ',
                headers={"Content-Type": "application/x-amz-json-1.1"},
            )
        if self.shape == "html_200":  # a captive portal or a WAF answering in the IdP's place
            return web.Response(
                status=200,
                text="<html><body>Please sign in to the network</body></html>",
                content_type="text/html",
            )
        raise AssertionError(self.shape)


async def start_fake_cognito(aiohttp_server: Any, shape: str) -> tuple[FakeCognito, TestServer]:
    fake = FakeCognito(shape)
    app = web.Application()
    app.router.add_post("/", fake.handle)
    server: TestServer = await aiohttp_server(app)
    return fake, server


# -- IdP faults --------------------------------------------------------------------------------

# fault -> (where it comes from, the `error` of the first token_refresh event, its idp_status)
FAULTS: dict[str, tuple[str, str, int | None]] = {
    "429_too_many_requests": ("moto", "TooManyRequestsException", 429),
    "reset_mid_response": ("fake", "bad_response", None),
    "slow_5s": ("moto", "timeout", None),
    "malformed_json": ("fake", "bad_response", 200),
    "html_502_error_page": ("moto", "http_502", 502),
    "html_200": ("fake", "bad_response", 200),
}


@pytest.mark.parametrize("fault", list(FAULTS))
async def test_an_idp_fault_never_signs_out_and_the_session_backs_off(
    aiohttp_server: Any,
    cookieguard_process: Start,
    cognito_idp: CognitoEmulator,
    cognito_pool: PoolInfo,
    make_expiring_user: Callable[[PoolInfo], CognitoUser],
    fault: str,
) -> None:
    source, expected_error, expected_status = FAULTS[fault]
    user = make_expiring_user(cognito_pool)
    app = await start_buggy_app(aiohttp_server)
    overrides: dict[str, Any] = {}
    fake: FakeCognito | None = None
    if source == "fake":
        fake, fake_server = await start_fake_cognito(aiohttp_server, fault)
        overrides["provider"] = {"endpoint": str(fake_server.make_url("/"))}
    elif fault == "slow_5s":
        cognito_idp.delay_s = 5.0
    elif fault == "429_too_many_requests":
        cognito_idp.fail_next = [429]
    else:
        cognito_idp.fail_next = [502]
    guard = cookieguard_process(guard_config(cognito_pool, str(app.make_url("")), **overrides))
    header = cookie_header(user)

    def idp_calls() -> int:
        return fake.calls if fake is not None else cognito_idp.refresh_calls

    async def one(s: aiohttp.ClientSession, n: int) -> tuple[int, list[str]]:
        async with s.get(f"{guard.url}/page/{n}", headers={"Cookie": header}) as resp:
            await resp.read()
            return resp.status, resp.headers.getall("Set-Cookie", [])

    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=100)) as s:
        first = await one(s, 0)
        assert idp_calls() == 1
        # The rest arrive inside the session's backoff window (5 s), all at once.
        rest = await asyncio.gather(*(one(s, n) for n in range(1, BACKOFF_WINDOW_REQUESTS)))
    answers = [first, *rest]
    assert all(status == 200 and not set_cookies for status, set_cookies in answers)  # not signed out
    assert idp_calls() == 1  # no call storm
    seen = seen_by(app)
    assert len(seen) == BACKOFF_WINDOW_REQUESTS
    assert {r["cookie"] for r in seen} == {header}  # forwarded with the cookies it came with
    events = await refresh_events(guard, BACKOFF_WINDOW_REQUESTS)
    assert {e["outcome"] for e in events} == {"failed"}
    assert (events[0]["error"], events[0]["idp_status"]) == (expected_error, expected_status)
    assert {e["error"] for e in events[1:]} == {"backoff"}
    assert not guard.events("reject_storm")


async def test_retry_after_is_honoured_then_exactly_one_new_call(
    aiohttp_server: Any,
    cookieguard_process: Start,
    cognito_idp: CognitoEmulator,
    cognito_pool: PoolInfo,
    make_expiring_user: Callable[[PoolInfo], CognitoUser],
    known_secrets: KnownSecrets,
) -> None:
    user = make_expiring_user(cognito_pool)
    cognito_idp.fail_next = [429]
    cognito_idp.retry_after_s = 2  # longer than refresh.backoff (500 ms): the IdP's word wins
    app = await start_buggy_app(aiohttp_server)
    config = guard_config(cognito_pool, str(app.make_url("")), refresh={"backoff": "500ms"})
    guard = cookieguard_process(config)
    header = cookie_header(user)
    access = AmplifyLayout(cognito_pool.client_id).cookie_name(user.username, "accessToken")

    async with aiohttp.ClientSession() as s:
        async with s.get(f"{guard.url}/page", headers={"Cookie": header}) as resp:
            assert resp.status == 200 and "Set-Cookie" not in resp.headers
        throttled_at = time.monotonic()
        assert cognito_idp.refresh_calls == 1
        # Keep asking, every 50 ms, until the IdP is called again (bounded in time and count).
        sent_in_backoff = 0
        set_cookies: list[str] = []
        for _ in range(200):
            async with s.get(f"{guard.url}/page", headers={"Cookie": header}) as resp:
                assert resp.status == 200
                set_cookies = resp.headers.getall("Set-Cookie", [])
            if cognito_idp.refresh_calls > 1:
                break
            sent_in_backoff += 1
            assert time.monotonic() - throttled_at < 4.0, "Retry-After (2 s) passed without a new call"
            await asyncio.sleep(0.05)  # the request rate, not a wait for an event
        second_call_after_s = time.monotonic() - throttled_at
    assert cognito_idp.refresh_calls == 2  # after Retry-After passed: one new call
    assert 1.8 <= second_call_after_s < 4.0
    assert sent_in_backoff >= 15  # well past refresh.backoff (500 ms), none of them called the IdP
    new_access = set_cookie_values(set_cookies)[access]
    known_secrets.add(new_access)
    assert new_access and new_access != user.access_token  # and that call refreshed the session
    events = await refresh_events(guard, sent_in_backoff + 2)
    assert (events[0]["outcome"], events[0]["error"], events[0]["idp_status"]) == (
        "failed",
        "TooManyRequestsException",
        429,
    )
    assert {(e["outcome"], e["error"]) for e in events[1:-1]} == {("failed", "backoff")}
    assert events[-1]["outcome"] == "refreshed"


# -- Redis -------------------------------------------------------------------------------------


async def readyz(guard: CookieguardProcess) -> tuple[int, dict[str, Any]]:
    async with aiohttp.ClientSession() as s, s.get(f"{guard.admin_url}/.cookieguard/readyz") as resp:
        return resp.status, json.loads(await resp.text())


async def test_redis_down_at_start_then_back_later(
    aiohttp_server: Any,
    cookieguard_process: Start,
    cognito_idp: CognitoEmulator,
    cognito_pool: PoolInfo,
    make_expiring_user: Callable[[PoolInfo], CognitoUser],
    redis_server: RedisServer,
    known_secrets: KnownSecrets,
) -> None:
    redis_server.stop()  # nothing listens on its port when cookieguard starts
    key = Fernet.generate_key().decode()
    known_secrets.add(key)
    app = await start_buggy_app(aiohttp_server)
    store = {"kind": "redis", "url": redis_server.url, "encryption_key": key}
    guard = cookieguard_process(guard_config(cognito_pool, str(app.make_url("")), store=store))
    layout = AmplifyLayout(cognito_pool.client_id)

    # It started, it is ready (degraded is not down), and it says so.
    status, report = await readyz(guard)
    assert status == 200 and report["store"]["status"] == "degraded"
    await asyncio.to_thread(guard.wait_for_event, "store_degraded")

    async def burst(user: CognitoUser, n: int) -> set[str]:
        """n concurrent requests of one user; the access tokens they were given."""
        access = layout.cookie_name(user.username, "accessToken")

        async def one(s: aiohttp.ClientSession) -> str:
            async with s.get(f"{guard.url}/page", headers={"Cookie": cookie_header(user)}) as resp:
                assert resp.status == 200
                return set_cookie_values(resp.headers.getall("Set-Cookie", []))[access]

        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=100)) as s:
            tokens = set(await asyncio.gather(*(one(s) for _ in range(n))))
        known_secrets.add(*tokens)
        return tokens

    # Requests refresh fine on local single-flight: 20 concurrent requests, one IdP call.
    first = make_expiring_user(cognito_pool)
    cognito_idp.delay_s = 0.3
    assert len(await burst(first, 20)) == 1
    assert cognito_idp.refresh_calls == 1
    cognito_idp.delay_s = 0.0

    # Redis comes back: cookieguard finds it by itself and coordinates through it again.
    redis_server.start()
    event = await asyncio.to_thread(guard.wait_for_event, "store_recovered", 15.0)
    assert event["kind"] == "redis"
    status, report = await readyz(guard)
    assert status == 200 and report["store"] == "ok"
    second = make_expiring_user(cognito_pool)
    assert len(await burst(second, 5)) == 1
    assert cognito_idp.refresh_calls == 2
    client = redis.Redis.from_url(redis_server.url)
    try:
        assert len(client.keys("cookieguard:result:*")) == 1  # the shared store has the result
    finally:
        client.close()
    outcomes = [e["outcome"] for e in guard.events("token_refresh")]
    assert "failed" not in outcomes and "rejected" not in outcomes


# -- SIGTERM under load ------------------------------------------------------------------------

IN_FLIGHT = 50


async def test_sigterm_with_fifty_requests_in_flight(aiohttp_server: Any, cookieguard_process: Start) -> None:
    arrived = 0
    all_arrived = asyncio.Event()
    release = asyncio.Event()

    async def slow(request: web.Request) -> web.Response:
        nonlocal arrived
        arrived += 1
        if arrived == IN_FLIGHT:
            all_arrived.set()
        await release.wait()
        return web.Response(text=f"done {request.path}")

    upstream = web.Application()
    upstream.router.add_get("/{tail:.*}", slow)
    server = await aiohttp_server(upstream)
    guard = cookieguard_process(
        {"upstream": str(server.make_url("")), "routes": [{"match": "/"}], "timeouts": {"drain": "10s"}}
    )
    assert guard.proc is not None
    port = guard.port
    assert port is not None

    async def one(s: aiohttp.ClientSession, n: int) -> tuple[int, str]:
        async with s.get(f"{guard.url}/slow/{n}") as resp:
            return resp.status, await resp.text()

    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=IN_FLIGHT * 2)) as s:
        requests = asyncio.ensure_future(asyncio.gather(*(one(s, n) for n in range(IN_FLIGHT))))
        await asyncio.wait_for(all_arrived.wait(), 10)
        signalled_at = time.monotonic()
        guard.signal(signal.SIGTERM)
        await asyncio.to_thread(guard.wait_for_event, "draining")

        # New connections are refused while the 50 are still in flight.
        refused = False
        while not refused and time.monotonic() - signalled_at < 5:
            try:
                _, writer = await asyncio.open_connection("127.0.0.1", port)
            except ConnectionRefusedError:
                refused = True
            else:
                writer.close()
                await writer.wait_closed()
                await asyncio.sleep(0.02)  # the poll interval
        assert refused, "cookieguard still accepted connections 5 s after SIGTERM"
        assert not requests.done()

        release.set()
        answers = await asyncio.wait_for(requests, 10)
    assert answers == [(200, f"done /slow/{n}") for n in range(IN_FLIGHT)]
    code = await asyncio.to_thread(guard.proc.wait, 15)
    exited_after_s = time.monotonic() - signalled_at
    assert code == 0
    assert exited_after_s < 10.0  # within the drain timeout
    await asyncio.to_thread(guard.wait_for_event, "stopped")
