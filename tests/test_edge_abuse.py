"""Attacks on the client-facing edge, each reproduced against `cookieguard run` and a real aiohttp
upstream over real sockets: request trailers carried into the next request, spoofable
forwarding-header variants, cache headers on private answers, and what the admin endpoints show
on the public port (docs/security.md "Threat model")."""

from __future__ import annotations

import asyncio
import contextlib
import json
import secrets
import socket
import time
from collections.abc import Callable
from typing import Any

import aiohttp
from aiohttp import web
from aiohttp.test_utils import TestServer

from tests.support.no_secrets import KnownSecrets
from tests.support.proxy_process import CookieguardProcess
from tests.test_edge_http import raw_exchange, read_response, status_of
from tests.test_proxy import base_config, header, start_upstream

Start = Callable[..., CookieguardProcess]
# The slow and non-reading clients below send a session-shaped cookie; the tests whose
# `client_timeout` lines they cause register its value, so the leak check proves no such line
# quotes it.
SESSION_VALUE = secrets.token_urlsafe(32)


# -- request trailers -----------------------------------------------------------------------------

ATTACK = (
    b"POST /a HTTP/1.1\r\nHost: app.example\r\nTransfer-Encoding: chunked\r\n\r\n"
    b"3\r\nabc\r\n0\r\nCookie: sid=ATTACKER\r\nAuthorization: Bearer ATTACKER\r\n\r\n"
)
VICTIM = b"GET /victim HTTP/1.1\r\nHost: app.example\r\nCookie: sid=VICTIM\r\n\r\n"


async def _rest_of(reader: asyncio.StreamReader) -> bytes:
    """Whatever the connection delivers until cookieguard closes it (or 3 s pass: kept open)."""
    received = b""
    try:
        async with asyncio.timeout(3):
            while chunk := await reader.read(65536):
                received += chunk
    except (ConnectionResetError, TimeoutError):
        pass
    return received


async def test_a_request_trailer_never_reaches_the_next_request_on_the_connection(
    aiohttp_server: Any, cookieguard_process: Start
) -> None:
    """aiohttp 3.14.5's parser carries the last trailer field of a chunked request into the next
    request's headers on the same connection (docs/security.md "Threat model"): the connection closes after
    the answer to any chunked request, so there is no next request on it."""
    seen: list[web.Request] = []
    upstream = await start_upstream(aiohttp_server, seen)
    proxy = cookieguard_process(base_config(str(upstream.make_url(""))))
    # The victim's request after the answer, as a connection-reusing load balancer sends it.
    reader, writer = await asyncio.open_connection("127.0.0.1", proxy.port)
    try:
        writer.write(ATTACK)
        status, headers, body = await read_response(reader)
        writer.write(VICTIM)
        rest = await _rest_of(reader)
    finally:
        writer.close()
    # Pipelined: both requests in one write.
    reader, writer = await asyncio.open_connection("127.0.0.1", proxy.port)
    try:
        writer.write(ATTACK + VICTIM)
        pipelined_status, pipelined_headers, _ = await read_response(reader)
        pipelined_rest = await _rest_of(reader)
    finally:
        writer.close()
    for request in seen:
        assert "ATTACKER" not in request.headers.get("Cookie", ""), request.path
        assert "Authorization" not in request.headers, request.path
    echoed = json.loads(body)
    assert echoed["body_len"] == 3 and header(echoed, "Cookie") == []
    assert status == pipelined_status == 200
    assert headers.get("connection") == pipelined_headers.get("connection") == "close"
    assert rest == pipelined_rest == b""  # closed: the victim's request is not served on it
    assert [r.path for r in seen] == ["/a", "/a"]


