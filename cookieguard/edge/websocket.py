"""WebSocket upgrades: redo the handshake towards the upstream with aiohttp's client, then pump
messages both ways until either side closes. Sessions are not repaired here: a WebSocket carries
no Set-Cookie back (docs/proxy.md "The proxy")."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import aiohttp
from aiohttp import web
from multidict import CIMultiDict
from yarl import URL

# The WebSocket handshake is redone by the client session towards the upstream.
_WS_HANDSHAKE = frozenset(
    {"sec-websocket-key", "sec-websocket-version", "sec-websocket-extensions", "sec-websocket-protocol"}
)

# Answers a connection failure: (status, error code) -> the response to send.
UpstreamErrorAnswer = Callable[[int, str], web.Response]


def is_websocket(request: web.Request) -> bool:
    return (
        request.headers.get("Upgrade", "").lower() == "websocket"
        and "upgrade" in request.headers.get("Connection", "").lower()
    )


async def forward_websocket(
    request: web.Request,
    client: aiohttp.ClientSession,
    url: URL,
    forwarded: list[tuple[str, str]],
    upstream_error: UpstreamErrorAnswer,
) -> web.StreamResponse:
    """`forwarded`: the request headers as headers.upstream_request_headers wrote them."""
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
    await client_ws.prepare(request)
    try:
        await _pump(client_ws, upstream_ws)
    finally:
        await upstream_ws.close()
        await client_ws.close()
    return client_ws


async def _pump(client: web.WebSocketResponse, upstream: aiohttp.ClientWebSocketResponse) -> None:
    async def copy(src: web.WebSocketResponse | aiohttp.ClientWebSocketResponse, dst: object) -> None:
        send = dst  # both sides offer the same send_* methods
        async for msg in src:
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

    tasks = [asyncio.ensure_future(copy(client, upstream)), asyncio.ensure_future(copy(upstream, client))]
    try:
        await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
