"""Assemble the aiohttp application and serve it with a bounded graceful drain."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import signal
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass

import aiohttp
from aiohttp import web

from cookieguard.config import Config
from cookieguard.edge.admin import ADMIN_KEY, Admin, ReadinessCheck, add_routes
from cookieguard.edge.forward_auth import ForwardAuth
from cookieguard.edge.listener import SERVER, ClientLimits, front_door, listen
from cookieguard.edge.proxy import Auth, Proxy
from cookieguard.edge.upstream import UpstreamClient
from cookieguard.logs import get_logger
from cookieguard.metrics import Metrics
from cookieguard.session.layouts import make_layout
from cookieguard.session.limits import Budgets
from cookieguard.session.refresh import Refresher
from cookieguard.store import make_store
from cookieguard.tokens.claims import ClaimsReader
from cookieguard.tokens.providers import make_provider
from cookieguard.tokens.providers.base import idp_timeout
from cookieguard.tokens.verifier import TokenVerifier

# Browsers send cookies up to 4096 bytes each and many of them; aiohttp's 8 KB header field
# limit would turn a large but legitimate Cookie header into a 400.
MAX_FIELD_SIZE = 64 * 1024
MAX_LINE_SIZE = 16 * 1024

PROXY_KEY = web.AppKey("proxy", Proxy)

# Served only on `admin_listen` (docs/operations.md "Endpoints"): readyz and metrics describe the
# deployment (store state, traffic, refresh outcomes, the Python version) and have no business on
# a public listener. healthz says nothing but "ok" and stays on both, for a load balancer that
# checks the public port; the session endpoint stays on the main listener, browsers call it, and
# so does forward-auth, which the ingress calls where it would otherwise proxy to.
ADMIN_ONLY = ("readyz", "metrics")


@dataclass(frozen=True)
class Services:
    """Everything the proxy and the admin endpoints run on, built once by `open_services`."""

    metrics: Metrics
    upstream: UpstreamClient
    websockets: aiohttp.ClientSession
    auth: Auth | None  # None: no provider configured, nothing is refreshed
    readiness: dict[str, ReadinessCheck]


@contextlib.asynccontextmanager
async def open_services(config: Config, clock: Callable[[], float]) -> AsyncIterator[Services]:
    """Build the services for one app, and close them (in reverse order) when it stops.

    Nothing here talks to the IdP or to Redis: an IdP or Redis outage at start-up must not stop
    the proxy (docs/providers/oidc.md "Any OIDC provider", its start-up item). The JWKS URL is
    resolved when the first token is checked, and the Redis store falls back to local coordination
    until Redis answers.
    """
    async with contextlib.AsyncExitStack() as stack:
        metrics = Metrics()

        # One pooled client for the app's lifetime (cookieguard.edge.upstream): no cookie jar, no
        # decompression, no headers of its own; the upstream's bytes pass through as they are.
        def late_bytes(caught: str) -> None:
            # docs/proxy.md "The proxy": an app that writes after its answer is the bug to fix.
            metrics.upstream_late_bytes.labels(caught=caught).inc()
            get_logger().warning("upstream_error", error="late_bytes", phase=caught)

        upstream = UpstreamClient(
            connect_timeout_s=config.timeouts.upstream_connect_s,
            max_connections=config.limits.upstream_connections,
            on_late_bytes=late_bytes,
            response_buffer=config.limits.response_buffer,
        )
        stack.push_async_callback(upstream.close)
        # WebSocket upgrades use aiohttp's client. DummyCookieJar: the proxy must never remember
        # one user's cookies and send them for another.
        websockets = aiohttp.ClientSession(
            cookie_jar=aiohttp.DummyCookieJar(),
            auto_decompress=False,
            skip_auto_headers=("User-Agent", "Accept-Encoding", "Accept", "Content-Type"),
            connector=aiohttp.TCPConnector(limit=0, ttl_dns_cache=60, enable_cleanup_closed=True),
            timeout=aiohttp.ClientTimeout(total=None),
        )
        stack.push_async_callback(websockets.close)
        auth: Auth | None = None
        readiness: dict[str, ReadinessCheck] = {}
        if config.provider is not None:
            # A separate pool for the IdP: upstream traffic never queues IdP calls behind it.
            idp = aiohttp.ClientSession(
                cookie_jar=aiohttp.DummyCookieJar(),
                timeout=idp_timeout(config.provider.timeout_s),
                connector=aiohttp.TCPConnector(limit=100, ttl_dns_cache=300),
            )
            stack.push_async_callback(idp.close)
            store = make_store(config.store, on_degraded=metrics.store_degraded.set)
            stack.push_async_callback(store.close)
            readiness["store"] = store.readiness
            provider = make_provider(config.provider, idp)
            claims = ClaimsReader(user_claims=config.provider.user_claims)
            verifier = None
            if config.verify.signature:
                verifier = TokenVerifier(
                    config.provider,
                    config.verify,
                    idp,
                    claims=claims,
                    resolve_jwks_url=provider.resolve_jwks_url,
                    clock=clock,
                )
                stack.push_async_callback(verifier.close)
            refresher = Refresher(
                provider,
                store,
                config.refresh,
                config.store,
                idp_timeout_s=config.provider.timeout_s,
                on_idp_call=metrics.idp_call,
                budgets=Budgets(config.limits, store, clock, on_waiting=metrics.refresh_queue_waiting.set),
                # Nothing can be proven without signature checks: then every verdict counts.
                unproven_feed_guard=not config.verify.signature,
            )
            auth = Auth(
                wall_clock=clock,
                layout=make_layout(config.cookies, config.provider),
                refresher=refresher,
                verifier=verifier,
                claims=claims,
            )
        yield Services(metrics, upstream, websockets, auth, readiness)


def build_app(config: Config, *, clock: Callable[[], float] = time.time) -> web.Application:
    """`clock` is the wall clock token expiry is judged by (tests move it forward).

    The routes are fixed here; what serves them (`Proxy`, `Admin`) is built at start-up from
    the services, in one `cleanup_ctx` step, and found through the app's keys.
    """
    app = web.Application(client_max_size=0)
    app.on_response_prepare.append(_server_header)

    async def lifetime(app: web.Application) -> AsyncIterator[None]:
        async with open_services(config, clock) as services:
            proxy = Proxy(config, services.upstream, services.websockets, services.metrics, services.auth)
            app[PROXY_KEY] = proxy
            forward_auth = None
            if config.forward_auth.enabled:
                # The proxy's own session repair, router and counters: the same single-flight,
                # store, budgets, logs and metrics as a proxied request (docs/forward-auth/).
                forward_auth = ForwardAuth(
                    config, proxy.repair, proxy.router, proxy.client_address, services.metrics.count_request
                ).handle
            app[ADMIN_KEY] = Admin(
                services.metrics,
                services.readiness,
                check_session=proxy.check_session,
                forward_auth=forward_auth,
            )
            yield

    app.cleanup_ctx.append(lifetime)
    add_routes(app, config.admin_prefix, hidden=ADMIN_ONLY)

    async def handle(request: web.Request) -> web.StreamResponse:
        return await request.app[PROXY_KEY].handle(request)

    app.router.add_route("*", "/{tail:.*}", handle)
    return app


def build_admin_app(admin: Admin, config: Config) -> web.Application:
    """The `admin_listen` listener's application: healthz, readyz and metrics, nothing proxied."""
    app = web.Application()
    app.on_response_prepare.append(_server_header)
    app[ADMIN_KEY] = admin
    add_routes(app, config.admin_prefix, hidden=("session", "forward-auth"))
    return app


