"""Assemble the aiohttp application and serve it with a bounded graceful drain."""

from __future__ import annotations

import asyncio
import gc
import signal
import time
from collections.abc import AsyncIterator, Callable

import aiohttp
from aiohttp import web

from .admin import Admin
from .config import Config
from .cookies import make_layout
from .logs import get_logger
from .metrics import Metrics
from .providers import make_provider
from .providers.base import idp_timeout
from .proxy import Auth, Proxy
from .refresh import Refresher
from .store import make_store
from .tokens import TokenVerifier
from .upstream import UpstreamClient

# Browsers send cookies up to 4096 bytes each and many of them; aiohttp's 8 KB header field
# limit would turn a large but legitimate Cookie header into a 400.
MAX_FIELD_SIZE = 64 * 1024
MAX_LINE_SIZE = 16 * 1024

PROXY_KEY = web.AppKey("proxy", Proxy)


def build_app(config: Config, *, clock: Callable[[], float] = time.time) -> web.Application:
    """`clock` is the wall clock token expiry is judged by (tests move it forward)."""
    app = web.Application(client_max_size=0)
    metrics = Metrics()
    admin = Admin(metrics)
    admin.add_routes(app, config.admin_prefix)
    auth_holder: list[Auth | None] = [None]

    async def upstream_client(app: web.Application) -> AsyncIterator[None]:
        # One pooled client for the app's lifetime (cookieguard.upstream): no cookie jar, no
        # decompression, no headers of its own; the upstream's bytes pass through as they are.
        http = UpstreamClient(
            connect_timeout_s=config.timeouts.upstream_connect_s,
            max_connections=config.limits.upstream_connections,
        )
        # WebSocket upgrades use aiohttp's client. DummyCookieJar: the proxy must never remember
        # one user's cookies and send them for another.
        session = aiohttp.ClientSession(
            cookie_jar=aiohttp.DummyCookieJar(),
            auto_decompress=False,
            skip_auto_headers=("User-Agent", "Accept-Encoding", "Accept", "Content-Type"),
            connector=aiohttp.TCPConnector(limit=0, ttl_dns_cache=60, enable_cleanup_closed=True),
            timeout=aiohttp.ClientTimeout(total=None),
        )
        app[PROXY_KEY] = Proxy(config, http, session, metrics, auth_holder[0])
        admin.check_session = app[PROXY_KEY].check_session
        yield
        await http.close()
        await session.close()

    async def identity_provider(app: web.Application) -> AsyncIterator[None]:
        if config.provider is None:
            yield
            return
        # A separate pool for the IdP: upstream traffic never queues IdP calls behind it.
        idp = aiohttp.ClientSession(
            cookie_jar=aiohttp.DummyCookieJar(),
            timeout=idp_timeout(config.provider.timeout_s),
            connector=aiohttp.TCPConnector(limit=100, ttl_dns_cache=300),
        )
        store = make_store(config.store, on_degraded=metrics.store_degraded.set)
        provider = make_provider(config.provider, idp)
        verifier = None
        if config.verify.signature:
            jwks_url = config.provider.jwks_url
            if jwks_url is None and config.provider.kind == "oidc":
                jwks_url = await _discover_jwks_url(provider)
            verifier = TokenVerifier(config.provider, config.verify, idp, jwks_url=jwks_url, clock=clock)

        def idp_call(starting: bool) -> None:
            metrics.sessions_in_flight.inc() if starting else metrics.sessions_in_flight.dec()

        refresher = Refresher(
            provider,
            store,
            config.refresh,
            config.store,
            idp_timeout_s=config.provider.timeout_s,
            on_idp_call=idp_call,
        )
        auth_holder[0] = Auth(
            wall_clock=clock,
            layout=make_layout(config.cookies, config.provider.client_id),
            refresher=refresher,
            verifier=verifier,
        )
        admin.checks["store"] = store.readiness
        yield
        await store.close()
        await idp.close()

    app.cleanup_ctx.append(identity_provider)
    app.cleanup_ctx.append(upstream_client)

    async def handle(request: web.Request) -> web.StreamResponse:
        return await request.app[PROXY_KEY].handle(request)

    app.router.add_route("*", "/{tail:.*}", handle)
    return app


async def serve(config: Config, *, ready: asyncio.Event | None = None) -> None:
    """Serve until SIGTERM/SIGINT, then stop accepting, drain in-flight requests, and return."""
    log = get_logger()
    app = build_app(config)
    runner = web.AppRunner(
        app,
        handle_signals=False,
        access_log=None,
        shutdown_timeout=config.timeouts.drain_s,
        handler_cancellation=True,  # a client that goes away cancels its upstream request
        max_field_size=MAX_FIELD_SIZE,
        max_line_size=MAX_LINE_SIZE,
    )
    await runner.setup()
    site = web.TCPSite(runner, config.listen_host, config.listen_port, backlog=1024)
    await site.start()
    # What start-up allocated (modules, config, clients) lives as long as the process. Frozen,
    # it is out of the cyclic collector's way: a full collection otherwise walks those ~50,000
    # objects, a 10-25 ms pause in the middle of whatever requests are in flight.
    gc.collect()
    gc.freeze()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    addresses = [f"{s[0]}:{s[1]}" for s in _bound_addresses(runner)]
    log.info("listening", listen=addresses, admin_prefix=config.admin_prefix)
    if ready is not None:
        ready.set()
    await stop.wait()
    log.info("draining", drain_timeout_s=config.timeouts.drain_s)
    # The handlers stay installed while draining: a second SIGTERM (an orchestrator repeating
    # itself) must not kill requests that are still finishing. The drain itself is bounded.
    await runner.cleanup()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.remove_signal_handler(sig)
        signal.signal(sig, signal.SIG_IGN)  # we are on our way out: a repeated signal must not kill us
    log.info("stopped")


async def _discover_jwks_url(provider: object) -> str | None:
    resolve = getattr(provider, "resolve_jwks_url", None)
    if resolve is None:
        return None
    try:
        url: str | None = await resolve()
    except Exception as exc:  # an IdP outage at start-up must not stop the proxy
        get_logger().warning("jwks_discovery_failed", error=type(exc).__name__)
        return None
    return url


def _bound_addresses(runner: web.AppRunner) -> list[tuple[str, int]]:
    out = []
    for server in runner.sites:
        srv = getattr(server, "_server", None)
        for sock in getattr(srv, "sockets", None) or ():
            out.append(sock.getsockname()[:2])
    return out
