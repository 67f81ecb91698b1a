"""The upstream client (cookieguard.edge.upstream) on the wire, against real servers on 127.0.0.1.

Most behaviour is exercised end to end through `cookieguard run` (test_proxy, test_streaming,
test_hostile). These tests cover what a well-behaved aiohttp upstream never does: interim 1xx
answers, bodies ended by a close, connections closed between requests, malformed answers.
The raw upstreams are real TCP servers that write HTTP by hand.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import socket
import threading
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from cookieguard.edge.upstream import (
    WHOLE_BODY,
    Origin,
    UpstreamBusy,
    UpstreamClient,
    UpstreamError,
    UpstreamResponse,
    UpstreamTimeout,
)
from tests.support.no_secrets import KnownSecrets

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


class Body:
    """A request body as aiohttp's request.content hands it over."""

    def __init__(self, *pieces: bytes) -> None:
        self.pieces = pieces

    async def iter_any(self) -> AsyncIterator[bytes]:
        for piece in self.pieces:
            await asyncio.sleep(0)
            yield piece


async def read_request(reader: asyncio.StreamReader) -> tuple[bytes, bytes]:
    """One request's head and (Content-Length or chunked) body, as the upstream received them."""
    head = await reader.readuntil(b"\r\n\r\n")
    lower = head.lower()
    body = b""
    if b"content-length:" in lower:
        length = int(lower.split(b"content-length:")[1].split(b"\r\n")[0])
        body = await reader.readexactly(length)
    elif b"transfer-encoding: chunked" in lower:
        while True:
            size = int((await reader.readuntil(b"\r\n")).strip(), 16)
            body += (await reader.readexactly(size + 2))[:-2]
            if size == 0:
                break
    return head, body


def answering(raw: bytes, linger_s: float = 0.0) -> Handler:
    """An upstream that reads one request, writes `raw` as its answer, waits, and closes."""

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(raw)
        await writer.drain()
        await asyncio.sleep(linger_s)
        writer.close()

    return handler


@pytest.fixture
async def raw_upstream() -> AsyncIterator[Callable[[Handler], Awaitable[Origin]]]:
    servers: list[asyncio.Server] = []

    async def start(handler: Handler) -> Origin:
        server = await asyncio.start_server(handler, "127.0.0.1", 0)
        servers.append(server)
        port = server.sockets[0].getsockname()[1]
        return Origin.parse(f"http://127.0.0.1:{port}")

    yield start
    for server in servers:
        server.close()
        await server.wait_closed()


@pytest.fixture
async def client() -> AsyncIterator[UpstreamClient]:
    http = UpstreamClient(connect_timeout_s=2.0)
    yield http
    await http.close()


async def fetch(
    http: UpstreamClient, origin: Origin, method: str = "GET", target: str = "/", **kwargs: Any
) -> tuple[int, list[tuple[str, str]], bytes]:
    kwargs.setdefault("body", None)
    kwargs.setdefault("content_length", None)
    kwargs.setdefault("read_timeout_s", 5.0)
    response = await http.request(origin, method, target, kwargs.pop("headers", []), **kwargs)
    try:
        body = b""
        while chunk := await response.read():
            body += chunk
        return response.status, response.headers, body
    finally:
        response.release()