async def test_a_grpc_web_like_request_with_trailers_is_answered_and_the_trailers_dropped(
    aiohttp_server: Any, cookieguard_process: Start
) -> None:
    """A legitimate use: a chunked body with a trailer (`grpc-status`) and `TE: trailers`. The
    request and its body reach the app whole; the trailer does not (cookieguard forwards no
    request trailers); the connection closes after the answer."""
    seen: list[web.Request] = []
    upstream = await start_upstream(aiohttp_server, seen)
    proxy = cookieguard_process(base_config(str(upstream.make_url(""))))
    message = b"\x00\x00\x00\x00\x05hello"
    request = (
        b"POST /svc.Echo/Say HTTP/1.1\r\nHost: app.example\r\nContent-Type: application/grpc-web+proto\r\n"
        b"TE: trailers\r\nTransfer-Encoding: chunked\r\n\r\n"
        + b"%x\r\n" % len(message)
        + message
        + b"\r\n0\r\ngrpc-status: 0\r\n\r\n"
    )
    for _ in range(2):  # the second on a new connection, as any client does after a close
        reader, writer = await asyncio.open_connection("127.0.0.1", proxy.port)
        try:
            writer.write(request)
            status, headers, body = await read_response(reader)
            assert await _rest_of(reader) == b""
        finally:
            writer.close()
        echoed = json.loads(body)
        assert status == 200 and headers.get("connection") == "close"
        assert echoed["body_len"] == len(message)
        assert header(echoed, "Content-Type") == ["application/grpc-web+proto"]
    assert all("grpc-status" not in r.headers for r in seen) and len(seen) == 2


# -- spoofable header variants --------------------------------------------------------------------

# What apps and frameworks read besides the headers cookieguard writes (docs/proxy.md "The proxy",
# the table of client headers removed): an untrusted client's are all dropped.
ALWAYS_DROPPED = {
    "X-Forwarded-Scheme": "https",  # Rack reads it before X-Forwarded-Proto
    "X-Forwarded-Ssl": "on",
    "X-Client-IP": "198.51.100.9",
    "True-Client-IP": "198.51.100.9",
    "CF-Connecting-IP": "198.51.100.9",
    "X-Cluster-Client-IP": "198.51.100.9",
    "Fastly-Client-IP": "198.51.100.9",
    "X-Original-URL": "/admin",
    "X-Rewrite-URL": "/admin",
    "X-Original-Forwarded-For": "198.51.100.9",
}
FROM_TRUSTED_ONLY = {
    "X-Forwarded-Port": "443",
    "X-Forwarded-Prefix": "/admin",
    "X-Forwarded-Server": "lb.example",
}
UNDERSCORED = {"X_Forwarded_For": "198.51.100.9", "X_Real_IP": "198.51.100.9", "Some_Header": "x"}


async def test_spoofable_forwarding_header_variants_never_reach_the_app(
    aiohttp_server: Any, cookieguard_process: Start
) -> None:
    upstream = await start_upstream(aiohttp_server)
    claims = {**ALWAYS_DROPPED, **FROM_TRUSTED_ONLY, **UNDERSCORED, "X-App-Header": "kept"}
    proxy = cookieguard_process(base_config(str(upstream.make_url(""))))
    async with aiohttp.ClientSession() as s, s.get(f"{proxy.url}/h", headers=claims) as resp:
        echoed = json.loads(await resp.text())
    received = {name.lower() for name, _ in echoed["headers"]}
    assert received & {name.lower() for name in claims} == {"x-app-header"}
    assert header(echoed, "X-Forwarded-For") == ["127.0.0.1"]
    # From a trusted load balancer, the X-Forwarded-* it writes itself are kept; the rest go.
    trusted = cookieguard_process(
        base_config(str(upstream.make_url("")), limits={"trusted_proxies": ["127.0.0.0/8"]})
    )
    async with aiohttp.ClientSession() as s, s.get(f"{trusted.url}/h", headers=claims) as resp:
        echoed = json.loads(await resp.text())
    received = {name.lower() for name, _ in echoed["headers"]}
    assert received & {name.lower() for name in claims} == {
        "x-app-header",
        *(name.lower() for name in FROM_TRUSTED_ONLY),
    }
    assert header(echoed, "X-Forwarded-Prefix") == ["/admin"]


# -- an oversized Cookie and the app's error page ---------------------------------------------------


