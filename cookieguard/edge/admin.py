"""Admin endpoints under `admin_prefix`: healthz, readyz, metrics, session, forward-auth. Never
proxied upstream."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Iterable, Mapping

from aiohttp import web

from cookieguard.metrics import Metrics
from cookieguard.session.plan import SessionCheck
from cookieguard.vocabulary import CheckReason

# A readiness check returns None when its dependency is fine, else a short reason.
ReadinessCheck = Callable[[], Awaitable[dict[str, str] | None]]
# Session repair for the session endpoint: the proxy's `check_session`.
SessionChecker = Callable[[web.Request], Awaitable[SessionCheck]]
# The forward-auth answer (cookieguard.edge.forward_auth); None when forward_auth is off.
ForwardAuthHandler = Callable[[web.Request], Awaitable[web.Response]]

_NO_STORE = {"Cache-Control": "no-store"}


class Admin:
    def __init__(
        self,
        metrics: Metrics,
        checks: Mapping[str, ReadinessCheck] | None = None,
        *,
        check_session: SessionChecker | None = None,
        forward_auth: ForwardAuthHandler | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.metrics = metrics
        self.checks: dict[str, ReadinessCheck] = dict(checks or {})
        self.check_session = check_session
        self._forward_auth = forward_auth
        self.clock = clock

    async def healthz(self, request: web.Request) -> web.Response:
        return web.Response(text="ok\n", headers=_NO_STORE)

    async def readyz(self, request: web.Request) -> web.Response:
        """200 when every dependency answers (a degraded one is reported, still 200); else 503."""
        report: dict[str, object] = {"ready": True, "config": "loaded"}
        for name, check in self.checks.items():
            problem = await check()
            if problem is None:
                report[name] = "ok"
                continue
            report[name] = problem
            if problem.get("status") != "degraded":
                report["ready"] = False
        status = 200 if report["ready"] else 503
        return web.json_response(report, status=status, headers=_NO_STORE)

    async def metrics_endpoint(self, request: web.Request) -> web.Response:
        return web.Response(
            body=self.metrics.render(), headers={"Content-Type": Metrics.content_type, **_NO_STORE}
        )

    async def session(self, request: web.Request) -> web.Response:
        """The browser's session health check (docs/operations.md "Session endpoint"). Never a token;
        cookies only in Set-Cookie.

        Meant for `fetch(prefix + "/session", {credentials: "include"})` from the app's own pages,
        which share cookieguard's origin, so no CORS headers are sent (and none are needed). A due
        access token is refreshed exactly as for a proxied request, so polling keeps the session
        alive; the fresh tokens (or, for a dead session, the expired auth cookies) come back as
        Set-Cookie. Always 200 with JSON, except 404 when no provider is configured.
        """
        check = await self.check_session(request) if self.check_session is not None else None
        if check is None or check.reason is CheckReason.NO_PROVIDER:
            return web.json_response(
                {"error": "no provider configured: cookieguard does not manage sessions"},
                status=404,
                headers=_NO_STORE,
            )
        response = web.json_response(session_report(check, self.clock()), headers=_NO_STORE)
        for header in check.set_cookies:
            response.headers.add("Set-Cookie", header)
        return response

    async def forward_auth(self, request: web.Request) -> web.Response:
        """An ingress asks before it forwards (docs/forward-auth/); 404 when forward_auth is off."""
        if self._forward_auth is None:
            return await _not_found(request)
        return await self._forward_auth(request)


def session_report(check: SessionCheck, now_s: float) -> dict[str, object]:
    """The session endpoint's JSON (docs/operations.md "Session endpoint"), `reason` a short code,
    never content."""
    expires_at = int(check.expires_at) if check.expires_at is not None else None
    return {
        "authenticated": check.authenticated,
        "user": check.user,
        "expires_at": expires_at,
        "expires_in": max(0, expires_at - int(now_s)) if expires_at is not None else None,
        "refreshed": check.refreshed,
        "reason": check.reason,
    }


# The `Admin` an application's admin endpoints answer with, set when the application starts.
ADMIN_KEY = web.AppKey("admin", Admin)

# Endpoint -> (the Admin method that serves it, the methods it allows).
_ENDPOINTS: dict[str, tuple[str, str]] = {
    "healthz": ("healthz", "GET, HEAD"),
    "readyz": ("readyz", "GET, HEAD"),
    "metrics": ("metrics_endpoint", "GET"),
    "session": ("session", "GET"),
    # Any method: Envoy's ext_authz asks with the original request's.
    "forward-auth": ("forward_auth", "*"),
}


def add_routes(app: web.Application, prefix: str, *, hidden: Iterable[str] = ()) -> None:
    """Every endpoint under `prefix`, except those named in `hidden` (404 here: they are
    served on the other listener, docs/operations.md "Endpoints"). Served by `app[ADMIN_KEY]`: the routes
    are fixed before the application starts, the `Admin` is built when it does."""
    endpoints = {name: spec for name, spec in _ENDPOINTS.items() if name not in set(hidden)}
    for name, (method, allowed) in endpoints.items():
        if allowed == "*":
            # Envoy's ext_authz appends the original path to the endpoint's.
            app.router.add_route("*", f"{prefix}/{name}", _served_by(method))
            app.router.add_route("*", f"{prefix}/{name}/{{tail:.*}}", _served_by(method))
        else:
            app.router.add_get(f"{prefix}/{name}", _served_by(method), allow_head="HEAD" in allowed)
    # Nothing under the prefix is ever proxied: other methods get 405, other paths 404.
    for name, (_, allowed) in endpoints.items():
        if allowed != "*":
            app.router.add_route("*", f"{prefix}/{name}", _method_not_allowed(allowed))
    app.router.add_route("*", prefix + "/{tail:.*}", _not_found)


def _served_by(method: str) -> Callable[[web.Request], Awaitable[web.Response]]:
    async def handler(request: web.Request) -> web.Response:
        endpoint: Callable[[web.Request], Awaitable[web.Response]] = getattr(request.app[ADMIN_KEY], method)
        return await endpoint(request)

    return handler


def _method_not_allowed(allowed: str) -> Callable[[web.Request], Awaitable[web.Response]]:
    async def handler(request: web.Request) -> web.Response:
        return web.Response(
            status=405, text="cookieguard: method not allowed\n", headers={"Allow": allowed, **_NO_STORE}
        )

    return handler


async def _not_found(request: web.Request) -> web.Response:
    return web.Response(status=404, text="cookieguard: no such endpoint\n", headers=_NO_STORE)
