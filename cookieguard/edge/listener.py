"""The client-facing socket: aiohttp's connection handler with the deadlines and caps it lacks.

aiohttp's server has no deadline for a request's head (a client may send its headers one byte a
minute and hold the connection for ever) and no cap on connections. Each accepted connection here
gets an `EdgeHandler`, aiohttp's own `RequestHandler` (exported by `aiohttp.web`) with:

- a head deadline (`timeouts.client_header`): from the moment a connection opens, or the first
  byte of a later request on a kept-alive connection, the request line and headers must be
  complete within it, else `408` and close;
- a connection cap (`limits.max_connections`): a connection beyond it is answered `503` and
  closed; the ones already open are unaffected;
- error answers (400, 408, 413, 431, 500) that never quote the request: aiohttp's own 400 body
  repeats the offending header line, a Cookie header full of tokens included, which would let a
  script read HttpOnly cookies (docs/security.md "Threat model");
- a write deadline (`timeouts.client_write`): a client that accepts no byte of an answer for that
  long while cookieguard has more to send is cut (the connection aborted; the relay's upstream
  connection, if still held, is closed as its request is cancelled). The timer exists only while
  the socket's send buffer is full, so an answer the client takes as it comes costs nothing;
- no second request after a chunked one: aiohttp 3.14.5's parser carries the last trailer field
  of a chunked request into the headers of the next request on the connection (one user's
  `Cookie` onto another's, behind a load balancer that reuses connections). The answer to a
  chunked request says `Connection: close` and nothing after it on that connection is handled
  (docs/security.md "Threat model"); the trailers themselves are never forwarded.

The front door (`front_door`): a proxied request goes from the connection straight to the proxy,
without aiohttp's router, its match info and its response signal (~33,000 instructions of a
~405,000-instruction request, bench/README.md). Only a target that may name one of the admin
endpoints, or that asks `Expect: 100-continue` (which aiohttp's application answers), goes
through the application as before; `EdgeRequest` sets the `Server` header that the application's
signal sets on what it serves.

aiohttp offers no hook for a head deadline. The handler reads RequestHandler's private
attributes to know where a connection stands: `_messages` (request heads parsed and not yet
handled) and `_waiter` (set while the connection waits for its next request), and uses its
`_loop`. Read against aiohttp 3.14; `tests/test_edge_http.py` fails if that changes.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from http import HTTPStatus
from typing import Any

from aiohttp import web
from aiohttp.http_exceptions import LineTooLong

from cookieguard.logs import get_logger

# The one Server header cookieguard sends, on its own answers and in place of the upstream's (as
# nginx does): no product version for a scanner to match against a vulnerability list.
SERVER = "cookieguard"


def _canned(status: HTTPStatus) -> bytes:
    body = f"cookieguard: {status.phrase.lower()}\n".encode()
    return (
        f"HTTP/1.1 {status.value} {status.phrase}\r\n"
        f"Server: {SERVER}\r\nContent-Type: text/plain; charset=utf-8\r\n"
        f"Content-Length: {len(body)}\r\nCache-Control: no-store\r\nConnection: close\r\n\r\n"
    ).encode() + body


_REQUEST_TIMEOUT = _canned(HTTPStatus.REQUEST_TIMEOUT)
_SERVICE_UNAVAILABLE = _canned(HTTPStatus.SERVICE_UNAVAILABLE)


@dataclass
class ClientLimits:
    """Shared by every connection of one listener."""

    header_timeout_s: float
    max_connections: int | None  # None: no cap (the admin listener)
    open_connections: int = 0
    # Told why a client was cut off: "header_timeout", "max_connections", "write_timeout" (a metric).
    on_cut: Callable[[str], None] | None = None
    write_timeout_s: float | None = None  # None: no write deadline

    def cut(self, reason: str) -> None:
        if self.on_cut is not None:
            self.on_cut(reason)


class EdgeHandler(web.RequestHandler):
    def __init__(self, manager: web.Server, *, limits: ClientLimits, **kwargs: Any) -> None:
        super().__init__(manager, **kwargs)
        self._limits = limits
        self._header_deadline: asyncio.TimerHandle | None = None
        self._write_deadline: asyncio.TimerHandle | None = None
        self._write_backlog = 0  # bytes waiting to be sent when the write deadline was armed
        self._counted = False
        self._rejected = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        limits = self._limits
        if limits.max_connections is not None and limits.open_connections >= limits.max_connections:
            # Answered before the request arrives; the socket is closed once the client's first
            # bytes are read (closing with unread bytes would reset the connection and could
            # destroy the 503 on its way), or at the head deadline.
            self._rejected = True
            limits.cut("max_connections")
            transport.write(_SERVICE_UNAVAILABLE)  # type: ignore[attr-defined]
        else:
            limits.open_connections += 1
            self._counted = True
        self._arm_header_deadline()

    def connection_lost(self, exc: BaseException | None) -> None:
        if self._counted:
            self._counted = False
            self._limits.open_connections -= 1
        self._disarm_header_deadline()
        self._disarm_write_deadline()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self._rejected:
            self.force_close()
            return
        super().data_received(data)
        if self._messages:
            _close_after_chunked(self._messages)
            if self._header_deadline is not None:  # tested here: this runs for every request
                self._disarm_header_deadline()  # a whole head is in: the handler has the request now
        elif data and self._header_deadline is None and self._is_idle():
            self._arm_header_deadline()  # the first bytes of the next request on a kept-alive connection

    def handle_error(
        self,
        request: web.BaseRequest,
        status: int = 500,
        exc: BaseException | None = None,
        message: str | None = None,
    ) -> web.StreamResponse:
        # aiohttp's handler logs the error (logs.py turns that into a `bad_request` event naming
        # the error class only) and refuses when an answer has begun; its answer quotes the
        # request, so it is replaced by one that says only what went wrong.
        super().handle_error(request, status, exc, message)
        if isinstance(exc, LineTooLong):
            status = HTTPStatus.REQUEST_HEADER_FIELDS_TOO_LARGE
        phrase = HTTPStatus(status).phrase if status in HTTPStatus._value2member_map_ else "error"
        response = web.Response(
            status=status,
            text=f"cookieguard: {phrase.lower()}\n",
            headers={"Server": SERVER, "Cache-Control": "no-store"},
        )
        response.force_close()
        return response

    # -- the write deadline ----------------------------------------------------------------------

    def pause_writing(self) -> None:
        super().pause_writing()
        self._arm_write_deadline()

    def resume_writing(self) -> None:
        self._disarm_write_deadline()
        super().resume_writing()

    def _arm_write_deadline(self) -> None:
        timeout_s = self._limits.write_timeout_s
        if timeout_s is None or self.transport is None:
            return
        self._write_backlog = self.transport.get_write_buffer_size()
        self._write_deadline = self._loop.call_later(timeout_s, self._write_timed_out)

    def _disarm_write_deadline(self) -> None:
        if self._write_deadline is not None:
            self._write_deadline.cancel()
            self._write_deadline = None

    def _write_timed_out(self) -> None:
        self._write_deadline = None
        transport = self.transport
        if transport is None or not self.writing_paused:
            return
        if transport.get_write_buffer_size() < self._write_backlog:
            self._arm_write_deadline()  # the client took some bytes since: it is slow, not gone
            return
        self._limits.cut("write_timeout")
        get_logger().info(
            "client_timeout", phase="write", timeout_s=self._limits.write_timeout_s, client=_peer(transport)
        )
        transport.abort()  # close() would wait to flush what the client is not reading

    # -- the head deadline ------------------------------------------------------------------------

    def _is_idle(self) -> bool:
        waiter = self._waiter
        return waiter is not None and not waiter.done()

    def _arm_header_deadline(self) -> None:
        self._header_deadline = self._loop.call_later(self._limits.header_timeout_s, self._header_timed_out)

    def _disarm_header_deadline(self) -> None:
        if self._header_deadline is not None:
            self._header_deadline.cancel()
            self._header_deadline = None

    def _header_timed_out(self) -> None:
        self._header_deadline = None
        transport = self.transport
        if transport is None or self._messages:
            return
        if not self._rejected:
            if self._waiter is None:
                return  # a request is being handled: its head arrived, this deadline is not its
            transport.write(_REQUEST_TIMEOUT)
            self._limits.cut("header_timeout")
            get_logger().debug("client_timeout", phase="header", timeout_s=self._limits.header_timeout_s)
        self.force_close()


def _peer(transport: asyncio.BaseTransport) -> str | None:
    peer = transport.get_extra_info("peername")
    return str(peer[0]) if peer else None


def _close_after_chunked(messages: Any) -> None:
    # The parsed heads waiting for the handler: a chunked one is marked to close the connection
    # after its answer, so any head parsed after it (which may carry its trailer) is never handled.
    for index, (message, payload) in enumerate(messages):
        if getattr(message, "chunked", False) and not message.should_close:
            messages[index] = (message._replace(should_close=True), payload)


class EdgeRequest(web.Request):
    """A request of the main listener: its answers say `Server: cookieguard` whichever way they
    were served (aiohttp's `_prepare_hook` runs the application's `on_response_prepare` signal,
    and only for a request its router matched)."""

    async def _prepare_hook(self, response: web.StreamResponse) -> None:
        response.headers["Server"] = SERVER
        if self._match_info is not None:
            await super()._prepare_hook(response)


def front_door(
    runner: web.AppRunner,
    proxy: Callable[[web.Request], Awaitable[web.StreamResponse]],
    admin_prefix: str,
) -> None:
    """Hand `runner`'s requests to `proxy` unless its application's router could route them
    elsewhere. Call after `runner.setup()`, before `listen`.

    The router matches the admin endpoints on the percent-decoded path (`/%2Ecookieguard/healthz`
    is healthz) and everything else to the proxy. A path with no `%`, no `/.` (no dot segment and
    no dot-file, the default prefix included) and not under `admin_prefix` is exactly as the
    router reads it, so it cannot be an endpoint; any other target, and any `Expect` header,
    takes the router's way. tests/test_edge_http.py holds the table of targets both ways.
    """
    manager = runner.server
    assert manager is not None, "runner.setup() first"
    routed = manager.request_handler
    loop = asyncio.get_running_loop()

    def make_request(message: Any, payload: Any, protocol: Any, writer: Any, task: Any) -> EdgeRequest:
        # As aiohttp's application makes its requests, but unlimited: the proxy streams bodies.
        return EdgeRequest(message, payload, protocol, writer, task, loop, client_max_size=0)

    async def handle(request: web.BaseRequest) -> web.StreamResponse:
        target = request.raw_path
        path = target.partition("?")[0] if "?" in target else target
        if (
            path[:1] != "/"
            or "%" in path
            or "/." in path
            or path.startswith(admin_prefix)
            or "Expect" in request.headers
        ):
            return await routed(request)
        return await proxy(request)  # type: ignore[arg-type]  # an EdgeRequest (make_request)

    # web.Server's handler and request factory, read by each connection's handler when it opens.
    manager.request_handler = handle
    manager.request_factory = make_request


async def listen(
    runner: web.AppRunner, host: str, port: int, limits: ClientLimits, **handler_kwargs: Any
) -> asyncio.AbstractServer:
    """Accept connections on host:port for `runner`'s application (set up already).

    The runner drains these connections on cleanup like its own sites' (they register with its
    server); the returned server must be closed first, so nothing new is accepted meanwhile.
    """
    loop = asyncio.get_running_loop()
    manager = runner.server
    assert manager is not None, "runner.setup() first"

    def handler() -> EdgeHandler:
        return EdgeHandler(manager, loop=loop, limits=limits, **handler_kwargs)

    return await loop.create_server(handler, host, port, backlog=1024)