async def test_a_cookie_over_limits_max_cookie_size_is_refused_before_the_app_can_echo_it(
    aiohttp_server: Any, cookieguard_process: Start
) -> None:
    """An aiohttp app's own 400 for a header line over 8190 bytes quotes the line: a 9 KB
    Cookie came back in the body, readable by a script although HttpOnly. With
    `limits.max_cookie_size` at the app's limit, cookieguard answers 431 itself."""
    seen: list[web.Request] = []
    upstream = await start_upstream(aiohttp_server, seen)
    big = "sid=" + "S" * 9000
    # What the app does on its own: its 400 page quotes the Cookie.
    async with (
        aiohttp.ClientSession() as s,
        s.get(upstream.make_url("/direct"), headers={"Cookie": big}) as resp,
    ):
        assert resp.status == 400 and "SSSS" in await resp.text()
    proxy = cookieguard_process(base_config(str(upstream.make_url("")), limits={"max_cookie_size": "8KB"}))
    async with aiohttp.ClientSession() as s:
        # Two Cookie headers count together: the app would get them joined.
        for headers in ([("Cookie", big)], [("Cookie", big[:5000]), ("Cookie", "x=" + "X" * 4000)]):
            async with s.get(f"{proxy.url}/page", headers=headers) as resp:
                body = await resp.text()
                assert resp.status == 431 and "SSSS" not in body and "XXXX" not in body
        async with s.get(f"{proxy.url}/page", headers={"Cookie": "sid=" + "S" * 7000}) as resp:
            assert resp.status == 200
    assert [r.path for r in seen] == ["/page"]


# -- slow request bodies --------------------------------------------------------------------------


async def _trickle(
    port: int,
    length: int,
    every_s: float,
    done: asyncio.Event,
    sent: list[int] | None = None,
    head_start: int = 0,
) -> bytes:
    """A POST whose body's first `head_start` bytes come at once, then one byte every `every_s`
    until `done` or cookieguard answers; `sent` gets one entry per byte trickled."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(
            b"POST /upload HTTP/1.1\r\nHost: x\r\nCookie: sid=%s\r\nContent-Length: %d\r\n\r\n"
            % (SESSION_VALUE.encode(), length)
        )
        writer.write(b"x" * head_start)
        answer = asyncio.ensure_future(reader.read())
        for _ in range(length - head_start):
            await asyncio.wait([answer], timeout=every_s)
            if answer.done() or done.is_set():
                break
            writer.write(b"x")
            if sent is not None:
                sent.append(1)
        return await asyncio.wait_for(answer, 10) if not done.is_set() else b""
    finally:
        writer.close()


async def test_a_body_trickled_under_the_idle_limit_is_cut_by_timeouts_client_body(
    aiohttp_server: Any, cookieguard_process: Start, known_secrets: KnownSecrets
) -> None:
    """One byte every 0.3 s never trips a 1 s idle limit; without a deadline for the whole body
    it was still open at 12 s. routes[].client_body gives an upload route longer."""
    known_secrets.add(SESSION_VALUE)
    upstream = await start_upstream(aiohttp_server)
    proxy = cookieguard_process(
        base_config(
            str(upstream.make_url("")),
            timeouts={"client_body_idle": "1s", "client_body": "2s"},
            routes=[{"match": "/uploads/", "client_body": "30s"}, {"match": "/"}],
        )
    )
    started = time.monotonic()
    answer = await _trickle(proxy.port, 100, 0.3, asyncio.Event())
    assert status_of(answer) == 408 and 1.5 < time.monotonic() - started < 5
    # The upload route's own deadline: a small body at the same pace arrives whole.
    reader, writer = await asyncio.open_connection("127.0.0.1", proxy.port)
    try:
        writer.write(
            b"POST /uploads/a HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\nConnection: close\r\n\r\n"
        )
        for _ in range(10):
            await asyncio.sleep(0.3)  # the client's pace, under the idle limit
            writer.write(b"y")
        status, _, body = await read_response(reader, timeout_s=10)
    finally:
        writer.close()
    assert status == 200 and json.loads(body)["body_len"] == 10


async def test_slow_small_bodies_hold_no_upstream_connection(
    aiohttp_server: Any, cookieguard_process: Start
) -> None:
    """Five bodies trickled at one byte every 0.3 s filled `upstream_connections: 5` and every
    other request got 503. A body up to `limits.request_buffer` is now read whole first: the
    slow senders hold nothing of the app's, and another client keeps getting answers fast."""
    seen: list[web.Request] = []
    upstream = await start_upstream(aiohttp_server, seen)
    proxy = cookieguard_process(
        base_config(
            str(upstream.make_url("")),
            limits={"upstream_connections": 2},
            timeouts={"upstream_connect": "1s", "client_body_idle": "5s", "client_body": "60s"},
        )
    )
    done = asyncio.Event()
    sent: list[int] = []
    senders = [asyncio.ensure_future(_trickle(proxy.port, 1000, 0.3, done, sent)) for _ in range(5)]
    try:
        deadline = time.monotonic() + 10
        while len(sent) < 5 * 5:  # each sender is a few bytes into its body
            assert time.monotonic() < deadline
            await asyncio.sleep(0.05)
        async with aiohttp.ClientSession() as s:
            for _ in range(10):
                started = time.monotonic()
                async with s.get(f"{proxy.url}/page") as resp:
                    assert resp.status == 200
                assert time.monotonic() - started < 1.0
        assert not any(sender.done() for sender in senders)
        assert all(r.path == "/page" for r in seen)  # no slow body reached the app yet
    finally:
        done.set()
        await asyncio.gather(*senders, return_exceptions=True)


