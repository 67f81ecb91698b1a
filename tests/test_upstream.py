"""The upstream client (cookieguard.upstream) on the wire, against real servers on 127.0.0.1.

Most behaviour is exercised end to end through `cookieguard run` (test_proxy, test_streaming,
test_hostile). These tests cover what a well-behaved aiohttp upstream never does: interim 1xx
answers, bodies ended by a close, connections closed between requests, malformed answers.
The raw upstreams are real TCP servers that write HTTP by hand.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest
from aiohttp import web

from cookieguard.upstream import Origin, UpstreamClient, UpstreamError, UpstreamTimeout

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


async def test_keep_alive_connections_are_reused(aiohttp_server: Any, client: UpstreamClient) -> None:
    peers: list[Any] = []

    async def page(request: web.Request) -> web.Response:
        peers.append(request.transport.get_extra_info("peername") if request.transport else None)
        return web.Response(text=f"hello {request.query.get('n')}")

    app = web.Application()
    app.router.add_get("/", page)
    server = await aiohttp_server(app)
    origin = Origin.parse(str(server.make_url("")))
    for n in range(3):
        status, _headers, body = await fetch(client, origin, target=f"/?n={n}")
        assert (status, body) == (200, f"hello {n}".encode())
    assert len(peers) == 3 and len(set(peers)) == 1, "one TCP connection for three requests"


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

    app = web.Application()
    app.router.add_get("/", page)  # aiohttp answers HEAD for GET routes, with Content-Length: 1000
    server = await aiohttp_server(app)
    origin = Origin.parse(str(server.make_url("")))
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
