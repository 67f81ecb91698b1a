"""WebSocket upgrades: check the client's handshake, take a slot of the upstream's connection
pool, redo the handshake towards the upstream with aiohttp's client, then pump messages both
ways until either side closes or neither says anything for `timeouts.websocket_idle`. Sessions
are not repaired here: a WebSocket carries no Set-Cookie back (docs/proxy.md "The proxy").

Nothing is opened upstream for a handshake the client got wrong, and the upstream socket is
closed on every way out, so a flood of broken or abandoned handshakes cannot pile up sockets in
the app (docs/security.md "Threat model").
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
from collections.abc import Awaitable, Callable

import aiohttp
from aiohttp import web
from multidict import CIMultiDict
from yarl import URL

from cookieguard.edge.upstream import UpstreamBusy

# The WebSocket handshake is redone by the client session towards the upstream.
_WS_HANDSHAKE = frozenset(
    {"sec-websocket-key", "sec-websocket-version", "sec-websocket-extensions", "sec-websocket-protocol"}
)
# RFC 6455 section 7.4.1: 1001, an endpoint going away (here: the connection sat idle).
_GOING_AWAY = 1001

# Answers a connection failure: (status, error code) -> the response to send.
UpstreamErrorAnswer = Callable[[int, str], web.Response]
# Takes a slot of the upstream's pool (raises UpstreamBusy); returns what gives it back.
Reserve = Callable[[], Awaitable[Callable[[], None]]]


def is_websocket(request: web.Request) -> bool:
    return (
        request.headers.get("Upgrade", "").lower() == "websocket"
        and "upgrade" in request.headers.get("Connection", "").lower()
    )


def handshake_error(request: web.Request) -> int | None:
    """The status to refuse a client's opening handshake with (RFC 6455 section 4.2.1), if any:
    426 for a version other than 13, 400 for anything else wrong."""
    if request.method != "GET" or request.version < (1, 1):
        return 400
    headers = request.headers
    if headers.get("Sec-WebSocket-Version", "").strip() != "13":
        return 426
    try:
        if len(base64.b64decode(headers.get("Sec-WebSocket-Key", "").strip(), validate=True)) != 16:
            return 400
    except (binascii.Error, ValueError):
        return 400
    return None


def _refuse(status: int) -> web.Response:
    text = (
        "cookieguard: unsupported WebSocket version\n"
        if status == 426
        else "cookieguard: bad WebSocket handshake\n"
    )
    response = web.Response(status=status, text=text)
    if status == 426:
        response.headers["Sec-WebSocket-Version"] = "13"
    response.force_close()
    return response


async def forward_websocket(
    request: web.Request,
    client: aiohttp.ClientSession,
    url: URL,
    forwarded: list[tuple[str, str]],
    upstream_error: UpstreamErrorAnswer,
    reserve: Reserve,
    idle_s: float,
) -> web.StreamResponse:
    """`forwarded`: the request headers as headers.upstream_request_headers wrote them."""
    refused = handshake_error(request)
    if refused is not None:
        return _refuse(refused)
    try:
        release = await reserve()
    except UpstreamBusy as exc:
        return upstream_error(503, exc.reason)
    try:
        return await _open_and_pump(request, client, url, forwarded, upstream_error, idle_s)
    finally:
        release()


async def _open_and_pump(
    request: web.Request,
    client: aiohttp.ClientSession,
    url: URL,
    forwarded: list[tuple[str, str]],
    upstream_error: UpstreamErrorAnswer,
    idle_s: float,
) -> web.StreamResponse:
    url = url.with_scheme("wss" if url.scheme == "https" else "ws")
    headers = CIMultiDict((name, value) for name, value in forwarded if name.lower() not in _WS_HANDSHAKE)
    protocols = [p.strip() for p in request.headers.get("Sec-WebSocket-Protocol", "").split(",") if p.strip()]
    try:
        upstream_ws = await client.ws_connect(
            url,
            headers=headers,
            protocols=protocols,
            autoclose=False,
            autoping=False,
        )
    except (TimeoutError, aiohttp.ServerTimeoutError):
        return upstream_error(504, "timeout")
    except aiohttp.WSServerHandshakeError as exc:
        return web.Response(status=exc.status or 502, text="cookieguard: upstream refused the WebSocket\n")
    except aiohttp.ClientError as exc:
        return upstream_error(502, type(exc).__name__)
    client_ws = web.WebSocketResponse(
        protocols=[upstream_ws.protocol] if upstream_ws.protocol else (), autoclose=False, autoping=False
    )
    code = 1000
    try:
        await client_ws.prepare(request)
        if await _pump(client_ws, upstream_ws, idle_s):
            code = _GOING_AWAY
    finally:
        # Every way out closes the app's socket: the client gone, prepare failing, cancelled.
        await upstream_ws.close(code=code)
        if client_ws.prepared:
            with contextlib.suppress(ConnectionError):
                await client_ws.close(code=code)
    return client_ws


async def _pump(
    client: web.WebSocketResponse, upstream: aiohttp.ClientWebSocketResponse, idle_s: float
) -> bool:
    """Copy messages both ways until one side closes (False) or both are silent for `idle_s`
    (True)."""
    loop = asyncio.get_running_loop()
    last = [loop.time()]  # the latest message either way: one timer per connection reads it

    async def copy(src: web.WebSocketResponse | aiohttp.ClientWebSocketResponse, dst: object) -> None:
        send = dst  # both sides offer the same send_* methods
        async for msg in src:
            last[0] = loop.time()
            if msg.type == aiohttp.WSMsgType.TEXT:
                await send.send_str(msg.data)  # type: ignore[attr-defined]
            elif msg.type == aiohttp.WSMsgType.BINARY:
                await send.send_bytes(msg.data)  # type: ignore[attr-defined]
            elif msg.type == aiohttp.WSMsgType.PING:
                await send.ping(msg.data)  # type: ignore[attr-defined]
            elif msg.type == aiohttp.WSMsgType.PONG:
                await send.pong(msg.data)  # type: ignore[attr-defined]
            elif msg.type == aiohttp.WSMsgType.CLOSE:
                await send.close(code=msg.data or 1000, message=msg.extra or b"")  # type: ignore[attr-defined]
                return

    async def idle() -> None:
        while (remaining := last[0] + idle_s - loop.time()) > 0:
            await asyncio.sleep(remaining)

    watchdog = asyncio.ensure_future(idle())
    tasks = [asyncio.ensure_future(copy(client, upstream)), asyncio.ensure_future(copy(upstream, client))]
    try:
        await asyncio.wait([*tasks, watchdog], return_when=asyncio.FIRST_COMPLETED)
        return watchdog.done() and not any(task.done() for task in tasks)
    finally:
        for task in [*tasks, watchdog]:
            task.cancel()
        await asyncio.gather(*tasks, watchdog, return_exceptions=True)
