"""The life of a proxied request, top to bottom.

match route -> read the session from the app's cookies -> decide -> refresh if due (single-flight)
-> rewrite the Cookie header -> forward, streaming both bodies -> merge cookieguard's Set-Cookie
into whatever the upstream answers -> respond.
"""

from __future__ import annotations

import asyncio
import functools
import string
import time
from collections.abc import AsyncIterator, Callable, Iterable, Sequence
from dataclasses import dataclass, field

import aiohttp
from aiohttp import web
from multidict import CIMultiDict
from prometheus_client import Counter
from yarl import URL

from .claims import Claims, ClaimsReader, TokenKind, session_id
from .config import Config, IPNetwork, Route
from .cookies import SetCookie, parse_cookie_header
from .decide import Action, is_navigation, needs_refresh
from .edge import client_address, is_trusted
from .layouts import FreshTokens, Layout, Session, SessionReader
from .limits import Claimant, LogThrottle
from .logs import get_logger
from .merge import merge_set_cookies, set_cookie_key, signs_out
from .metrics import Metrics
from .refresh import FAILED, LIMITED, REFRESHED, REJECTED, Refresher, RefreshResult
from .routing import Router, Target, parse_target
from .upstream import (
    Origin,
    UpstreamBusy,
    UpstreamClient,
    UpstreamError,
    UpstreamResponse,
    UpstreamTimeout,
)
from .verifier import TokenStatus, TokenVerifier

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
# Headers cookieguard writes itself (README "The proxy"): the client's are dropped or, from a
# trusted proxy, extended; `Connection` naming one of them does not remove it.
_FORWARDING = frozenset(
    {"x-forwarded-for", "x-forwarded-proto", "x-forwarded-host", "forwarded", "x-real-ip"}
)
_OURS = _FORWARDING | {"host", "cookie"}


@dataclass
class Forwarding:
    """What session repair decided about one request before it is forwarded."""

    cookie_header: str | None = None  # None: forward the client's Cookie header as it came
    set_cookies: list[SetCookie] = field(default_factory=list)  # ours, merged after the upstream answers
    response: web.StreamResponse | None = None  # answer without forwarding (e.g. 401, 302 to login)
    outcome: str | None = None  # the refresh outcome, when a refresh was attempted


UNCHANGED = Forwarding()


@dataclass
class SessionCheck:
    """What the session endpoint reports. Holds no token: Set-Cookie headers only."""

    authenticated: bool
    user: str | None = None
    expires_at: float | None = None  # the access token's `exp`, epoch seconds
    refreshed: bool = False
    # ok | refreshed | no_session | expired | rejected | invalid_token | refresh_unavailable | limited
    # | no_provider
    reason: str = "ok"
    set_cookies: list[str] = field(default_factory=list, repr=False)


@dataclass(frozen=True)
class Proof:
    """Whether a session is proven (README "Abuse limits"): one of its access or id tokens
    verifies against the IdP's keys for this client (expired is fine). `subject` and `user` come
    from that token only; `reason` says why a session is not proven."""

    subject: str | None = None
    user: str | None = None
    reason: str = "ok"  # ok | no_token | not_verified (verify.signature false) | <token check reason>

    @property
    def proven(self) -> bool:
        return self.subject is not None


def reported_user(claims: Claims) -> str | None:
    """The user a verified token names: Cognito's `username` (access) / `cognito:username` (id),
    else OIDC's `preferred_username` (claims.claims_from picks them in that order), else `sub`."""
    return claims.username or claims.sub


@dataclass
class Auth:
    """What session repair needs; absent when no provider is configured."""

    layout: Layout
    refresher: Refresher
    verifier: TokenVerifier | None  # None: verify.signature is false
    claims: ClaimsReader  # the process's claims memo, shared with the verifier
    wall_clock: Callable[[], float] = time.time
    sessions: SessionReader = field(init=False)
    # One `outcome: limited` line per budget and address or subject per minute (README "Logs").
    limited_log: LogThrottle = field(default_factory=LogThrottle)

    def __post_init__(self) -> None:
        self.sessions = SessionReader(self.layout)