async def _server_header(request: web.Request, response: web.StreamResponse) -> None:
    # Replaces aiohttp's "Python/3.x aiohttp/3.x" and, on proxied answers, the upstream's own
    # (docs/proxy.md "The proxy").
    response.headers["Server"] = SERVER


async def serve(config: Config, *, ready: asyncio.Event | None = None) -> None:
    """Serve until SIGTERM/SIGINT, then stop accepting, drain in-flight requests, and return."""
    log = get_logger()
    app = build_app(config)
    runner = web.AppRunner(
        app,
        handle_signals=False,
        shutdown_timeout=config.timeouts.drain_s,
        handler_cancellation=True,  # a client that goes away cancels its upstream request
    )
    await runner.setup()
    # Proxied requests go straight to the proxy; the router sees only what may be an endpoint.
    front_door(runner, app[PROXY_KEY].handle, config.admin_prefix)
    handler_kwargs = {
        "access_log": None,
        "keepalive_timeout": config.timeouts.keepalive_s,
        "max_field_size": MAX_FIELD_SIZE,
        "max_line_size": MAX_LINE_SIZE,
    }
    client_cut = app[PROXY_KEY].metrics.client_cut  # cookieguard_clients_cut_total{reason}
    limits = ClientLimits(
        config.timeouts.client_header_s,
        config.limits.max_connections,
        on_cut=client_cut,
        write_timeout_s=config.timeouts.client_write_s,
    )
    listeners = [await listen(runner, config.listen_host, config.listen_port, limits, **handler_kwargs)]
    runners = [runner]
    # Not under max_connections: a probe must get through while the public port is flooded.
    admin_runner = web.AppRunner(build_admin_app(app[ADMIN_KEY], config), handle_signals=False)
    await admin_runner.setup()
    admin_limits = ClientLimits(
        config.timeouts.client_header_s,
        None,
        on_cut=app[PROXY_KEY].metrics.client_cut,
        write_timeout_s=config.timeouts.client_write_s,
    )
    host, port = config.admin_listen
    listeners.append(await listen(admin_runner, host, port, admin_limits, **handler_kwargs))
    runners.append(admin_runner)
    # What start-up allocated (modules, config, clients) lives as long as the process. Frozen,
    # it is out of the cyclic collector's way: a full collection otherwise walks those ~50,000
    # objects, a 10-25 ms pause in the middle of whatever requests are in flight.
    gc.collect()
    gc.freeze()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    addresses = [f"{a[0]}:{a[1]}" for a in _bound_addresses(listeners[0])]
    admin_addresses = [f"{a[0]}:{a[1]}" for a in _bound_addresses(listeners[1])]
    log.info(
        "listening",
        listen=addresses,
        admin_prefix=config.admin_prefix,
        admin_listen=admin_addresses,
        max_connections=config.limits.max_connections,
    )
    if ready is not None:
        ready.set()
    await stop.wait()
    log.info("draining", drain_timeout_s=config.timeouts.drain_s)
    # The handlers stay installed while draining: a second SIGTERM (an orchestrator repeating
    # itself) must not kill requests that are still finishing. The drain itself is bounded.
    for listener in listeners:
        listener.close()  # stop accepting; the runners drain what is open
    for each in runners:
        await each.cleanup()
    for listener in listeners:
        await listener.wait_closed()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.remove_signal_handler(sig)
        signal.signal(sig, signal.SIG_IGN)  # we are on our way out: a repeated signal must not kill us
    log.info("stopped")


def _bound_addresses(server: asyncio.AbstractServer) -> list[tuple[str, int]]:
    sockets = getattr(server, "sockets", None) or ()
    return [sock.getsockname()[:2] for sock in sockets]