async def serve_root(
    aiohttp_server: Any, page: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> Origin:
    """Start a real aiohttp upstream whose one route, GET /, is `page`; its origin."""
    app = web.Application()
    app.router.add_get("/", page)
    server = await aiohttp_server(app)
    return Origin.parse(str(server.make_url("")))


async def test_keep_alive_connections_are_reused(aiohttp_server: Any, client: UpstreamClient) -> None:
    peers: list[Any] = []

    async def page(request: web.Request) -> web.Response:
        peers.append(request.transport.get_extra_info("peername") if request.transport else None)
        return web.Response(text=f"hello {request.query.get('n')}")

    origin = await serve_root(aiohttp_server, page)
    for n in range(3):
        status, _headers, body = await fetch(client, origin, target=f"/?n={n}")
        assert (status, body) == (200, f"hello {n}".encode())
    assert len(peers) == 3 and len(set(peers)) == 1, "one TCP connection for three requests"


async def test_answers_of_every_framing_follow_each_other_on_one_connection(
    aiohttp_server: Any, client: UpstreamClient
) -> None:
    """One connection's parser carries each answer's end into the next answer's start: chunked
    after Content-Length, an empty 204 and 304, a HEAD's headers (whose body the parser would still
    wait for), none may leave anything behind for the answer after it."""
    peers: set[Any] = set()

    async def page(request: web.Request) -> web.StreamResponse:
        peers.add(request.transport.get_extra_info("peername") if request.transport else None)
        kind = request.query["kind"]
        if kind == "chunked":
            response = web.StreamResponse()
            response.enable_chunked_encoding()
            await response.prepare(request)
            for part in (b"one ", b"two"):
                await response.write(part)
            await response.write_eof()
            return response
        if kind in ("204", "304"):
            return web.Response(status=int(kind))
        return web.Response(body=f"length {kind}".encode())

    origin = await serve_root(aiohttp_server, page)
    for method, kind, expected in [
        ("GET", "a", b"length a"),
        ("GET", "chunked", b"one two"),
        ("HEAD", "b", b""),
        ("GET", "chunked", b"one two"),
        ("GET", "204", b""),
        ("GET", "c", b"length c"),
        ("GET", "304", b""),
        ("GET", "d", b"length d"),
    ]:
        status, _headers, body = await asyncio.wait_for(fetch(client, origin, method, f"/?kind={kind}"), 3)
        assert (status, body) == (int(kind) if kind.isdigit() else 200, expected), (method, kind)
    assert len(peers) == 1, "one TCP connection for every answer"


async def test_early_hints_are_skipped_and_the_final_answer_is_relayed(
    raw_upstream: Callable[[Handler], Awaitable[Origin]], client: UpstreamClient
) -> None:
    origin = await raw_upstream(
        answering(
            b"HTTP/1.1 103 Early Hints\r\nLink: </app.css>; rel=preload\r\n\r\n"
            b"HTTP/1.1 100 Continue\r\n\r\n"
            b"HTTP/1.1 201 Created\r\nContent-Length: 2\r\nX-Final: yes\r\n\r\nok"
        )
    )
    status, headers, body = await fetch(client, origin)
    assert (status, body) == (201, b"ok")
    assert ("X-Final", "yes") in headers and all(name != "Link" for name, _ in headers)


async def test_a_body_ended_by_close_is_complete(
    raw_upstream: Callable[[Handler], Awaitable[Origin]], client: UpstreamClient
) -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\n")
        for piece in (b"first ", b"second ", b"last"):
            writer.write(piece)
            await writer.drain()
            await asyncio.sleep(0.01)
        writer.close()

    origin = await raw_upstream(handler)
    assert await fetch(client, origin) == (200, [("Content-Type", "text/plain")], b"first second last")


async def test_a_truncated_body_is_an_error_not_a_short_answer(
    raw_upstream: Callable[[Handler], Awaitable[Origin]], client: UpstreamClient
) -> None:
    origin = await raw_upstream(answering(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nonly ten b"))
    with pytest.raises(UpstreamError) as caught:
        await fetch(client, origin)
    assert caught.value.reason == "closed_mid_body"


async def test_a_connection_closed_between_requests_is_retried_for_get_only(
    raw_upstream: Callable[[Handler], Awaitable[Origin]], client: UpstreamClient
) -> None:
    """The upstream reads the second request on a kept-alive connection and closes it without
    a word (an idle timeout racing the reuse). A GET is sent again on a new connection; a POST
    with a body is not replayed: its body has been consumed."""
    connections = 0

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal connections
        connections += 1
        _head, body = await read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%b" % (len(body) + 5, b"first" + body))
        await writer.drain()
        await read_request(reader)
        writer.close()

    origin = await raw_upstream(handler)
    assert (await fetch(client, origin))[2] == b"first"
    assert (await fetch(client, origin))[2] == b"first", "the GET was retried on a new connection"
    assert connections == 2

    with pytest.raises(UpstreamError) as caught:
        await fetch(client, origin, "POST", body=Body(b"payload"), content_length=7)
    assert caught.value.reason == "closed_before_answer"


async def test_head_answers_end_at_their_headers_and_the_connection_is_reused(
    aiohttp_server: Any, client: UpstreamClient
) -> None:
    peers: set[Any] = set()

    async def page(request: web.Request) -> web.Response:
        peers.add(request.transport.get_extra_info("peername") if request.transport else None)
        return web.Response(body=b"x" * 1000)

    # aiohttp answers HEAD for GET routes, with Content-Length: 1000.
    origin = await serve_root(aiohttp_server, page)
    status, headers, body = await asyncio.wait_for(fetch(client, origin, "HEAD"), 3)
    assert (status, body) == (200, b"") and ("Content-Length", "1000") in headers
    assert (await fetch(client, origin))[2] == b"x" * 1000
    assert len(peers) == 1


async def test_a_body_of_unknown_length_is_sent_chunked(
    raw_upstream: Callable[[Handler], Awaitable[Origin]], client: UpstreamClient
) -> None:
    seen: list[tuple[bytes, bytes]] = []

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        seen.append(await read_request(reader))
        writer.write(b"HTTP/1.1 204 No Content\r\n\r\n")
        await writer.drain()

    origin = await raw_upstream(handler)
    status, _headers, _body = await fetch(
        client,
        origin,
        "POST",
        headers=[("Content-Length", "999")],  # the client's framing never leaks: ours is set from the body
        body=Body(b"one ", b"two ", b"three"),
        content_length=None,
    )
    assert status == 204
    head, body = seen[0]
    assert body == b"one two three"
    assert b"transfer-encoding: chunked" in head.lower() and b"999" not in head


async def test_silence_is_a_timeout_before_and_during_the_body(
    raw_upstream: Callable[[Handler], Awaitable[Origin]], client: UpstreamClient
) -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head, _ = await read_request(reader)
        if b"/mid" in head:
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc")
            await writer.drain()
        await asyncio.sleep(3)
        writer.close()

    origin = await raw_upstream(handler)
    with pytest.raises(UpstreamTimeout):
        await asyncio.wait_for(fetch(client, origin, target="/head", read_timeout_s=0.3), 2)
    with pytest.raises(UpstreamTimeout):
        await asyncio.wait_for(fetch(client, origin, target="/mid", read_timeout_s=0.3), 2)


async def test_a_malformed_answer_is_an_error(
    raw_upstream: Callable[[Handler], Awaitable[Origin]], client: UpstreamClient
) -> None:
    origin = await raw_upstream(answering(b"SMTP is not HTTP\r\n\r\n", linger_s=1))
    with pytest.raises(UpstreamError) as caught:
        await asyncio.wait_for(fetch(client, origin), 3)
    assert caught.value.reason == "invalid_answer"


async def test_a_line_break_in_a_header_is_refused_before_anything_is_sent(
    raw_upstream: Callable[[Handler], Awaitable[Origin]], client: UpstreamClient
) -> None:
    received: list[bytes] = []

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        received.append(await reader.read(100))
        writer.close()

    origin = await raw_upstream(handler)
    with pytest.raises(UpstreamError) as caught:
        await fetch(client, origin, headers=[("Cookie", "a=1\r\nX-Injected: yes")])
    assert caught.value.reason == "invalid_header"
    await asyncio.sleep(0.1)
    assert received == []


async def test_nothing_listening_is_an_error_named_after_its_cause(client: UpstreamClient) -> None:
    server = await asyncio.start_server(lambda r, w: None, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    server.close()
    await server.wait_closed()
    with pytest.raises(UpstreamError) as caught:
        await fetch(client, Origin.parse(f"http://127.0.0.1:{port}"))
    assert caught.value.reason == "ConnectionRefusedError"


def test_origin_keeps_the_path_prefix_and_omits_default_ports() -> None:
    assert Origin.parse("http://app:3000/base/") == Origin("app", 3000, False, "/base", "app:3000")
    assert Origin.parse("https://app.example.com") == Origin(
        "app.example.com", 443, True, "", "app.example.com"
    )
    assert Origin.parse("http://[::1]:8080").authority == "[::1]:8080"


async def test_a_request_body_that_breaks_fails_the_request_at_once(
    raw_upstream: Callable[[Handler], Awaitable[Origin]], client: UpstreamClient
) -> None:
    class Broken(Body):
        async def iter_any(self) -> AsyncIterator[bytes]:
            yield b"half of it"
            raise ConnectionResetError("the client went away")

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read(1000)
        await asyncio.sleep(5)
        writer.close()

    origin = await raw_upstream(handler)
    with pytest.raises(UpstreamError) as caught:
        await asyncio.wait_for(fetch(client, origin, "POST", body=Broken(), content_length=1000), 2)
    assert caught.value.reason == "request_body"


def _self_signed(tmp_path: Any) -> tuple[str, str]:
    """A certificate for 127.0.0.1 and its key, as PEM files (the certificate is its own CA)."""
    import datetime
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(hours=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), False
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_file, key_file = tmp_path / "cert.pem", tmp_path / "key.pem"
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    return str(cert_file), str(key_file)


async def test_https_upstreams_are_verified(tmp_path: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """An https upstream with a certificate nobody vouches for is refused (a 502 naming the TLS
    error); once its CA is trusted (SSL_CERT_FILE, read by OpenSSL's default paths) it is used."""
    import ssl

    cert_file, key_file = _self_signed(tmp_path)
    server_tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_tls.load_cert_chain(cert_file, key_file)

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            await read_request(reader)
        except (asyncio.IncompleteReadError, ConnectionError):
            return
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 6\r\n\r\nsecret")
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(handler, "127.0.0.1", 0, ssl=server_tls)
    port = server.sockets[0].getsockname()[1]
    origin = Origin.parse(f"https://127.0.0.1:{port}")
    try:
        untrusting = UpstreamClient(connect_timeout_s=2.0)
        with pytest.raises(UpstreamError) as caught:
            await fetch(untrusting, origin)
        assert caught.value.reason == "SSLCertVerificationError"
        await untrusting.close()

        monkeypatch.setenv("SSL_CERT_FILE", cert_file)
        trusting = UpstreamClient(connect_timeout_s=2.0)
        assert await fetch(trusting, origin) == (200, [("Content-Length", "6")], b"secret")
        await trusting.close()
    finally:
        server.close()
        await server.wait_closed()


# -- one answer, one message (docs/proxy.md "The proxy": what no HTTP/1.1 proxy can tell apart) ---------------

PLANTED = b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nSet-Cookie: planted=1\r\n\r\n"
OK = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"


class Misbehaving:
    """A raw upstream whose answers per connection are scripted; it records how many
    connections it saw and sets `closed[n]` when cookieguard closes connection n."""

    def __init__(self, script: Callable[[int, int, asyncio.StreamWriter], Awaitable[None]]) -> None:
        self.script = script  # (connection number, request number on it, writer)
        self.connections = 0
        self.closed: list[asyncio.Event] = []

    async def __call__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        number = self.connections
        self.connections += 1
        closed = asyncio.Event()
        self.closed.append(closed)
        try:
            for n in range(100):
                try:
                    await read_request(reader)
                except (asyncio.IncompleteReadError, ConnectionError):
                    return
                await self.script(number, n, writer)
        finally:
            closed.set()
            writer.close()


def planted(headers: list[tuple[str, str]]) -> bool:
    return any(value == "planted=1" for _, value in headers)


async def test_a_second_message_behind_the_answer_is_a_502_never_a_merged_head(
    raw_upstream: Callable[[Handler], Awaitable[Origin]], client: UpstreamClient
) -> None:
    """The app writes a stray message right behind its answer (same packet). The answer is not
    exactly one message: 502 and the connection closed, never one head made of two."""

    async def script(conn: int, n: int, writer: asyncio.StreamWriter) -> None:
        writer.write(OK + PLANTED if conn == 0 else OK)
        await writer.drain()

    upstream = Misbehaving(script)
    origin = await raw_upstream(upstream)
    with pytest.raises(UpstreamError) as caught:
        await fetch(client, origin)
    assert caught.value.reason == "extra_bytes"
    await asyncio.wait_for(upstream.closed[0].wait(), 3)
    status, headers, body = await fetch(client, origin)
    assert (status, body) == (200, b"ok") and not planted(headers)
    assert [name.lower() for name, _ in headers].count("content-length") == 1


async def test_stray_bytes_on_a_reused_connection_are_retried_on_a_new_one_for_a_get(
    raw_upstream: Callable[[Handler], Awaitable[Origin]], client: UpstreamClient
) -> None:
    """The late bytes of an earlier answer arrive with the answer to the next request on the
    same connection (a stray head merged into it, or a whole message before it). A body-less
    GET is sent again on a new connection; a POST gets the 502."""

    async def script(conn: int, n: int, writer: asyncio.StreamWriter) -> None:
        if conn == 0 and n == 1:
            writer.write(b"HTTP/1.1 200 OK\r\nSet-Cookie: planted=1\r\n" + OK)  # half a head, then the answer
        elif conn == 1 and n == 1:
            writer.write(PLANTED + OK)  # a whole stray message, then the answer
        else:
            writer.write(OK)
        await writer.drain()

    upstream = Misbehaving(script)
    origin = await raw_upstream(upstream)
    for _ in range(2):
        assert (await fetch(client, origin))[2] == b"ok"
        status, headers, body = await fetch(client, origin)  # reused: garbled, then retried
        assert (status, body) == (200, b"ok") and not planted(headers)
    assert upstream.connections == 3
    await asyncio.wait_for(asyncio.gather(upstream.closed[0].wait(), upstream.closed[1].wait()), 3)


async def test_a_stray_message_before_the_answer_is_what_no_proxy_can_tell_apart(
    raw_upstream: Callable[[Handler], Awaitable[Origin]], client: UpstreamClient
) -> None:
    """A stray message that arrives on a reused connection before the real answer IS the answer
    for any HTTP/1.1 client. What follows it poisons the connection: it is closed, its head is
    never merged into the one handed over, and the next request is clean."""
    head_handed = asyncio.Event()

    async def script(conn: int, n: int, writer: asyncio.StreamWriter) -> None:
        if conn == 0 and n == 1:
            writer.write(PLANTED)
            await writer.drain()
            await head_handed.wait()
        writer.write(OK)
        await writer.drain()

    upstream = Misbehaving(script)
    origin = await raw_upstream(upstream)
    assert (await fetch(client, origin))[2] == b"ok"
    response = await client.request(origin, "GET", "/", [], body=None, content_length=None, read_timeout_s=5)
    head_handed.set()
    await asyncio.wait_for(upstream.closed[0].wait(), 3)  # the real answer poisoned the connection
    assert await response.read() == b""
    response.release()
    assert response.headers == [("Content-Length", "0"), ("Set-Cookie", "planted=1")]  # one head, not two
    status, headers, body = await fetch(client, origin)
    assert (status, body) == (200, b"ok") and not planted(headers) and upstream.connections == 2


async def test_bytes_arriving_while_the_connection_is_idle_close_it_before_reuse_and_are_counted(
    raw_upstream: Callable[[Handler], Awaitable[Origin]],
) -> None:
    caught: list[str] = []
    client = UpstreamClient(connect_timeout_s=2.0, on_late_bytes=caught.append)
    answered = asyncio.Event()

    async def script(conn: int, n: int, writer: asyncio.StreamWriter) -> None:
        writer.write(OK)
        await writer.drain()
        if conn == 0:
            await answered.wait()
            writer.write(PLANTED)
            await writer.drain()

    upstream = Misbehaving(script)
    origin = await raw_upstream(upstream)
    try:
        assert (await fetch(client, origin))[2] == b"ok"
        answered.set()  # the connection is back in the pool
        await asyncio.wait_for(upstream.closed[0].wait(), 3)
        assert caught == ["idle"]
        status, headers, body = await fetch(client, origin)
        assert (status, body) == (200, b"ok") and not planted(headers) and upstream.connections == 2
    finally:
        await client.close()


@pytest.mark.parametrize("late", [False, True])
async def test_a_head_answer_with_a_body_is_relayed_and_its_connection_closed(
    raw_upstream: Callable[[Handler], Awaitable[Origin]], client: UpstreamClient, late: bool
) -> None:
    """RFC 9110 9.3.2: a HEAD answer has no content. Bytes after its head belong to no answer:
    the head is relayed, the connection closed, and the next request never sees them."""
    head_handed = asyncio.Event()

    async def script(conn: int, n: int, writer: asyncio.StreamWriter) -> None:
        if conn == 0 and n == 0:
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 41\r\n\r\n")
            if late:
                await writer.drain()
                await head_handed.wait()
            writer.write(b"HTTP/1.1 200 OK\r\nSet-Cookie: planted=1\r\n\r\n")
        else:
            writer.write(OK)
        await writer.drain()

    upstream = Misbehaving(script)
    origin = await raw_upstream(upstream)
    response = await client.request(origin, "HEAD", "/", [], body=None, content_length=None, read_timeout_s=5)
    head_handed.set()
    assert (response.status, await response.read()) == (200, b"")
    assert response.headers == [("Content-Length", "41")]
    await asyncio.wait_for(upstream.closed[0].wait(), 3)
    response.release()
    status, headers, body = await fetch(client, origin)
    assert (status, body) == (200, b"ok") and not planted(headers) and upstream.connections == 2


@pytest.mark.parametrize(
    "head",
    [
        b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Length: 2\r\n\r\nok",
        b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\n0\r\n\r\n",
    ],
)
async def test_conflicting_framing_is_a_502(
    raw_upstream: Callable[[Handler], Awaitable[Origin]], client: UpstreamClient, head: bytes
) -> None:
    origin = await raw_upstream(answering(head, linger_s=1))
    with pytest.raises(UpstreamError) as caught:
        await asyncio.wait_for(fetch(client, origin), 3)
    assert caught.value.reason == "invalid_answer"


# -- the cap on connections per origin (limits.upstream_connections) -------------------------


async def poll(condition: Callable[[], bool], timeout_s: float = 3.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout_s
    while not condition():
        assert asyncio.get_running_loop().time() < deadline, "condition not met in time"
        await asyncio.sleep(0.01)


async def test_at_the_cap_a_request_waits_for_a_connection_to_be_released(aiohttp_server: Any) -> None:
    release: list[asyncio.Event] = []
    in_flight = peak = 0
    peers: set[Any] = set()

    async def page(request: web.Request) -> web.Response:
        nonlocal in_flight, peak
        peers.add(request.transport.get_extra_info("peername") if request.transport else None)
        done = asyncio.Event()
        release.append(done)
        in_flight += 1
        peak = max(peak, in_flight)
        await done.wait()
        in_flight -= 1
        return web.Response(text="done")

    origin = await serve_root(aiohttp_server, page)
    http = UpstreamClient(connect_timeout_s=5.0, max_connections=2)
    try:
        tasks = [asyncio.ensure_future(fetch(http, origin)) for _ in range(3)]
        await poll(lambda: len(release) == 2)
        pool = http._pools[(origin.host, origin.port, origin.tls)]
        await poll(lambda: len(pool.waiters) == 1)  # the third waits for one of the two
        assert len(release) == 2 and not any(task.done() for task in tasks)
        release[0].set()
        await poll(lambda: len(release) == 3)
        for done in release:
            done.set()
        results = await asyncio.wait_for(asyncio.gather(*tasks), 5)
        assert [body for _, _, body in results] == [b"done"] * 3
        assert peak == 2 and len(peers) == 2 and pool.count == 2
    finally:
        await http.close()


async def test_at_the_cap_a_request_gives_up_after_the_connect_timeout(
    raw_upstream: Callable[[Handler], Awaitable[Origin]],
) -> None:
    never = asyncio.Event()

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        await never.wait()
        writer.close()

    origin = await raw_upstream(handler)
    http = UpstreamClient(connect_timeout_s=0.3, max_connections=1)
    try:
        hanging = asyncio.ensure_future(fetch(http, origin, read_timeout_s=30))
        pool_key = (origin.host, origin.port, origin.tls)
        await poll(lambda: pool_key in http._pools and http._pools[pool_key].count == 1)
        started = asyncio.get_running_loop().time()
        with pytest.raises(UpstreamBusy) as caught:
            await asyncio.wait_for(fetch(http, origin), 3)
        waited = asyncio.get_running_loop().time() - started
        assert caught.value.reason == "pool_full" and 0.25 <= waited < 2
        assert not http._pools[pool_key].waiters
        hanging.cancel()
        with pytest.raises(asyncio.CancelledError):
            await hanging
        assert http._pools[pool_key].count == 0  # the cancelled request's connection was closed
    finally:
        never.set()
        await http.close()


async def test_a_full_pool_is_a_503_with_an_upstream_error_event(
    aiohttp_server: Any, cookieguard_process: Any
) -> None:
    never = asyncio.Event()

    async def hang(request: web.Request) -> web.Response:
        await never.wait()
        return web.Response(text="late")

    app = web.Application()
    app.router.add_get("/", hang)
    server = await aiohttp_server(app)
    guard = cookieguard_process(
        {
            "upstream": str(server.make_url("")).rstrip("/"),
            "limits": {"upstream_connections": 1},
            "timeouts": {"upstream_connect": "300ms"},
        }
    )
    async with aiohttp.ClientSession() as session:
        first = asyncio.ensure_future(session.get(f"{guard.url}/"))
        try:
            await poll(lambda: bool(server.handler.connections), 5)
            async with session.get(f"{guard.url}/") as response:
                assert response.status == 503
            event = await asyncio.to_thread(guard.wait_for_event, "upstream_error")
            assert event["status"] == 503 and event["error"] == "pool_full"
        finally:
            first.cancel()
            never.set()


async def test_a_request_that_gives_up_waiting_leaves_the_pool_whole(aiohttp_server: Any) -> None:
    release = asyncio.Event()
    arrived: list[Any] = []

    async def page(request: web.Request) -> web.Response:
        arrived.append(request.transport.get_extra_info("peername") if request.transport else None)
        await release.wait()
        return web.Response(text="done")

    origin = await serve_root(aiohttp_server, page)
    http = UpstreamClient(connect_timeout_s=5.0, max_connections=1)
    try:
        first = asyncio.ensure_future(fetch(http, origin))
        await poll(lambda: len(arrived) == 1)
        pool = http._pools[(origin.host, origin.port, origin.tls)]
        waiting = asyncio.ensure_future(fetch(http, origin))
        await poll(lambda: len(pool.waiters) == 1)
        waiting.cancel()  # the client went away while waiting
        with pytest.raises(asyncio.CancelledError):
            await waiting
        assert not pool.waiters
        release.set()
        assert (await first)[2] == b"done"
        assert (await fetch(http, origin))[2] == b"done"
        assert pool.count == 1 and len(set(arrived)) == 1  # the one connection, reused
    finally:
        await http.close()


class StrayAfterFirstAnswer:
    """A raw upstream in a thread of its own, so it can write while the test holds cookieguard's
    event loop: it answers every request `OK`, and after the first answer on its first
    connection waits for `send_stray`, writes a stray message and sets `stray_sent`. No real app
    does this on purpose; this is the bug cookieguard must contain. `connections` counts the
    connections it accepted."""

    def __init__(self) -> None:
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.origin = Origin.parse(f"http://127.0.0.1:{self.listener.getsockname()[1]}")
        self.send_stray, self.stray_sent = threading.Event(), threading.Event()
        self.connections = 0
        self._thread = threading.Thread(target=self._serve, args=(2,), daemon=True)
        self._thread.start()

    def _serve(self, connections: int) -> None:
        while self.connections < connections:
            conn, _ = self.listener.accept()
            self.connections += 1
            with conn, contextlib.suppress(ConnectionError):  # cookieguard resets a stale one
                buffered = b""
                for n in range(3):
                    while b"\r\n\r\n" not in buffered:
                        data = conn.recv(65536)
                        if not data:
                            break
                        buffered += data
                    if b"\r\n\r\n" not in buffered:
                        break
                    head, buffered = buffered.split(b"\r\n\r\n", 1)
                    length = (
                        int(head.lower().split(b"content-length:")[1].split(b"\r\n")[0] or 0)
                        if (b"content-length:" in head.lower())
                        else 0
                    )
                    while len(buffered) < length and (data := conn.recv(65536)):
                        buffered += data
                    buffered = buffered[length:]
                    conn.sendall(OK)
                    if self.connections == 1 and n == 0:
                        self.send_stray.wait(5)
                        conn.sendall(PLANTED)
                        self.stray_sent.set()

    def stray_in_socket(self) -> None:
        """Send the stray message and wait (blocking the event loop) until it is written."""
        self.send_stray.set()
        assert self.stray_sent.wait(5)

    def close(self) -> None:
        self.send_stray.set()
        self.listener.close()
        self._thread.join(5)


async def test_late_bytes_already_in_the_socket_are_caught_right_before_reuse_and_counted() -> None:
    """The app writes a stray message after its answer and it reaches cookieguard's socket while
    the event loop is busy (here: blocked on purpose), so no callback has seen it when the next
    request takes the connection. A look at the socket right before sending catches it: the
    connection is closed, counted, and the request goes out on a new one."""
    caught: list[str] = []
    client = UpstreamClient(connect_timeout_s=2.0, on_late_bytes=caught.append)
    upstream = StrayAfterFirstAnswer()
    try:
        assert (await fetch(client, upstream.origin))[2] == b"ok"
        upstream.stray_in_socket()  # blocks the loop: the stray bytes wait in the socket
        status, headers, body = await fetch(client, upstream.origin)
        assert (status, body) == (200, b"ok") and not planted(headers)
        assert caught == ["before_reuse"] and upstream.connections == 2
    finally:
        await client.close()
        upstream.close()


async def test_a_connection_handed_to_a_waiting_request_is_checked_like_one_from_the_pool() -> None:
    """At the cap (`limits.upstream_connections`), a released connection goes straight to the
    request waiting for one, never through the pool. The app's stray message after the answer
    reaches the socket before the waiting request (a POST, so never retried) sends: it was
    counted as `idle` and the connection closed, yet the waiting request still took it and
    failed with a 502 (`closed_before_answer`). It now gets the same check as a connection from
    the pool, and goes out on a new one."""
    caught: list[str] = []
    client = UpstreamClient(connect_timeout_s=5.0, max_connections=1, on_late_bytes=caught.append)
    upstream = StrayAfterFirstAnswer()
    try:
        first = await client.request(
            upstream.origin, "GET", "/", [], body=None, content_length=None, read_timeout_s=5
        )
        waiting = asyncio.ensure_future(
            fetch(client, upstream.origin, "POST", body=Body(b"abc"), content_length=3)
        )
        pool = client._pools[(upstream.origin.host, upstream.origin.port, upstream.origin.tls)]
        await poll(lambda: len(pool.waiters) == 1)
        assert await first.read() == b"ok"  # whole: the connection is handed to the POST now
        upstream.stray_in_socket()  # blocks the loop: the stray bytes wait in the socket
        status, headers, body = await waiting
        assert (status, body) == (200, b"ok") and not planted(headers)
        assert caught in (["idle"], ["before_reuse"]) and upstream.connections == 2
        first.release()
        assert pool.count == 1
    finally:
        await client.close()
        upstream.close()


async def whole_answer_in(response: UpstreamResponse) -> None:
    """Until the answer's last byte is buffered (woken by the connection's parser)."""
    conn = response._conn
    while conn is not None and not conn.complete:
        await conn.wait()


async def test_a_whole_small_answer_is_taken_in_one_piece_and_a_large_one_chunk_by_chunk(
    aiohttp_server: Any, client: UpstreamClient
) -> None:
    """The relay writes a small answer with its head in one write (`take_whole`); an answer
    larger than WHOLE_BODY is read as it came, and nothing of it is lost either way. The
    answers also carry hop-by-hop fields, which never reach `headers`."""
    sizes = {"/small": 1024, "/large": WHOLE_BODY + 1}

    async def page(request: web.Request) -> web.Response:
        body = bytes(n % 251 for n in range(sizes[request.path]))
        return web.Response(body=body, headers={"Keep-Alive": "timeout=5", "X-App": "1"})

    app = web.Application()
    app.router.add_get("/{name}", page)
    server = await aiohttp_server(app)
    origin = Origin.parse(str(server.make_url("")))
    for path, size in sizes.items():
        response = await client.request(
            origin, "GET", path, [], body=None, content_length=None, read_timeout_s=5.0
        )
        try:
            await asyncio.wait_for(whole_answer_in(response), 5)
            whole = response.take_whole()
            if path == "/small":
                assert whole == bytes(n % 251 for n in range(size))
                assert not response.held()  # its connection went back when it was taken
                assert await response.read() == b""
            else:
                assert whole is None
                body = b""
                while chunk := await response.read():
                    body += chunk
                assert body == bytes(n % 251 for n in range(size))
            names = [name.lower() for name, _ in response.headers]
            assert "x-app" in names and "keep-alive" not in names and "connection" not in names
        finally:
            response.release()


@pytest.mark.parametrize("caught", ["idle", "after_answer"])
async def test_late_bytes_through_cookieguard_run_are_logged_counted_and_never_answer_the_next_request(
    raw_upstream: Callable[[Handler], Awaitable[Origin]],
    cookieguard_process: Any,
    caught: str,
    known_secrets: KnownSecrets,
) -> None:
    """What an operator and a user see when the app writes after its answer, end to end through
    `cookieguard run`: an `upstream_error` line with `error: late_bytes`, the count on the admin
    listener, and the next request on the same client connection answered cleanly by the app on
    a new upstream connection, never with the stray message (`Set-Cookie: planted=1`).

    No real app writes after its answer on purpose (a handler that writes a second response is
    the bug), so a raw upstream plays it: the stray message comes right behind the end of the
    answer, in the same write, once the head is relayed (`after_answer`), or once the connection
    is back in cookieguard's pool (`idle`). Bytes that land in the socket between the event loop's last look and the
    reuse (`before_reuse`, the check right before sending) happen only under load, when a turn
    of the loop is long; that case needs the loop held and is tested on the client itself above
    (test_late_bytes_already_in_the_socket_are_caught_right_before_reuse_and_counted)."""
    stray = asyncio.Event()  # the moment the app writes its stray message
    session_value = secrets.token_urlsafe(32)  # a session-shaped cookie no log line may quote
    known_secrets.add(session_value)

    async def script(conn: int, n: int, writer: asyncio.StreamWriter) -> None:
        if conn == 0 and n == 0:
            # After the answer's last byte (after_answer), or on its own once the answer is out.
            end = OK[-1:] if caught == "after_answer" else b""
            writer.write(OK[: len(OK) - len(end)])
            await writer.drain()
            await stray.wait()
            writer.write(end + PLANTED)
        else:
            writer.write(OK)
        await writer.drain()

    upstream = Misbehaving(script)
    origin = await raw_upstream(upstream)
    guard = cookieguard_process({"upstream": f"http://127.0.0.1:{origin.port}"})
    connector = aiohttp.TCPConnector(limit=1)  # both requests on one client connection
    cookies = {"Cookie": f"sid={session_value}"}
    async with aiohttp.ClientSession(connector=connector, headers=cookies) as session:
        async with session.get(f"{guard.url}/first") as response:
            assert response.status == 200
            if caught == "after_answer":
                stray.set()  # the head is out; the rest of the body comes with the stray message
            assert await response.read() == b"ok"  # the answer itself stands
        # The answer was whole before its body went out: its upstream connection is in the pool.
        stray.set()
        await asyncio.wait_for(upstream.closed[0].wait(), 5)  # cookieguard closed it
        async with session.get(f"{guard.url}/second") as response:
            assert (response.status, await response.read()) == (200, b"ok")
            assert "Set-Cookie" not in response.headers
        assert upstream.connections == 2
        [event] = await asyncio.to_thread(
            guard.events_once, "upstream_error", where=lambda e: e.get("error") == "late_bytes"
        )
        assert event["phase"] == caught and event["level"] == "warning"
        async with session.get(f"{guard.admin_url}/.cookieguard/metrics") as response:
            metrics = await response.text()
    assert f'cookieguard_upstream_late_bytes_total{{caught="{caught}"}} 1.0' in metrics
    assert (
        sum(
            float(line.rsplit(" ", 1)[1])
            for line in metrics.splitlines()
            if line.startswith("cookieguard_upstream_late_bytes_total{")
        )
        == 1.0
    )