async def test_slow_large_uploads_from_one_address_leave_the_pool_to_others(
    aiohttp_server: Any, cookieguard_process: Start, known_secrets: KnownSecrets
) -> None:
    """A body larger than `limits.request_buffer` streams to the app (cookieguard buffers no
    body to disk, unlike nginx's `proxy_request_buffering`) and holds its upstream connection
    while the client sends. Four such bodies trickled from 127.0.0.1 filled
    `upstream_connections: 4`, and a client from 127.0.0.2 got 503 `pool_full`. They now count
    against their address's share (half the pool): two stream to the app, the other two are
    answered 503 and closed (`client_timeout`, `phase: body`, `reason: address_share`), the
    client from 127.0.0.2 keeps getting answers within a second, and a fast large upload still
    reaches the app whole, from either address once the slow ones are gone."""
    known_secrets.add(SESSION_VALUE)
    seen: list[web.Request] = []
    upstream = await start_upstream(aiohttp_server, seen)
    proxy = cookieguard_process(
        base_config(
            str(upstream.make_url("")),
            limits={"upstream_connections": 4, "request_buffer": "64KB"},
            timeouts={"upstream_connect": "1s", "client_body_idle": "5s", "client_body": "60s"},
        )
    )
    done = asyncio.Event()
    sent: list[int] = []
    over = 64 * 1024 + 100  # past request_buffer: these bodies stream
    senders = [
        asyncio.ensure_future(_trickle(proxy.port, over + 1000, 0.3, done, sent, head_start=over))
        for _ in range(4)
    ]
    large = b"y" * (3 * MB)
    try:
        await _until(lambda: len(sent) >= 4 * 3)  # each sender is trickling past its head start
        await _answers_fast(proxy.url, "127.0.0.2")
        refused = [sender for sender in senders if sender.done()]
        assert len(refused) == 2 and all(status_of(sender.result()) == 503 for sender in refused)
        assert _cuts(proxy, "address_share", phase="body") == 2
        assert sum(r.path == "/upload" for r in seen) == 2  # the two within the share stream on
        connector = aiohttp.TCPConnector(local_addr=("127.0.0.2", 0))
        async with (
            aiohttp.ClientSession(connector=connector) as s,
            s.post(f"{proxy.url}/big", data=large) as resp,
        ):
            assert resp.status == 200 and (await resp.json())["body_len"] == len(large)
        assert sum(not sender.done() for sender in senders) == 2
    finally:
        done.set()
        await asyncio.gather(*senders, return_exceptions=True)
    # The slow uploads' clients are gone: cookieguard closed their upstream connections (the
    # app sees that) and gave back their address's share.
    await _until(lambda: all(r.transport is None for r in seen if r.path == "/upload"))
    async with aiohttp.ClientSession() as s:
        for _ in range(3):  # more than the share, one after another
            async with s.post(f"{proxy.url}/big", data=large) as resp:
                assert resp.status == 200 and (await resp.json())["body_len"] == len(large)
    async with aiohttp.ClientSession() as s, s.get(f"{proxy.admin_url}/.cookieguard/metrics") as resp:
        assert 'cookieguard_clients_cut_total{reason="address_share"} 2.0' in await resp.text()


