"""Admin endpoints under `admin_prefix`: healthz, readyz, metrics. Never proxied upstream."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from aiohttp import web

from .metrics import Metrics

# A readiness check returns None when its dependency is fine, else a short reason.
ReadinessCheck = Callable[[], Awaitable[dict[str, str] | None]]

_NO_STORE = {"Cache-Control": "no-store"}


class Admin:
    def __init__(self, metrics: Metrics, checks: dict[str, ReadinessCheck] | None = None) -> None:
        self.metrics = metrics
        self.checks: dict[str, ReadinessCheck] = dict(checks or {})

    def add_routes(self, app: web.Application, prefix: str) -> None:
        app.router.add_get(f"{prefix}/healthz", self.healthz, allow_head=True)
        app.router.add_get(f"{prefix}/readyz", self.readyz, allow_head=True)
        app.router.add_get(f"{prefix}/metrics", self.metrics_endpoint)

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
