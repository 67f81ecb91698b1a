"""The life of a proxied request, top to bottom (docs/behaviour.md §1).

match route -> read the session from the app's cookies -> plan (cookieguard.session.plan) -> refresh if
planned (single-flight) -> plan again with the result -> forward with the Cookie header the plan
wrote, streaming both bodies -> merge the plan's Set-Cookies into whatever the upstream answers
-> respond. Which headers cross is cookieguard.edge.headers; WebSockets are cookieguard.edge.websocket.
"""

from __future__ import annotations

import asyncio
import functools
import time
from collections.abc import AsyncIterator

import aiohttp
from aiohttp import web
from yarl import URL

from cookieguard.config import Config, Route
from cookieguard.cookies import SetCookie
from cookieguard.edge.client import client_address
from cookieguard.edge.headers import (
    CookieTooLarge,
    is_navigation,
    response_headers,
    upstream_request_headers,
)
from cookieguard.edge.routing import Router, Target, parse_target
from cookieguard.edge.upstream import (
    Origin,
    UpstreamBusy,
    UpstreamClient,
    UpstreamError,
    UpstreamResponse,
    UpstreamTimeout,
)
from cookieguard.edge.websocket import forward_websocket, is_websocket
from cookieguard.logs import bind_request, end_request, get_logger, log_access
from cookieguard.metrics import Metrics
from cookieguard.session.layouts import Session
from cookieguard.session.merge import NOTHING, merge_answer
from cookieguard.session.plan import Answer, Forward, Plan, Refresh, SessionCheck
from cookieguard.session.repair import Auth, Judged, Pacer, SessionRepair
from cookieguard.vocabulary import CheckReason, ForwardReason

__all__ = ["Auth", "Pacer", "Proxy", "SessionCheck"]

UNCHANGED = Forward(ForwardReason.UNCHANGED)