# -- slow readers ---------------------------------------------------------------------------------

BLOB = b"x" * (50 * 1024 * 1024)
MB = 1024 * 1024


class BigAnswers:
    """An aiohttp upstream whose /big/<bytes> answers that many bytes (Content-Length) and counts
    the answers it finished writing and those whose connection broke under it."""

    def __init__(self) -> None:
        self.finished = 0
        self.broken = 0

    async def big(self, request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse()
        response.content_length = int(request.match_info["size"])
        await response.prepare(request)
        try:
            await response.write(BLOB[: response.content_length])
            await response.write_eof()
        except (ConnectionResetError, ConnectionError):
            self.broken += 1
            raise
        self.finished += 1
        return response

    async def start(self, aiohttp_server: Any) -> TestServer:
        app = web.Application()
        app.router.add_get("/big/{size}", self.big)
        app.router.add_get("/{tail:.*}", _ok)
        server: TestServer = await aiohttp_server(app)
        return server


async def _non_reader(port: int, path: str) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """A client from 127.0.0.1 that asks for `path` and reads nothing (a 4 KB receive window)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.setblocking(False)
    await asyncio.get_running_loop().sock_connect(sock, ("127.0.0.1", port))
    reader, writer = await asyncio.open_connection(sock=sock)
    writer.write(f"GET {path} HTTP/1.1\r\nHost: x\r\nCookie: sid={SESSION_VALUE}\r\n\r\n".encode())
    return reader, writer


async def _until(check: Callable[[], bool], timeout_s: float = 10.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not check():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.02)


async def _answers_fast(url: str, local: str, count: int = 10) -> None:
    """`count` answers in a row for a normal client from address `local`, each within a second."""
    connector = aiohttp.TCPConnector(local_addr=(local, 0))
    async with aiohttp.ClientSession(connector=connector) as s:
        for _ in range(count):
            started = time.monotonic()
            async with s.get(f"{url}/page") as resp:
                assert resp.status == 200, await resp.text()
                await resp.read()
            assert time.monotonic() - started < 1.0


def _cuts(proxy: CookieguardProcess, reason: str, phase: str = "write") -> int:
    return sum(
        1
        for e in proxy.events("client_timeout")
        if e.get("phase") == phase and e.get("reason", "write_timeout") == reason
    )


async def test_answers_that_fit_limits_response_buffer_free_the_upstream_while_the_client_reads_nothing(
    aiohttp_server: Any, cookieguard_process: Start
) -> None:
    """Five clients that never read a 12 MB answer (beyond what the sockets hold) filled
    `upstream_connections: 5`: the app could not finish writing and everyone else got 503.
    With the answer inside `limits.response_buffer`, the app finishes all five (its connections
    back in the pool) while the clients have read nothing, and another client is served at once."""
    app = BigAnswers()
    upstream = await app.start(aiohttp_server)
    proxy = cookieguard_process(
        base_config(
            str(upstream.make_url("")),
            limits={"upstream_connections": 5, "response_buffer": "16MB"},
            timeouts={"upstream_connect": "1s"},
        )
    )
    clients = [await _non_reader(proxy.port, f"/big/{12 * MB}") for _ in range(5)]
    try:
        await _until(lambda: app.finished == 5)
        await _answers_fast(proxy.url, "127.0.0.1")
        assert app.broken == 0 and _cuts(proxy, "write_timeout") == 0
    finally:
        for _, writer in clients:
            writer.close()


async def test_non_readers_of_large_answers_from_one_address_leave_the_pool_to_others(
    aiohttp_server: Any, cookieguard_process: Start, known_secrets: KnownSecrets
) -> None:
    """Five clients from one address never read a 50 MB answer (past `limits.response_buffer`,
    so each holds its upstream connection): at most half of `upstream_connections` go to them,
    the rest are cut (`reason: address_share`), and a client from another address keeps
    getting answers within a second."""
    known_secrets.add(SESSION_VALUE)
    app = BigAnswers()
    upstream = await app.start(aiohttp_server)
    proxy = cookieguard_process(
        base_config(
            str(upstream.make_url("")),
            limits={"upstream_connections": 5},
            timeouts={"upstream_connect": "1s", "client_write": "60s"},
        )
    )
    clients = [await _non_reader(proxy.port, f"/big/{50 * MB}") for _ in range(5)]
    try:
        await _until(lambda: _cuts(proxy, "address_share") == 3)
        await _answers_fast(proxy.url, "127.0.0.2")
        await _answers_fast(proxy.url, "127.0.0.1")  # its share is held, not the whole pool
        assert _cuts(proxy, "write_timeout") == 0 and app.finished == 0
    finally:
        for _, writer in clients:
            writer.close()


async def test_a_client_that_stops_reading_is_cut_after_timeouts_client_write(
    aiohttp_server: Any, cookieguard_process: Start, known_secrets: KnownSecrets
) -> None:
    """A client that accepts no byte of a 50 MB answer for `timeouts.client_write` is cut, and
    the one upstream connection its answer held (`upstream_connections: 1`) is free again."""
    known_secrets.add(SESSION_VALUE)
    app = BigAnswers()
    upstream = await app.start(aiohttp_server)
    proxy = cookieguard_process(
        base_config(
            str(upstream.make_url("")),
            limits={"upstream_connections": 1},
            timeouts={"client_write": "1s", "upstream_connect": "1s"},
        )
    )
    started = time.monotonic()
    reader, writer = await _non_reader(proxy.port, f"/big/{50 * MB}")
    try:
        # Polled, not proxy.wait_for_event: the app in this process must keep running meanwhile.
        await _until(lambda: _cuts(proxy, "write_timeout") == 1)
        assert time.monotonic() - started >= 1.0
        [event] = [e for e in proxy.events("client_timeout") if e.get("phase") == "write"]
        assert event["timeout_s"] == 1.0 and event["client"] == "127.0.0.1"
        await _answers_fast(proxy.url, "127.0.0.2", count=3)  # the one connection is free again
        # The client's connection is gone: what it reads now ends (or is reset) short of 50 MB.
        received = 0
        with contextlib.suppress(ConnectionResetError):
            async with asyncio.timeout(10):
                while chunk := await reader.read(1 << 20):
                    received += len(chunk)
        assert received < 50 * MB
        async with aiohttp.ClientSession() as s, s.get(f"{proxy.admin_url}/.cookieguard/metrics") as resp:
            metrics = await resp.text()
        assert 'cookieguard_clients_cut_total{reason="write_timeout"} 1.0' in metrics
    finally:
        writer.close()


# -- WebSockets -----------------------------------------------------------------------------------


class SocketApp:
    """An aiohttp app with a WebSocket echo at /ws that counts the sockets it holds open."""

    def __init__(self) -> None:
        self.opened = 0
        self.open = 0

    async def ws(self, request: web.Request) -> web.WebSocketResponse:
        sock = web.WebSocketResponse()
        await sock.prepare(request)
        self.opened += 1
        self.open += 1
        try:
            async for msg in sock:
                if msg.type == aiohttp.WSMsgType.TEXT:
                    await sock.send_str("echo:" + msg.data)
        finally:
            self.open -= 1
        return sock

    async def start(self, aiohttp_server: Any) -> TestServer:
        app = web.Application()
        app.router.add_get("/ws", self.ws)
        app.router.add_get("/{tail:.*}", _ok)
        server: TestServer = await aiohttp_server(app)
        return server

    async def until_open(self, count: int) -> None:
        deadline = time.monotonic() + 10
        while self.open != count:
            assert time.monotonic() < deadline, (self.open, count)
            await asyncio.sleep(0.02)


async def _ok(_request: web.Request) -> web.Response:
    return web.Response(text="ok")


INVALID_HANDSHAKES = [
    b"GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n",
    b"GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
    b"Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: not-sixteen-bytes\r\n\r\n",
    b"GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
    b"Sec-WebSocket-Version: 8\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n",
    b"POST /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nContent-Length: 0\r\n"
    b"Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n",
]
VALID_HANDSHAKE = (
    b"GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
    b"Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n"
)


async def test_an_invalid_websocket_handshake_opens_nothing_upstream(
    aiohttp_server: Any, cookieguard_process: Start
) -> None:
    """Each invalid handshake was opened to the app first and its socket never closed (2,000 of
    them left ~57 app WebSockets open); now it is refused before anything is opened."""
    sockets = SocketApp()
    upstream = await sockets.start(aiohttp_server)
    proxy = cookieguard_process(base_config(str(upstream.make_url(""))))
    for _ in range(10):
        for handshake in INVALID_HANDSHAKES:
            answer = await raw_exchange(proxy.port, handshake, timeout_s=5)
            assert status_of(answer) in (400, 426), answer[:80]
    assert sockets.opened == 0
    # A client that sends a valid handshake and goes away at once: the app's socket is closed.
    for _ in range(10):
        _, writer = await asyncio.open_connection("127.0.0.1", proxy.port)
        writer.write(VALID_HANDSHAKE)
        await writer.drain()
        writer.close()
    await sockets.until_open(0)
    async with aiohttp.ClientSession() as s, s.ws_connect(f"{proxy.url}/ws") as ws:
        await ws.send_str("hi")
        assert (await ws.receive(timeout=5)).data == "echo:hi"
    await sockets.until_open(0)
    assert "Unclosed" not in "\n".join(proxy.stderr_lines)


async def test_websockets_count_against_upstream_connections(
    aiohttp_server: Any, cookieguard_process: Start
) -> None:
    sockets = SocketApp()
    upstream = await sockets.start(aiohttp_server)
    proxy = cookieguard_process(
        base_config(
            str(upstream.make_url("")),
            limits={"upstream_connections": 5},
            timeouts={"upstream_connect": "1s"},
        )
    )
    async with aiohttp.ClientSession() as s:
        held = [await s.ws_connect(f"{proxy.url}/ws") for _ in range(5)]
        await sockets.until_open(5)
        try:
            answer = await raw_exchange(
                proxy.port, VALID_HANDSHAKE.replace(b"\r\n\r\n", b"\r\nConnection: close\r\n\r\n")
            )
            assert status_of(answer) == 503  # the sixth waited for a slot, then gave up
            async with s.get(f"{proxy.url}/page") as resp:
                assert resp.status == 503  # the pool is the WebSockets'
            assert sockets.open == 5
        finally:
            await held.pop().close()
        async with s.ws_connect(f"{proxy.url}/ws") as ws:  # a closed one gave its slot back
            await ws.send_str("again")
            assert (await ws.receive(timeout=5)).data == "echo:again"
        for ws in held:
            await ws.close()
    await sockets.until_open(0)


async def test_an_idle_websocket_is_closed_after_timeouts_websocket_idle(
    aiohttp_server: Any, cookieguard_process: Start
) -> None:
    sockets = SocketApp()
    upstream = await sockets.start(aiohttp_server)
    proxy = cookieguard_process(base_config(str(upstream.make_url("")), timeouts={"websocket_idle": "1s"}))
    async with aiohttp.ClientSession() as s, s.ws_connect(f"{proxy.url}/ws") as ws:
        await ws.send_str("hi")
        assert (await ws.receive(timeout=5)).data == "echo:hi"
        started = time.monotonic()
        closing = await ws.receive(timeout=10)
        assert closing.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED, aiohttp.WSMsgType.CLOSING)
        assert 0.5 < time.monotonic() - started < 5
    await sockets.until_open(0)


# -- what the public port shows -------------------------------------------------------------------


async def test_by_default_metrics_and_readyz_are_not_on_the_public_port(aiohttp_server: Any) -> None:
    """Without `admin_listen` in the config, metrics (with `python_info`) and readyz answered
    anyone on the public port; they now default to a loopback listener (127.0.0.1:9090)."""
    from cookieguard.app import build_app
    from cookieguard.loader import parse_config

    upstream = await start_upstream(aiohttp_server)
    config = parse_config(f"upstream: {upstream.make_url('')}\n", env={})
    assert config.admin_listen == ("127.0.0.1", 9090)
    proxy = await aiohttp_server(build_app(config))
    async with aiohttp.ClientSession() as s:
        for name, status in (("metrics", 404), ("readyz", 404), ("healthz", 200)):
            async with s.get(proxy.make_url(f"/.cookieguard/{name}")) as resp:
                assert resp.status == status, name
                assert "python_info" not in await resp.text()
