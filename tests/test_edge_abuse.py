"""Attacks on the client-facing edge, each reproduced against `cookieguard run` and a real aiohttp
upstream over real sockets: request trailers carried into the next request, spoofable
forwarding-header variants, cache headers on private answers, and what the admin endpoints show
on the public port (README "Threat model")."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from typing import Any

from aiohttp import web

from tests.support.proxy_process import CookieguardProcess
from tests.test_edge_http import read_response
from tests.test_proxy import base_config, header, start_upstream

Start = Callable[..., CookieguardProcess]


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
    request's headers on the same connection (README "Threat model"): the connection closes after
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
        + b"%x\r\n" % len(message) + message + b"\r\n0\r\ngrpc-status: 0\r\n\r\n"
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
