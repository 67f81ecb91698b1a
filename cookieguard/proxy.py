"""The life of a proxied request, top to bottom.

match route -> (session repair, when the route refreshes) -> forward to the upstream, streaming
both bodies -> merge cookieguard's Set-Cookie into the upstream's response -> answer.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterable
from dataclasses import dataclass, field

import aiohttp
from aiohttp import web
from multidict import CIMultiDict
from yarl import URL

from .config import Config, Route
from .logs import get_logger
from .metrics import Metrics
from .routing import Router

# RFC 9110 section 7.6.1: connection-specific fields a proxy must not forward.
HOP_BY_HOP = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-connection",
        "proxy-authenticate",
        "proxy-authorization",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
    }
)
# The WebSocket handshake is redone by the client session towards the upstream.
_WS_HANDSHAKE = frozenset(
    {"sec-websocket-key", "sec-websocket-version", "sec-websocket-extensions", "sec-websocket-protocol"}
)
_COPY_CHUNK = 64 * 1024


@dataclass
class Forwarding:
    """What session repair decided about one request before it is forwarded."""

    cookie_header: str | None = None  # None: forward the client's Cookie header as it came
    set_cookies: list[str] = field(default_factory=list)  # already merged-ready Set-Cookie values
    response: web.StreamResponse | None = None  # answer without forwarding (e.g. 401, 302 to login)


class Proxy:
    def __init__(self, config: Config, upstream: aiohttp.ClientSession, metrics: Metrics) -> None:
        self.config = config
        self.router = Router(config.routes)
        self.upstream = upstream
        self.metrics = metrics
        self.log = get_logger()
        self.access_log = config.logging.access_log
        self._timeouts: dict[str, aiohttp.ClientTimeout] = {
            r.match: aiohttp.ClientTimeout(
                total=None,
                sock_connect=config.timeouts.upstream_connect_s,
                sock_read=r.timeout_s or config.timeouts.upstream_read_s,
            )
            for r in config.routes
        }

    async def handle(self, request: web.Request) -> web.StreamResponse:
        started = time.perf_counter()
        route = self.router.match(request.path)
        if route is None:
            response: web.StreamResponse = web.Response(
                status=404, text="cookieguard: no route for this path\n"
            )
        elif _is_websocket(request):
            response = await self.forward_websocket(request, route)
        else:
            response = await self.forward(request, route, Forwarding())
        if route is not None:
            self.metrics.requests_total.labels(route=route.match, status=str(response.status)).inc()
        if self.access_log:
            self.log.info(
                "access",
                method=request.method,
                path=request.path,
                status=response.status,
                duration_ms=round((time.perf_counter() - started) * 1000, 2),
                route=route.match if route else None,
            )
        return response

    async def forward(self, request: web.Request, route: Route, fwd: Forwarding) -> web.StreamResponse:
        if fwd.response is not None:
            return fwd.response
        url = _upstream_url(route, request)
        headers = upstream_request_headers(request, route, fwd.cookie_header)
        data = request.content if request.body_exists else None
        started = time.perf_counter()
        try:
            upstream = await self.upstream.request(
                request.method,
                url,
                headers=headers,
                data=data,
                allow_redirects=False,
                timeout=self._timeouts[route.match],
            )
        except (TimeoutError, aiohttp.ServerTimeoutError):
            return self._upstream_error(route, 504, "timeout", started)
        except aiohttp.ClientError as exc:
            return self._upstream_error(route, 502, type(exc).__name__, started)
        self.metrics.upstream_duration.observe(time.perf_counter() - started)
        try:
            return await self._relay(request, upstream, fwd.set_cookies)
        finally:
            upstream.release()

    async def _relay(
        self, request: web.Request, upstream: aiohttp.ClientResponse, set_cookies: list[str]
    ) -> web.StreamResponse:
        response = web.StreamResponse(status=upstream.status, reason=upstream.reason)
        response.headers.extend(response_headers(upstream.headers.items(), set_cookies))
        if set_cookies:
            # No shared cache may store a response that carries a user's tokens.
            response.headers["Cache-Control"] = "private, no-store"
        await response.prepare(request)
        try:
            async for chunk in upstream.content.iter_chunked(_COPY_CHUNK):
                await response.write(chunk)
        except (TimeoutError, aiohttp.ClientPayloadError, aiohttp.ClientConnectionError) as exc:
            # The status line is gone already: the only honest signal left is to break the
            # connection, so the client sees a truncated response instead of a complete one.
            self.log.warning("upstream_error", error=type(exc).__name__, phase="body", path=request.path)
            if request.transport is not None:
                request.transport.close()
            return response
        await response.write_eof()
        return response

    def _upstream_error(self, route: Route, status: int, error: str, started: float) -> web.Response:
        self.log.warning(
            "upstream_error",
            route=route.match,
            upstream=route.upstream,
            status=status,
            error=error,
            duration_ms=round((time.perf_counter() - started) * 1000, 1),
        )
        text = "upstream timed out" if status == 504 else "upstream unreachable"
        return web.Response(status=status, text=f"cookieguard: {text}\n")

    async def forward_websocket(self, request: web.Request, route: Route) -> web.StreamResponse:
        url = _upstream_url(route, request)
        url = url.with_scheme("wss" if url.scheme == "https" else "ws")
        headers = upstream_request_headers(request, route, None)
        for name in list(headers):
            if name.lower() in _WS_HANDSHAKE:
                del headers[name]
        protocols = [
            p.strip() for p in request.headers.get("Sec-WebSocket-Protocol", "").split(",") if p.strip()
        ]
        try:
            upstream_ws = await self.upstream.ws_connect(
                url, headers=headers, protocols=protocols, autoclose=False, autoping=False
            )
        except (TimeoutError, aiohttp.ServerTimeoutError):
            return self._upstream_error(route, 504, "timeout", time.perf_counter())
        except aiohttp.WSServerHandshakeError as exc:
            return web.Response(
                status=exc.status or 502, text="cookieguard: upstream refused the WebSocket\n"
            )
        except aiohttp.ClientError as exc:
            return self._upstream_error(route, 502, type(exc).__name__, time.perf_counter())
        client_ws = web.WebSocketResponse(
            protocols=[upstream_ws.protocol] if upstream_ws.protocol else (), autoclose=False, autoping=False
        )
        await client_ws.prepare(request)
        try:
            await _pump_websockets(client_ws, upstream_ws)
        finally:
            await upstream_ws.close()
            await client_ws.close()
        return client_ws


async def _pump_websockets(client: web.WebSocketResponse, upstream: aiohttp.ClientWebSocketResponse) -> None:
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


def _is_websocket(request: web.Request) -> bool:
    return (
        request.headers.get("Upgrade", "").lower() == "websocket"
        and "upgrade" in request.headers.get("Connection", "").lower()
    )


def _upstream_url(route: Route, request: web.Request) -> URL:
    # raw_path keeps the client's encoding (%2F, %20, unicode escapes) and the query string.
    return URL(route.upstream.rstrip("/") + request.raw_path, encoded=True)


def _connection_tokens(values: Iterable[str]) -> set[str]:
    return {token.strip().lower() for value in values for token in value.split(",") if token.strip()}


def upstream_request_headers(
    request: web.Request, route: Route, cookie_header: str | None
) -> CIMultiDict[str]:
    """The client's headers minus hop-by-hop ones, plus X-Forwarded-*; Cookie replaced if given."""
    named_by_connection = _connection_tokens(request.headers.getall("Connection", ()))
    headers: CIMultiDict[str] = CIMultiDict()
    cookies: list[str] = []
    forwarded_for = forwarded_proto = forwarded_host = None
    for name, value in request.headers.items():
        lname = name.lower()
        if lname in HOP_BY_HOP or lname in named_by_connection or lname.startswith("proxy-"):
            continue
        if lname == "cookie":
            cookies.append(value)
        elif lname == "host":
            if route.preserve_host:
                headers.add(name, value)
        elif lname == "x-forwarded-for":
            forwarded_for = f"{forwarded_for}, {value}" if forwarded_for else value
        elif lname == "x-forwarded-proto":
            forwarded_proto = f"{forwarded_proto}, {value}" if forwarded_proto else value
        elif lname == "x-forwarded-host":
            forwarded_host = f"{forwarded_host}, {value}" if forwarded_host else value
        else:
            headers.add(name, value)
    if cookie_header is not None:
        if cookie_header:
            headers["Cookie"] = cookie_header
    elif cookies:
        headers["Cookie"] = "; ".join(cookies)
    peer = request.remote or "unknown"
    headers["X-Forwarded-For"] = f"{forwarded_for}, {peer}" if forwarded_for else peer
    headers["X-Forwarded-Proto"] = (
        f"{forwarded_proto}, {request.scheme}" if forwarded_proto else request.scheme
    )
    host = request.headers.get("Host")
    if host:
        headers["X-Forwarded-Host"] = f"{forwarded_host}, {host}" if forwarded_host else host
    elif forwarded_host:
        headers["X-Forwarded-Host"] = forwarded_host
    return headers


def response_headers(upstream: Iterable[tuple[str, str]], set_cookies: list[str]) -> CIMultiDict[str]:
    """The upstream's response headers minus hop-by-hop ones; Set-Cookie replaced by the merge.

    When `set_cookies` is non-empty it already holds the upstream's own Set-Cookie headers (the
    merge keeps them, byte for byte); each stays a header of its own, never joined.
    """
    pairs = list(upstream)
    named_by_connection = _connection_tokens(v for k, v in pairs if k.lower() == "connection")
    headers: CIMultiDict[str] = CIMultiDict()
    for name, value in pairs:
        lname = name.lower()
        if lname in HOP_BY_HOP or lname in named_by_connection:
            continue
        if set_cookies and lname in ("set-cookie", "cache-control"):
            continue
        headers.add(name, value)
    for value in set_cookies:
        headers.add("Set-Cookie", value)
    return headers