# Requests per event-loop turn that may start a signature check or a refresh. bench/README.md,
# "refresh storm": fresh sessions' p99 during a 1,000-session storm was 71-81 ms unpaced, 23-43 ms
# at 4, 42 ms at 8, 34 ms at 2 (single runs, noisy); the storm took no longer.
PACE_PER_TURN = 4


class Pacer:
    """Lets at most `per_turn` callers through per event-loop turn; the others wait their turn.

    A burst of requests that all need expensive work (a thousand expired sessions at once: a
    signature check and an IdP call each) would otherwise run in one turn of the event loop and
    hold up every other request, including fresh sessions that need nothing, for that long.
    Paced, each turn does a bounded amount of that work and the cheap requests go in between.
    """

    def __init__(self, per_turn: int) -> None:
        self._slots = asyncio.Semaphore(per_turn)

    async def turn(self) -> None:
        await self._slots.acquire()
        asyncio.get_running_loop().call_soon(self._slots.release)


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
        self.router = Router(config.routes)
        self.upstream = upstream
        self.websockets = websockets  # WebSocket upgrades go through aiohttp's client
        self.metrics = metrics
        self.log = get_logger()
        self.access_log = config.logging.access_log
        self._requests_counters: dict[tuple[str, int], Counter] = {}
        self._pacer = Pacer(PACE_PER_TURN)
        self._origins = {r.match: Origin.parse(r.upstream) for r in config.routes if r.upstream}
        self._read_timeouts = {r.match: r.timeout_s or config.timeouts.upstream_read_s for r in config.routes}

    async def handle(self, request: web.Request) -> web.StreamResponse:
        started = time.perf_counter() if self.access_log else 0.0
        target = parse_target(request.raw_path)
        route = self.router.match(target.path) if target is not None else None
        if target is None:
            response: web.StreamResponse = web.Response(status=400, text="cookieguard: bad request target\n")
        elif route is None:
            response = web.Response(status=404, text="cookieguard: no route for this path\n")
        elif _is_websocket(request):
            response = await self.forward_websocket(request, route, target)
        else:
            fwd = await self.repair_session(request, route) if route.refresh and self.auth else UNCHANGED
            response = await self.forward(request, route, fwd, target)
        if route is not None:
            self._count_request(route.match, response.status)
        if self.access_log:
            self.log.info(
                "access",
                method=request.method,
                path=target.path if target is not None else None,
                status=response.status,
                duration_ms=round((time.perf_counter() - started) * 1000, 2),
                route=route.match if route else None,
            )
        return response

    def _count_request(self, route: str, status: int) -> None:
        # prometheus-client's labels() costs a lock and a few allocations per call; the children
        # are few (routes x statuses seen), so look each up once.
        counter = self._requests_counters.get((route, status))
        if counter is None:
            counter = self.metrics.requests_total.labels(route=route, status=str(status))
            self._requests_counters[(route, status)] = counter
        counter.inc()

    async def repair_session(self, request: web.Request, route: Route) -> Forwarding:
        """Read the app's auth cookies; when the access token is due, refresh it (once per session)."""
        assert self.auth is not None
        header = request.headers.get("Cookie")
        if not header:
            return UNCHANGED
        # Only the auth cookies are parsed here, once per distinct header; the whole header only
        # when it must be rewritten.
        session = self.auth.sessions.read(header)
        if session is None or not session.refresh_token:
            return UNCHANGED
        lifetime = await self._access_lifetime(session)
        if lifetime is None:
            return UNCHANGED  # a token that fails verification is no session: never refresh it
        issued_at, access_expires_at = lifetime
        now = self.auth.wall_clock()
        action = needs_refresh(
            has_refresh_token=True,
            access_expires_at=access_expires_at,
            access_issued_at=issued_at,
            now_s=now,
            before_expiry_s=self.config.refresh.before_expiry_s,
            clock_drift_ms=session.clock_drift_ms,
        )
        if action is Action.FORWARD:
            return UNCHANGED
        await self._pacer.turn()
        # Off the fast path: only a session that is due pays for its proof and its address.
        proof = await self.prove(session)
        address = client_address(
            request.remote, request.headers.getall("X-Forwarded-For", ()), self.config.limits.trusted_proxies
        )
        result = await self.auth.refresher.refresh(
            session.refresh_token,
            # Cognito's SECRET_HASH is computed over the username the cookies name (docs/behaviour.md §5).
            username=session.user,
            device_key=session.device_key,
            claimant=Claimant(address, proof.subject),
        )
        fresh = self._fresh_tokens(session, result, now)
        self._log_refresh(route, session, result, access_expires_at, fresh, proof, address)
        cookies = parse_cookie_header(header)
        if fresh is not None:
            return Forwarding(
                cookie_header=self.auth.layout.cookie_header(cookies, session, fresh),
                set_cookies=self.auth.layout.set_cookies(session, fresh, self.config.cookies.attributes),
                outcome=result.outcome,
            )
        if result.outcome != REJECTED or self.config.refresh.on_rejected == "pass":
            # IdP trouble never signs a user out: forward as the request came
            return Forwarding(outcome=result.outcome)
        clear = self.auth.layout.clear_cookies(session, self.config.cookies.attributes)
        if self.config.refresh.on_rejected == "login":
            return Forwarding(response=self._sign_in_again(request, clear), outcome=result.outcome)
        return Forwarding(
            cookie_header=self.auth.layout.stripped_cookie_header(cookies, session),
            set_cookies=clear,
            outcome=result.outcome,
        )

    async def check_session(self, request: web.Request) -> SessionCheck:
        """The session endpoint: repair the session exactly as a proxied request would, then report.

        The request is never forwarded; the Set-Cookie headers session repair decided on (fresh
        tokens, or expired auth cookies for a dead session) go back to the browser with the report.
        """
        if self.auth is None:
            return SessionCheck(authenticated=False, reason="no_provider")
        fwd = await self.repair_session(request, self._session_route)
        if fwd.outcome == REJECTED and self.config.refresh.on_rejected != "pass":
            # The session is over; the answer carries the expired auth cookies (with `login`
            # they sit on the 401/302 repair_session prepared, which is not sent from here).
            if fwd.response is not None:
                set_cookies = fwd.response.headers.getall("Set-Cookie", [])
            else:
                set_cookies = [cookie.header() for cookie in fwd.set_cookies]
            before = self.auth.layout.read(parse_cookie_header(request.headers.get("Cookie", "")))
            user = await self._user(before) if before else None
            return SessionCheck(False, user, reason="rejected", set_cookies=set_cookies)
        set_cookies = [cookie.header() for cookie in fwd.set_cookies]
        header = fwd.cookie_header if fwd.cookie_header is not None else request.headers.get("Cookie", "")
        session = self.auth.layout.read(parse_cookie_header(header)) if header else None
        if session is None:
            return SessionCheck(authenticated=False, reason="no_session")
        lifetime = await self._access_lifetime(session)
        user = await self._user(session)
        if lifetime is None:
            return SessionCheck(authenticated=False, user=user, reason="invalid_token")
        expires_at = lifetime[1]
        if expires_at == float("inf"):
            expires_at = None  # an opaque token cookieguard never saw issued: its expiry is unknown
        expired = expires_at is not None and expires_at <= self.auth.wall_clock()
        if fwd.outcome in (FAILED, LIMITED) and session.refresh_token:
            # The IdP could not answer, or a budget held the call back: the session is not over,
            # it will be refreshed on a later request.
            reason = "limited" if fwd.outcome == LIMITED else "refresh_unavailable"
            return SessionCheck(True, user, expires_at, reason=reason)
        if fwd.outcome == REJECTED:  # on_rejected: pass; the token lives until it expires
            return SessionCheck(not expired, user, expires_at, reason="rejected")
        if expired or (expires_at is None and not session.access_token):
            return SessionCheck(False, user, expires_at, reason="expired")
        refreshed = bool(set_cookies)
        return SessionCheck(
            True,
            user,
            expires_at,
            refreshed=refreshed,
            reason="refreshed" if refreshed else "ok",
            set_cookies=set_cookies,
        )

    @functools.cached_property
    def _session_route(self) -> Route:
        # Refreshes made for the session endpoint are logged and counted under its own path.
        return Route(match=f"{self.config.admin_prefix}/session", upstream="")

    async def prove(self, session: Session) -> Proof:
        """Is the session proven? Verdicts are cached by the verifier: a token seen before costs
        a dictionary lookup. An UNKNOWN token (JWKS unreachable) proves nothing."""
        assert self.auth is not None
        verifier = self.auth.verifier
        if verifier is None:
            return Proof(reason="not_verified")
        reason = "no_token"
        candidates: tuple[tuple[str | None, TokenKind], ...] = (
            (session.access_token, "access"),
            (session.id_token, "id"),
        )
        for token, kind in candidates:
            if not token:
                continue
            check = verifier.peek(token, kind)
            if check is None:
                check = await verifier.check(token, kind=kind)
            if check.status is TokenStatus.VALID and check.claims is not None and check.claims.sub:
                return Proof(check.claims.sub, reported_user(check.claims))
            reason = check.reason if check.status is not TokenStatus.VALID else "no_sub"
        return Proof(reason=reason)

    async def _user(self, session: Session) -> str | None:
        """The user to report: from a verified token; the cookies' name only when nothing can
        be verified (`verify.signature: false`). A token of one user under another's name
        reports the token's user."""
        proof = await self.prove(session)
        if proof.proven or proof.reason == "not_verified":
            return proof.user or session.user
        return None

    async def _access_lifetime(self, session: Session) -> tuple[float | None, float | None] | None:
        """(issued_at, expires_at) of the access token; (None, None) when it is absent; None when
        it fails verification (then the session is not trusted and never refreshed)."""
        assert self.auth is not None
        token = session.access_token
        if not token:
            return None, None  # absent but refreshable
        verifier = self.auth.verifier
        if verifier is None:
            claims = self.auth.claims.read(token)
            if claims is None:
                opaque = self.config.provider is not None and self.config.provider.opaque_access_tokens
                return self._opaque_lifetime(token) if opaque else None
            return claims.iat, claims.exp
        check = verifier.peek(token, "access")
        if check is None:
            await self._pacer.turn()  # a token not seen before costs a signature check
            check = await verifier.check(token, kind="access")
        if check.status is TokenStatus.INVALID:
            return None
        if check.status is TokenStatus.OPAQUE:
            return self._opaque_lifetime(token)
        # VALID, or UNKNOWN (the JWKS cannot be fetched right now: the IdP will judge the refresh).
        return (check.claims.iat, check.claims.exp) if check.claims else (None, None)

    def _opaque_lifetime(self, token: str) -> tuple[float | None, float | None]:
        # An opaque token's lifetime is known only from a token response we saw ourselves
        # (docs/behaviour.md §2: expires_in); one we never saw is treated as not due: the app's
        # own login just issued it.
        assert self.auth is not None
        return self.auth.refresher.opaque_lifetime(token) or (None, float("inf"))

    def _fresh_tokens(self, session: Session, result: RefreshResult, now: float) -> FreshTokens | None:
        tokens = result.tokens
        if tokens is None or session.refresh_token is None:
            return None
        assert self.auth is not None
        claims = self.auth.claims.read(tokens.access_token)
        if claims is None and tokens.expires_in_s is not None:
            self.auth.refresher.note_opaque_lifetime(tokens.access_token, now, now + tokens.expires_in_s)
        drift = round(claims.iat * 1000 - now * 1000) if claims and claims.iat else session.clock_drift_ms
        return FreshTokens(
            access_token=tokens.access_token,
            id_token=tokens.id_token or session.id_token,
            refresh_token=tokens.refresh_token or session.refresh_token,
            clock_drift_ms=drift,
            expires_in_s=tokens.expires_in_s,
        )

    def _sign_in_again(self, request: web.Request, clear: list[SetCookie]) -> web.StreamResponse:
        if is_navigation(request.headers):
            response: web.StreamResponse = web.Response(
                status=302, headers={"Location": self.config.refresh.login_url}
            )
        else:
            response = web.json_response({"error": "session_expired"}, status=401)
        for cookie in clear:
            response.headers.add("Set-Cookie", cookie.header())
        response.headers["Cache-Control"] = "private, no-store"
        return response

    def _log_refresh(
        self,
        route: Route,
        session: Session,
        result: RefreshResult,
        old_exp: float | None,
        fresh: FreshTokens | None,
        proof: Proof,
        address: str,
    ) -> None:
        assert self.auth is not None
        self.metrics.refresh_total.labels(outcome=result.outcome).inc()
        if result.outcome == REFRESHED:
            self.metrics.refresh_duration.observe(result.duration_ms / 1000)
        new_claims = self.auth.claims.read(fresh.access_token) if fresh else None
        # The user a verified token names; else the one the IdP's fresh token names (it came from
        # the IdP itself); the cookies' name only when nothing can be verified.
        user = proof.user
        if user is None and new_claims is not None:
            user = reported_user(new_claims)
        if user is None and proof.reason == "not_verified":
            user = session.user
        extra: dict[str, object] = {}
        if result.outcome == LIMITED:
            # A spray must not flood the logs: one line per budget and subject or address a minute.
            who = f"subject:{proof.subject}" if proof.proven else f"address:{address}"
            if not self.auth.limited_log.allow(f"{result.error}|{who}", self.auth.wall_clock()):
                return
            # The address is logged as it is: operators need it to act, and it is no credential.
            extra = {"limit": result.error, "address": address}
        log = self.log.warning if result.outcome in (FAILED, LIMITED) else self.log.info
        log(
            "token_refresh",
            outcome=result.outcome,
            route=route.match,
            session=session_id(session.refresh_token or ""),
            user=user,
            proven=proof.proven,
            **extra,
            old_exp=int(old_exp) if old_exp and old_exp != float("inf") else None,
            new_exp=int(new_claims.exp) if new_claims and new_claims.exp else None,
            duration_ms=result.duration_ms,
            idp_status=result.idp_status,
            error=result.error,
            rotated=bool(result.tokens and result.tokens.rotated),
        )

    async def forward(
        self, request: web.Request, route: Route, fwd: Forwarding, target: Target
    ) -> web.StreamResponse:
        if fwd.response is not None:
            return fwd.response
        origin = self._origins.get(route.match)
        if origin is None:
            return self._upstream_error(route, 502, "no_upstream", time.perf_counter())
        headers = upstream_request_headers(
            request,
            route,
            fwd.cookie_header,
            trusted=self.config.limits.trusted_proxies,
            authority=target.authority,
        )
        body = (
            IdleLimitedBody(request.content, self.config.timeouts.client_body_idle_s)
            if request.body_exists
            else None
        )
        started = time.perf_counter()
        try:
            upstream = await self.upstream.request(
                origin,
                request.method,
                target.forward,  # the path the route matched, in the client's encoding, and the query
                headers,
                body=body,
                content_length=request.content_length,
                read_timeout_s=self._read_timeouts[route.match],
            )
        except UpstreamTimeout as exc:
            return self._upstream_error(route, 504, exc.reason, started)
        except UpstreamBusy as exc:
            return self._upstream_error(route, 503, exc.reason, started)
        except UpstreamError as exc:
            if body is not None and body.stalled:
                return await self._client_body_timeout(request, route)
            return self._upstream_error(route, 502, exc.reason, started)
        self.metrics.upstream_duration.observe(time.perf_counter() - started)
        try:
            return await self._relay(request, upstream, fwd.set_cookies)
        finally:
            upstream.release()

    async def _client_body_timeout(self, request: web.Request, route: Route) -> web.StreamResponse:
        # The upstream request was aborted with its connection (upstream.py closes a connection
        # whose request body failed). The client's connection is closed as soon as the 408 is
        # out: aiohttp would otherwise linger, reading the rest of a body that is not coming.
        self.log.info(
            "client_timeout",
            phase="body",
            route=route.match,
            timeout_s=self.config.timeouts.client_body_idle_s,
            client=request.remote,
        )
        response = web.Response(status=408, text="cookieguard: request body timed out\n")
        response.force_close()
        try:
            await response.prepare(request)
            await response.write_eof()
        except ConnectionResetError:
            pass
        request.protocol.force_close()
        return response

    async def _relay(
        self, request: web.Request, upstream: UpstreamResponse, ours: list[SetCookie]
    ) -> web.StreamResponse:
        response = web.StreamResponse(status=upstream.status, reason=upstream.reason or None)
        theirs = (
            [value for name, value in upstream.headers if name.lower() == "set-cookie"] if self.auth else []
        )
        set_cookies: list[str] = []
        private = bool(ours)
        if theirs and self.auth is not None:
            ours, private = self._answer_cookies(request, theirs, ours)
        if ours:
            auth = self.auth
            assert auth is not None
            session = auth.sessions.read(request.headers.get("Cookie", ""))
            set_cookies = merge_set_cookies(
                theirs,
                ours,
                auth_cookies=session.cookie_names if session else (),
                now_s=auth.wall_clock(),
            )
        response.headers.extend(response_headers(upstream.headers, set_cookies, private=private))
        if private:
            # README "Guarantees": no shared cache may store a response that carries tokens.
            response.headers["Cache-Control"] = "private, no-store"
        try:
            await response.prepare(request)
            while chunk := await upstream.read():
                await response.write(chunk)
            await response.write_eof()
        except UpstreamError as exc:
            # The status line is gone already: the only honest signal left is to break the
            # connection, so the client sees a truncated response instead of a complete one.
            self.log.warning("upstream_error", error=exc.reason, phase="body", path=request.path)
            if request.transport is not None:
                request.transport.close()
        except ConnectionResetError:
            pass  # the client went away mid-answer (a closed tab): not an error of ours to log
        return response

    def _answer_cookies(
        self, request: web.Request, theirs: list[str], ours: list[SetCookie]
    ) -> tuple[list[SetCookie], bool]:
        """What we add beside the app's own Set-Cookie headers, and whether the answer is private.

        An app that clears any auth cookie of the request's session ends that session: instead of
        tokens, the rest of its auth cookies are expired too, or the refresh token left behind
        would refresh the session back on the next request (README "Guarantees"). An answer that
        sets or clears an auth cookie is private even when we add nothing.
        """
        assert self.auth is not None
        session = self.auth.sessions.read(request.headers.get("Cookie", ""))
        names = session.cookie_names if session else frozenset()
        if session is not None and signs_out(
            theirs, {*names, *(c.name for c in ours if c.value)}, self.auth.wall_clock()
        ):
            ours = self.auth.layout.clear_cookies(session, self.config.cookies.attributes)
        layout = self.auth.layout
        private = bool(ours) or any(
            name in names or bool(layout.relevant_cookies(f"{name}=x"))
            for name, _, _ in map(set_cookie_key, theirs)
        )
        return ours, private

    def _upstream_error(self, route: Route, status: int, error: str, started: float) -> web.Response:
        self.log.warning(
            "upstream_error",
            route=route.match,
            upstream=route.upstream,
            status=status,
            error=error,
            duration_ms=round((time.perf_counter() - started) * 1000, 1),
        )
        text = {503: "upstream busy", 504: "upstream timed out"}.get(status, "upstream unreachable")
        return web.Response(status=status, text=f"cookieguard: {text}\n")

    async def forward_websocket(
        self, request: web.Request, route: Route, target: Target
    ) -> web.StreamResponse:
        url = _upstream_url(route, target)
        url = url.with_scheme("wss" if url.scheme == "https" else "ws")
        forwarded = upstream_request_headers(
            request, route, None, trusted=self.config.limits.trusted_proxies, authority=target.authority
        )
        headers = CIMultiDict((name, value) for name, value in forwarded if name.lower() not in _WS_HANDSHAKE)
        protocols = [
            p.strip() for p in request.headers.get("Sec-WebSocket-Protocol", "").split(",") if p.strip()
        ]
        try:
            upstream_ws = await self.websockets.ws_connect(
                url,
                headers=headers,
                protocols=protocols,
                autoclose=False,
                autoping=False,
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


def _upstream_url(route: Route, target: Target) -> URL:
    # The normalised path in the client's encoding (%2F, %20, unicode escapes) and the query string.
    return URL(route.upstream.rstrip("/") + target.forward, encoded=True)


class ClientBodyStalled(Exception):
    """The client sent no body byte for `timeouts.client_body_idle`."""


class IdleLimitedBody:
    """The client's request body, failing when it stalls longer than `idle_s` between bytes.

    The upstream client sends the body as it comes; without this, a client that trickles one
    byte a minute would hold an upstream connection (and the app's worker behind it) as long as
    it liked. When it fails, upstream.py aborts the upstream request and its connection.
    """

    def __init__(self, content: aiohttp.StreamReader, idle_s: float) -> None:
        self._content = content
        self._idle_s = idle_s
        self.stalled = False

    async def iter_any(self) -> AsyncIterator[bytes]:
        content = self._content
        while True:
            try:
                async with asyncio.timeout(self._idle_s):
                    chunk = await content.readany()
            except TimeoutError:
                self.stalled = True
                raise ClientBodyStalled from None
            if not chunk:
                return
            yield chunk


def _connection_tokens(values: Iterable[str]) -> set[str]:
    return {token.strip().lower() for value in values for token in value.split(",") if token.strip()}


def upstream_request_headers(
    request: web.Request,
    route: Route,
    cookie_header: str | None,
    *,
    trusted: Sequence[IPNetwork] = (),
    authority: str | None = None,
) -> list[tuple[str, str]]:
    """The client's headers minus hop-by-hop ones; Cookie replaced if given; the forwarding
    headers set from the socket (README "The proxy").

    From a client that is not one of `trusted` (a load balancer in front of cookieguard), the
    client's own X-Forwarded-*, Forwarded and X-Real-IP are dropped: they would let anybody tell
    the app any address or scheme. From a trusted proxy, its X-Forwarded-For is extended with the
    peer, and its X-Forwarded-Proto/-Host and Forwarded are kept. `authority`, from an
    absolute-form request target, replaces the Host header (RFC 9112 section 3.2.2).
    """
    raw = request.headers
    named_by_connection = (
        _connection_tokens(raw.getall("Connection", ())) - _OURS if "Connection" in raw else ()
    )
    headers: list[tuple[str, str]] = []
    cookies: list[str] = []
    forwarding: dict[str, list[str]] = {}
    for name, value in raw.items():
        lname = name.lower()
        if lname in HOP_BY_HOP or lname in named_by_connection or lname.startswith("proxy-"):
            continue
        if lname == "cookie":
            cookies.append(value)
        elif lname == "host":
            continue
        elif lname in _FORWARDING:
            forwarding.setdefault(lname, []).append(value)
        else:
            headers.append((name, value))
    host = authority or raw.get("Host")
    if route.preserve_host and host:
        headers.insert(0, ("Host", host))
    if cookie_header is not None:
        if cookie_header:
            headers.append(("Cookie", cookie_header))
    elif cookies:
        headers.append(("Cookie", "; ".join(cookies)))
    peer = request.remote or "unknown"
    scheme = request.scheme
    if not is_trusted(peer, trusted):
        headers.append(("X-Forwarded-For", peer))
        headers.append(("X-Forwarded-Proto", scheme))
        if host:
            headers.append(("X-Forwarded-Host", host))
        headers.append(("X-Real-IP", peer))
        headers.append(("Forwarded", _forwarded_element(peer, scheme, host)))
        return headers
    their_for = forwarding.get("x-forwarded-for")
    headers.append(("X-Forwarded-For", ", ".join([*their_for, peer]) if their_for else peer))
    proto = ", ".join(forwarding.get("x-forwarded-proto") or [scheme])
    headers.append(("X-Forwarded-Proto", proto))
    their_host = forwarding.get("x-forwarded-host")
    if their_host or host:
        headers.append(("X-Forwarded-Host", ", ".join(their_host) if their_host else host or ""))
    client = client_address(peer, their_for or (), trusted)
    headers.append(("X-Real-IP", client))
    their_forwarded = forwarding.get("forwarded")
    if their_forwarded:
        headers.extend(("Forwarded", value) for value in their_forwarded)
    else:
        headers.append(("Forwarded", _forwarded_element(client, scheme, host)))
    return headers


def _forwarded_element(client: str, scheme: str, host: str | None) -> str:
    element = f"for={_forwarded_value(f'[{client}]' if ':' in client else client)};proto={scheme}"
    return element + f";host={_forwarded_value(host)}" if host else element


_TOKEN_CHARS = frozenset("!#$%&'*+-.^_`|~" + string.ascii_letters + string.digits)


def _forwarded_value(value: str) -> str:
    # RFC 7239 section 4: a token, else a quoted string (an IPv6 address, a host with a port).
    if value and all(c in _TOKEN_CHARS for c in value):
        return value
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


# Besides Cache-Control, what shared caches (CDNs) obey: RFC 9213's targeted fields
# (CDN-Cache-Control, Cloudflare-/Vercel-/Netlify-CDN-Cache-Control), Surrogate-Control (Fastly,
# Akamai), Akamai's Edge-Control, and Expires (RFC 9111 5.3, used when no max-age is given).
_SHARED_CACHE = frozenset({"cache-control", "surrogate-control", "edge-control", "expires"})


def response_headers(
    upstream: Iterable[tuple[str, str]], set_cookies: list[str], *, private: bool = False
) -> list[tuple[str, str]]:
    """The upstream's response headers minus hop-by-hop ones; Set-Cookie replaced by the merge.

    When `set_cookies` is non-empty it already holds the upstream's own Set-Cookie headers (the
    merge keeps them, byte for byte); each stays a header of its own, never joined. When the
    answer is `private` (it carries tokens), every caching directive for shared caches goes: the
    caller sets `Cache-Control: private, no-store` in their place.
    """
    headers: list[tuple[str, str]] = []
    connection: list[str] = []
    for name, value in upstream:
        lname = name.lower()
        if lname in HOP_BY_HOP:
            if lname == "connection":
                connection.append(value)
            continue
        if set_cookies and lname == "set-cookie":
            continue
        if private and (lname in _SHARED_CACHE or lname.endswith("cdn-cache-control")):
            continue
        headers.append((name, value))
    if connection:  # rare: headers the upstream named as connection-specific go too
        named = _connection_tokens(connection)
        headers = [(name, value) for name, value in headers if name.lower() not in named]
    headers.extend(("Set-Cookie", value) for value in set_cookies)
    return headers
