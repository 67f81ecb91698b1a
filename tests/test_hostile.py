"""Hostile and broken input through the live proxy: real-world broken Cookie headers and JWTs,
header injection, request smuggling, and upstreams that break in the middle of a body.

The corpus below collects shapes reported in public bug trackers of browsers, frameworks and
proxies (quoted values, `=` in names and values, empty names, huge and numerous cookies, invalid
UTF-8, control characters). None may crash cookieguard or produce a 5xx of its own.
"""

from __future__ import annotations

import asyncio
import base64
import json
from collections.abc import Callable
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from cookieguard.ops.demo.emulator import PoolInfo
from tests.support.apps import reset_mid_body, seen_by, start_buggy_app
from tests.support.cognito_idp import cognito_guard_config
from tests.support.proxy_process import CookieguardProcess

Start = Callable[..., CookieguardProcess]


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def fake_jwt(payload: object, header: object | None = None) -> str:
    head = b64(json.dumps(header or {"alg": "RS256", "kid": "dummy"}).encode())
    return f"{head}.{b64(json.dumps(payload).encode())}.c2ln"


def corpus(cid: str) -> list[bytes]:
    """Raw Cookie header values (bytes: some are not valid UTF-8)."""
    p = f"CognitoIdentityServiceProvider.{cid}"
    user = f"{p}.LastAuthUser=bob; {p}.bob.refreshToken=rt-1; {p}.bob.accessToken="
    raw = [
        '_ga="GA1.2.3"; sid="a;b"; theme=dark',  # quoted values with separators
        "a=b=c=d; ==; =; ;; ; x",  # '=' in values, empty names, bare values
        "=nameless; " + user + "eyJ",  # truncated JWT
        user + fake_jwt({"exp": "soon"}),  # wrong claim types
        user + fake_jwt({"exp": 1e309}),  # overflowing number
        user + fake_jwt([1, 2, 3]),  # payload not an object
        user + fake_jwt({"exp": 1}, header={"alg": "none"}),  # alg none
        user + fake_jwt({"exp": 1}, header={"alg": "HS256", "kid": "dummy"}),  # alg confusion
        user + "a.b",  # two segments
        user + "a.b.c.d.e",  # JWE-shaped
        user + "%%%.%%%.%%%",  # bad percent-encoding
        user + "\u00e9\u00e8.x.y",  # non-ASCII token
        f"{p}.LastAuthUser=" + "%F0%9F%98%80" * 50,  # emoji username
        f"{p}.LastAuthUser=bob%0D%0ASet-Cookie:%20evil=1; {p}.bob%0D%0A.refreshToken=x",  # encoded CR/LF
        f"{p}.LastAuthUser=..%2F..%2Fetc; {p}...%2F..%2Fetc.refreshToken=x",
        "; ".join(f"c{n}=v{n}" for n in range(200)),  # 200 cookies
        "big=" + "x" * 4096 + "; " + user + "y" * 4000,  # 4 KB+ values
        "\t a = b \t;\tc=d",  # tabs and spaces
    ]
    headers = [r.encode() for r in raw]
    headers.append(b"name=\xff\xfe\xfd; " + user.encode() + b"\xc3\x28")  # invalid UTF-8
    headers.append(b"a=\x01\x02\x7f; b=\x00")  # control characters
    return headers


async def raw_request(port: int, request: bytes, timeout_s: float = 10) -> bytes:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(request)
        await writer.drain()
        return await asyncio.wait_for(reader.read(65536), timeout_s)
    finally:
        writer.close()


def status_of(response: bytes) -> int:
    return int(response.split(b" ", 2)[1]) if response.startswith(b"HTTP/1.") else 0


async def test_corpus_of_broken_cookies_never_crashes_or_5xxs(
    aiohttp_server: Any, cookieguard_process: Start, cognito_pool: PoolInfo
) -> None:
    app = await start_buggy_app(aiohttp_server)
    guard = cookieguard_process(cognito_guard_config(cognito_pool, str(app.make_url(""))))
    statuses = []
    for header in corpus(cognito_pool.client_id):
        response = await raw_request(
            guard.port or 0,
            b"GET /page HTTP/1.1\r\nHost: app.test\r\nCookie: " + header + b"\r\nConnection: close\r\n\r\n",
        )
        statuses.append(status_of(response))
    assert all(s and s < 500 for s in statuses), statuses
    assert statuses.count(200) >= len(statuses) - 2  # a header with NUL/controls may be refused with 400
    assert guard.proc is not None and guard.proc.poll() is None
    assert "Traceback" not in guard.output(), "\n".join(guard.stderr_lines[-40:])


async def test_crlf_in_tokens_or_usernames_never_splits_a_header(
    aiohttp_server: Any, cookieguard_process: Start, cognito_pool: PoolInfo
) -> None:
    """Values reach cookieguard percent-encoded (browsers cannot send raw CR/LF in a cookie);
    decoded, they must never come back out as a header line of their own."""
    app = await start_buggy_app(aiohttp_server)
    guard = cookieguard_process(
        cognito_guard_config(
            cognito_pool, str(app.make_url("")), refresh={"on_rejected": "clear"}, verify={"signature": False}
        )
    )
    p = f"CognitoIdentityServiceProvider.{cognito_pool.client_id}"
    evil_user = "eve%0D%0ASet-Cookie%3A%20pwned%3D1%3B%2C"
    header = f"{p}.LastAuthUser={evil_user}; {p}.{evil_user}.refreshToken=r%0D%0AX-Evil%3A%201; {p}.{evil_user}.accessToken=x"
    async with aiohttp.ClientSession() as s, s.get(f"{guard.url}/page", headers={"Cookie": header}) as resp:
        assert resp.status == 200
        for name, value in resp.headers.items():
            assert "\r" not in value and "\n" not in value
            assert name.lower() != "x-evil"
        assert not any(v.startswith("pwned") for v in resp.headers.getall("Set-Cookie", []))
    for request in seen_by(app):
        assert "\r" not in request["cookie"] and "\n" not in request["cookie"]