class Proxy:
    def __init__(
        self,
        config: Config,
        upstream: UpstreamClient,
        websockets: aiohttp.ClientSession,
        metrics: Metrics,
        auth: Auth | None = None,
    ) -> None:
        self.config = config
        self.auth = auth
        self.repair = SessionRepair(config, auth, metrics) if auth is not None else None
        self.router = Router(config.routes)
        self.upstream = upstream
        self.websockets = websockets  # WebSocket upgrades go through aiohttp's client
        self.metrics = metrics
        self.log = get_logger()
        self.access_log = config.logging.access_log
        self._origins = {r.match: Origin.parse(r.upstream) for r in config.routes if r.upstream}
        self._read_timeouts = {r.match: r.timeout_s or config.timeouts.upstream_read_s for r in config.routes}
        # Answers larger than limits.response_buffer still being sent, per client address: each
        # holds an upstream connection until its client has taken it (docs/proxy.md "The proxy").
        self._streaming: dict[str, int] = {}
        limits = config.limits
        self._share = limits.upstream_connections_per_address or max(1, limits.upstream_connections // 2)

    async def handle(self, request: web.Request) -> web.StreamResponse:
        started = time.perf_counter() if self.access_log else 0.0
        target = parse_target(request.raw_path)
        route = self.router.match(target.path) if target is not None else None
        context = bind_request(route=route.match if route else None)  # every log line of this request
        try:
            if target is None:
                response: web.StreamResponse = web.Response(
                    status=400, text="cookieguard: bad request target\n"
                )
            elif route is None:
                response = web.Response(status=404, text="cookieguard: no route for this path\n")
            elif is_websocket(request):
                response = await self.forward_websocket(request, route, target)
            else:
                plan: Plan = UNCHANGED
                judged: Judged | None = None
                repair = self.repair
                cookie_header = request.headers.get("Cookie", "")
                # No Cookie header, no session: nothing to read or plan (the plan would say
                # `no_session` and forward unchanged, after a coroutine and a clock read).
                if cookie_header and route.refresh and repair is not None:
                    # Read the session and plan; a fresh session costs a cached read and a cached verdict.
                    plan, judged = await repair.plan(cookie_header)
                    if isinstance(plan, Refresh):
                        # Only a due session pays for its address.
                        plan = await repair.refresh(
                            judged,
                            plan,
                            self.client_address(request),
                            is_navigation=is_navigation(request.headers),
                        )
                if isinstance(plan, Answer):
                    response = _answer(plan)
                else:
                    assert isinstance(plan, Forward)
                    # forward, merge, respond
                    response = await self.forward(request, route, plan, target, judged)
            if route is not None:
                self.metrics.count_request(route.match, response.status)
            if self.access_log:
                log_access(
                    self.log,
                    request.method,
                    target.path if target is not None else None,
                    response.status,
                    started,
                )
            return response
        finally:
            # aiohttp handles a kept-alive connection's requests in one task: the next request
            # on it must not carry this one's fields.
            end_request(context)

    async def check_session(self, request: web.Request) -> SessionCheck:
        """The session endpoint's report (docs/operations.md "Session endpoint"): the session repaired exactly
        as a proxied request's would be, logged under the endpoint's own path."""
        if self.repair is None:
            return SessionCheck(authenticated=False, reason=CheckReason.NO_PROVIDER)
        context = bind_request(route=self._session_route)
        try:
            return await self.repair.check(
                request.headers.get("Cookie", ""), functools.partial(self.client_address, request)
            )
        finally:
            end_request(context)

    def client_address(self, request: web.Request) -> str:
        return client_address(
            request.remote, request.headers.getall("X-Forwarded-For", ()), self.config.limits.trusted_proxies
        )

    @functools.cached_property
    def _session_route(self) -> str:
        return f"{self.config.admin_prefix}/session"

    async def forward_websocket(
        self, request: web.Request, route: Route, target: Target
    ) -> web.StreamResponse:
        try:
            forwarded = upstream_request_headers(
                request,
                route,
                None,
                trusted=self.config.limits.trusted_proxies,
                authority=target.authority,
                max_cookie_size=self.config.limits.max_cookie_size,
            )
        except CookieTooLarge:
            return _cookie_too_large()

        def upstream_error(status: int, error: str) -> web.Response:
            return self._upstream_error(route, status, error, time.perf_counter())

        origin = self._origins.get(route.match)
        if origin is None:
            return upstream_error(502, "no_upstream")
        return await forward_websocket(
            request,
            self.websockets,
            _upstream_url(route, target),
            forwarded,
            upstream_error,
            functools.partial(self.upstream.reserve, origin),
            self.config.timeouts.websocket_idle_s,
        )

    async def forward(
        self, request: web.Request, route: Route, plan: Forward, target: Target, judged: Judged | None = None
    ) -> web.StreamResponse:
        """Forward as planned; `judged`: what the plan read, None when the route skipped the session."""
        origin = self._origins.get(route.match)
        if origin is None:
            return self._upstream_error(route, 502, "no_upstream", time.perf_counter())
        try:
            headers = upstream_request_headers(
                request,
                route,
                plan.cookie_header,
                trusted=self.config.limits.trusted_proxies,
                authority=target.authority,
                max_cookie_size=self.config.limits.max_cookie_size,
            )
        except CookieTooLarge:
            return _cookie_too_large()
        body: BufferedBody | None = None
        content_length = request.content_length
        if request.body_exists:
            timeouts = self.config.timeouts
            deadline = asyncio.get_running_loop().time() + (route.client_body_s or timeouts.client_body_s)
            try:
                body = await BufferedBody.read(
                    IdleLimitedBody(request.content, timeouts.client_body_idle_s, deadline),
                    self.config.limits.request_buffer,
                )
            except ClientBodyStalled:
                return await self._client_body_timeout(request, route)
            if body.complete:
                content_length = body.size  # read whole: framed with its length, chunked or not
        share: _Share | None = None
        if body is not None and not body.complete:
            # A body larger than request_buffer streams, holding its upstream connection while
            # the client sends: it counts against its address's share like a large answer.
            share = _Share(self, request)
            if not share.claim("body"):
                # Nothing is sent yet: a 503, as nginx's limit_conn answers (docs/proxy.md).
                refused = web.Response(status=503, text="cookieguard: too many uploads from this address\n")
                return await self._close_after(request, refused)
        started = time.perf_counter()
        try:
            try:
                upstream = await self.upstream.request(
                    origin,
                    request.method,
                    target.forward,  # the path the route matched, in the client's encoding, and the query
                    headers,
                    body=body,
                    content_length=content_length,
                    read_timeout_s=self._read_timeouts[route.match],
                )
            except UpstreamTimeout as exc:
                return self._upstream_error(route, 504, exc.reason, started)
            except UpstreamBusy as exc:
                return self._upstream_error(route, 503, exc.reason, started)
            except UpstreamError as exc:
                if body is not None and body.source.stalled:
                    return await self._client_body_timeout(request, route)
                return self._upstream_error(route, 502, exc.reason, started)
            self.metrics.upstream_answered(time.perf_counter() - started)
            try:
                return await self._relay(request, upstream, plan.set_cookies, judged, share)
            finally:
                upstream.release()
        finally:
            if share is not None:
                share.end()

    async def _client_body_timeout(self, request: web.Request, route: Route) -> web.StreamResponse:
        # The upstream request was aborted with its connection (upstream.py closes a connection
        # whose request body failed); the client's is closed as soon as the 408 is out.
        self.metrics.client_cut("body_timeout")
        self.log.info(
            "client_timeout",
            phase="body",
            timeout_s=self.config.timeouts.client_body_idle_s,
            body_timeout_s=route.client_body_s or self.config.timeouts.client_body_s,
            client=request.remote,
        )
        return await self._close_after(
            request, web.Response(status=408, text="cookieguard: request body timed out\n")
        )

    @staticmethod
    async def _close_after(request: web.Request, response: web.Response) -> web.Response:
        """Send `response` to a client whose body was not read to its end, and close: aiohttp
        would otherwise linger, reading the rest of a body that is not wanted (or not coming)."""
        response.force_close()
        try:
            await response.prepare(request)
            await response.write_eof()
        except ConnectionResetError:
            pass
        request.protocol.force_close()
        return response

    async def _relay(
        self,
        request: web.Request,
        upstream: UpstreamResponse,
        ours: tuple[SetCookie, ...],
        judged: Judged | None,
        share: _Share | None = None,
    ) -> web.StreamResponse:
        """`share`: a streaming upload's claim on its address's share, held while the answer
        still holds the upstream connection."""
        response = _RelayedResponse(status=upstream.status, reason=upstream.reason or None)
        merged = NOTHING
        auth = self.auth
        if auth is not None:
            theirs = upstream.set_cookies
            if theirs or ours:
                session = judged.session if judged is not None else self._unplanned_session(request, theirs)
                merged = merge_answer(
                    theirs, ours, session, auth.layout, self.config.cookies.attributes, auth.wall_clock()
                )
        response.headers.extend(
            response_headers(
                upstream.headers, upstream.connection, merged.set_cookies, private=merged.private
            )
        )
        if merged.private:
            # docs/behaviour.md §4: no shared cache may store a response that carries tokens.
            response.headers["Cache-Control"] = "private, no-store"
        # Otherwise made only for an answer still on its connection after a chunk.
        try:
            await response.prepare(request)
            body = upstream.take_whole()
            if body is not None:
                # The whole answer is in (most are): head and body go out in one write.
                await response.write_eof(body)
                return response
            if not upstream.ready():
                # Nothing of the body is here yet (a slow app, an event stream): the client gets
                # the head now, not when the first chunk comes.
                await response.write(b"")
            while chunk := await upstream.read():
                await response.write(chunk)
                if share is None:
                    if upstream.held():
                        # More is coming on the connection: should the answer outgrow the buffer,
                        # it counts against its client's share (the fast path never gets here).
                        share = _Share(self, request)
                        upstream.watch(share.outgrown)
                elif not upstream.held():
                    share.end()  # the rest is buffered: the connection is back in the pool
            await response.write_eof()
        except UpstreamError as exc:
            # The status line is gone already: the only honest signal left is to break the
            # connection, so the client sees a truncated response instead of a complete one.
            self.log.warning("upstream_error", error=exc.reason, phase="body", path=request.path)
            if request.transport is not None:
                request.transport.close()
        except ConnectionResetError:
            pass  # the client went away mid-answer (a closed tab): not an error of ours to log
        finally:
            if share is not None:
                share.end()
        return response

    def _unplanned_session(self, request: web.Request, theirs: list[str]) -> Session | None:
        """The session of a request whose route skipped it (`refresh: false`), read only when the
        app sets cookies: its sign-out holds there too (docs/behaviour.md §4)."""
        assert self.auth is not None
        cookie_header = request.headers.get("Cookie", "")
        return self.auth.sessions.read(cookie_header) if theirs and cookie_header else None

    def _upstream_error(self, route: Route, status: int, error: str, started: float) -> web.Response:
        self.log.warning(
            "upstream_error",
            upstream=route.upstream,
            status=status,
            error=error,
            duration_ms=round((time.perf_counter() - started) * 1000, 1),
        )
        text = {503: "upstream busy", 504: "upstream timed out"}.get(status, "upstream unreachable")
        return web.Response(status=status, text=f"cookieguard: {text}\n")


class _Share:
    """One request's claim on its client address's share of the upstream pool
    (`limits.upstream_connections_per_address`): taken by a request body larger than
    `limits.request_buffer` before its connection is (it streams while the client sends), or
    by an answer when it outgrows `limits.response_buffer` (it holds its connection until the
    client takes the rest). Held until the connection is released or the answer is whole in
    the buffer."""

    __slots__ = ("_address", "_proxy", "_request")

    def __init__(self, proxy: Proxy, request: web.Request) -> None:
        self._proxy = proxy
        self._request = request
        self._address: str | None = None

    def claim(self, phase: str) -> bool:
        """Count the request against its address's share; False (logged and counted) when the
        share is full: the caller refuses the upload or cuts the answer's client."""
        proxy = self._proxy
        address = proxy.client_address(self._request)
        held = proxy._streaming.get(address, 0)
        if held >= proxy._share:
            proxy.metrics.client_cut("address_share")
            proxy.log.info("client_timeout", phase=phase, reason="address_share", client=address)
            return False
        proxy._streaming[address] = held + 1
        self._address = address
        return True

    def outgrown(self) -> None:
        # Past the share, the client is cut (its head is out already: nothing else to say), so
        # slow readers from one address cannot take the connections another address needs.
        # An upload's answer is counted already.
        transport = self._request.transport
        if self._address is not None or transport is None:
            return
        if not self.claim("write"):
            transport.abort()  # the relay is cancelled; its upstream connection is closed

    def end(self) -> None:
        address, self._address = self._address, None
        if address is not None:
            streaming = self._proxy._streaming
            if streaming[address] > 1:
                streaming[address] -= 1
            else:
                del streaming[address]


class _RelayedResponse(web.StreamResponse):
    """An upstream's answer as relayed: the head goes out with the first body chunk, in one
    write instead of two (aiohttp's StreamResponse sends it on its own at `prepare`; its
    `Response` holds it back the same way). `_send_headers_immediately` is aiohttp's (3.14)
    switch between the two; `_relay` sends the head alone when no body chunk is waiting."""

    _send_headers_immediately = False


def _answer(plan: Answer) -> web.Response:
    """A planned answer without forwarding: the session is over and `on_rejected` is `login`."""
    if plan.location is not None:
        response = web.Response(status=plan.status, headers={"Location": plan.location})
    else:
        response = web.json_response({"error": "session_expired"}, status=plan.status)
    for cookie in plan.set_cookies:
        response.headers.add("Set-Cookie", cookie.header())
    response.headers["Cache-Control"] = "private, no-store"
    return response


def _cookie_too_large() -> web.Response:
    # Never quotes the header (docs/security.md "Abuse limits", limits.max_cookie_size).
    return web.Response(status=431, text="cookieguard: cookie header too large\n")


def _upstream_url(route: Route, target: Target) -> URL:
    # The normalised path in the client's encoding (%2F, %20, unicode escapes) and the query string.
    return URL(route.upstream.rstrip("/") + target.forward, encoded=True)


class ClientBodyStalled(Exception):
    """The client sent no body byte for `timeouts.client_body_idle`, or not the whole body
    within `timeouts.client_body`."""


class IdleLimitedBody:
    """The client's request body, failing when it stalls longer than `idle_s` between bytes or
    is not over by `deadline` (loop time).

    Without this, a client that trickles one byte a minute (or one just under the idle limit)
    would hold an upstream connection, and the app's worker behind it, as long as it liked.
    When it fails while streaming, upstream.py aborts the upstream request and its connection.
    """

    def __init__(self, content: aiohttp.StreamReader, idle_s: float, deadline: float) -> None:
        self._content = content
        self._idle_s = idle_s
        self._deadline = deadline
        self.stalled = False

    async def iter_any(self) -> AsyncIterator[bytes]:
        content = self._content
        loop = asyncio.get_running_loop()
        while True:
            try:
                async with asyncio.timeout_at(min(loop.time() + self._idle_s, self._deadline)):
                    chunk = await content.readany()
            except TimeoutError:
                self.stalled = True
                raise ClientBodyStalled from None
            if not chunk:
                return
            yield chunk


class BufferedBody:
    """A request body read whole, up to `limits.request_buffer`, before an upstream connection
    is taken (docs/security.md "Abuse limits"): a slow sender holds none. A larger body is handed over as
    what was read plus the rest, streamed (under the same deadlines)."""

    def __init__(
        self, source: IdleLimitedBody, chunks: list[bytes], rest: AsyncIterator[bytes] | None
    ) -> None:
        self.source = source
        self._chunks = chunks
        self._rest = rest
        self.size = sum(map(len, chunks))
        self.complete = rest is None

    @classmethod
    async def read(cls, source: IdleLimitedBody, limit: int) -> BufferedBody:
        """Raises ClientBodyStalled when the client is too slow while it is read."""
        chunks: list[bytes] = []
        size = 0
        stream = source.iter_any()
        while size <= limit:
            chunk = await anext(stream, None)
            if chunk is None:
                return cls(source, chunks, None)
            chunks.append(chunk)
            size += len(chunk)
        return cls(source, chunks, stream)

    async def iter_any(self) -> AsyncIterator[bytes]:
        for chunk in self._chunks:
            yield chunk
        if self._rest is not None:
            async for chunk in self._rest:
                yield chunk