@pytest.mark.parametrize(
    "request_bytes",
    [
        b"POST /p HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: x\r\n\r\n",
        b"POST /p HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nContent-Length: 7\r\n\r\nhello",
        b"POST /p HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked, identity\r\n\r\n0\r\n\r\n",
        b"POST /p HTTP/1.1\r\nHost: x\r\nTransfer-Encoding : chunked\r\n\r\n0\r\n\r\n",
        b"GET /p HTTP/1.1\r\nHost: x\r\nX-Bad: a\rb\r\n\r\n",
    ],
)
async def test_request_smuggling_shapes_are_rejected_not_forwarded(
    aiohttp_server: Any, cookieguard_process: Start, request_bytes: bytes
) -> None:
    app = await start_buggy_app(aiohttp_server)
    guard = cookieguard_process({"upstream": str(app.make_url(""))})
    response = await raw_request(guard.port or 0, request_bytes)
    assert status_of(response) == 400, response[:200]
    # A sentinel sent after the rejected connection: once it has arrived, anything cookieguard
    # had forwarded from the bad request (sent earlier, on the connection it closed) would be there.
    assert status_of(await raw_request(guard.port or 0, b"GET /sentinel HTTP/1.1\r\nHost: x\r\n\r\n")) == 200
    assert [r["path"] for r in seen_by(app)] == ["/sentinel"]


async def test_upstream_reset_mid_body_breaks_the_client_response_instead_of_hanging(
    aiohttp_server: Any, cookieguard_process: Start
) -> None:
    app = web.Application()
    app.router.add_get("/", reset_mid_body)
    upstream = await aiohttp_server(app)
    guard = cookieguard_process({"upstream": str(upstream.make_url(""))})
    async with aiohttp.ClientSession() as s:
        with pytest.raises(aiohttp.ClientPayloadError):
            async with s.get(f"{guard.url}/", timeout=aiohttp.ClientTimeout(total=10)) as resp:
                assert resp.status == 200
                await resp.read()
    event = await asyncio.to_thread(guard.wait_for_event, "upstream_error")
    assert event["phase"] == "body"


async def test_a_long_poll_within_the_route_timeout_survives(
    aiohttp_server: Any, cookieguard_process: Start
) -> None:
    """A 100 s long-poll is the same mechanism at a smaller scale: the read timeout is the
    longest *silence*, so a 3 s poll under a 5 s route timeout (and a 1 s default) survives."""

    async def poll(request: web.Request) -> web.Response:
        await asyncio.sleep(3)
        return web.Response(text="event")

    app = web.Application()
    app.router.add_get("/events", poll)
    upstream = await aiohttp_server(app)
    guard = cookieguard_process(
        {
            "upstream": str(upstream.make_url("")),
            "timeouts": {"upstream_read": "1s"},
            "routes": [{"match": "/events", "timeout": "5s"}, {"match": "/"}],
        }
    )
    async with aiohttp.ClientSession() as s, s.get(f"{guard.url}/events") as resp:
        assert resp.status == 200 and await resp.text() == "event"


async def test_the_head_reaches_the_client_before_a_body_the_app_holds_back(
    aiohttp_server: Any, cookieguard_process: Start
) -> None:
    """The answer's head goes out with its first body chunk when that chunk is already there
    (one write); an app that sends its head and then holds the body (an event stream, a slow
    report) must still have its head relayed at once, not when the body finally comes."""
    release = asyncio.Event()

    async def held(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(headers={"X-Head": "early"})
        await response.prepare(request)
        await release.wait()
        await response.write(b"the body")
        await response.write_eof()
        return response

    app = web.Application()
    app.router.add_get("/held", held)
    upstream = await aiohttp_server(app)
    guard = cookieguard_process({"upstream": str(upstream.make_url(""))})
    async with aiohttp.ClientSession() as s:
        # The body is released only after the head has arrived; a proxy that waited for the
        # body before sending the head would hit the deadline here.
        resp = await asyncio.wait_for(s.get(f"{guard.url}/held"), timeout=10)
        async with resp:
            assert resp.status == 200 and resp.headers["X-Head"] == "early"
            release.set()
            assert await resp.read() == b"the body"


async def test_a_malformed_request_carrying_tokens_is_logged_without_them(
    aiohttp_server: Any, cookieguard_process: Start
) -> None:
    """aiohttp's parser error quotes the offending header line; cookieguard logs the error class."""
    app = await start_buggy_app(aiohttp_server)
    guard = cookieguard_process({"upstream": str(app.make_url(""))})
    token = fake_jwt({"sub": "alice", "exp": 2_000_000_000, "pad": "p" * 40})
    response = await raw_request(
        guard.port or 0, b"GET / HTTP/1.1\r\nHost: x\r\nCookie: at=" + token.encode() + b"\x01\r\n\r\n"
    )
    assert status_of(response) == 400
    event = await asyncio.to_thread(guard.wait_for_event, "bad_request")
    assert event["error"] == "BadHttpMessage" and event["status"] == 400
    assert token not in guard.output() and "Traceback" not in guard.output()
