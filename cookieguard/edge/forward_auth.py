"""Forward-auth mode (docs/forward-auth/): answer an ingress instead of forwarding.

Traefik's ForwardAuth, nginx's `auth_request` and Envoy's `ext_authz` ask before they forward.
The question is the original request as the ingress describes it; the answer is the same plan a
proxied request gets (cookieguard.session.repair), written as headers the ingress copies:

- `Cookie`: what the upstream gets, on every answer to a request that had one. Traefik's
  `authResponseHeaders: [Cookie]` deletes the request's Cookie and copies the answer's only if
  there is one, so "nothing changed" must still be said: byte for byte the request's own.
- `Set-Cookie`: cookieguard's cookies for the browser (Traefik `addAuthCookiesToResponse`,
  Envoy `allowed_client_headers_on_success`).
- `X-Cookieguard-Set-Cookie-0`, `-1`, ...: the same cookies, one a header, because nginx's
  `auth_request_set` keeps only one `Set-Cookie`.

`original_request` is pure: which headers carry the original request depends on the ingress,
and each ingress overwrites only its own family and passes the other from the client, so the
other family is never read.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from aiohttp import web

from cookieguard.config import Config, Route
from cookieguard.edge.routing import Router, Target, parse_target
from cookieguard.logs import bind_request, end_request, get_logger, log_access
from cookieguard.session.plan import Answer, Forward, Plan, Refresh
from cookieguard.session.repair import SessionRepair
from cookieguard.vocabulary import ForwardReason

ENDPOINT = "forward-auth"
SET_COOKIE_HEADER = "X-Cookieguard-Set-Cookie-"

# The headers each ingress writes the original request into (docs/forward-auth/*.md). Envoy's
# HTTP ext_authz sends the original method, and the original path after its `path_prefix`.
_URI_HEADER = {"traefik": "X-Forwarded-Uri", "nginx": "X-Original-URI"}
_METHOD_HEADER = {"traefik": "X-Forwarded-Method", "nginx": "X-Original-Method"}

UNCHANGED = Forward(ForwardReason.UNCHANGED)
_NO_STORE = {"Cache-Control": "no-store"}


@dataclass(frozen=True, slots=True)
class Original:
    """The request the ingress is about to forward."""

    method: str
    target: Target


def original_request(ingress: str, headers: Mapping[str, str], method: str, tail: str) -> Original | str:
    """The original request, or why it cannot be read (the answer is then 400).

    `method` and `tail` are the auth request's own method and the path after the endpoint
    (Envoy's ext_authz appends the original path to its `path_prefix`)."""
    if ingress == "envoy":
        uri = tail if tail.startswith("/") else "/" + tail
        original_method = method
    else:
        uri = headers.get(_URI_HEADER[ingress], "")
        original_method = headers.get(_METHOD_HEADER[ingress], "") or "GET"
        if not uri:
            return f"no {_URI_HEADER[ingress]} header (forward_auth.ingress is {ingress})"
    target = parse_target(uri)
    if target is None:
        return "the original request target cannot be routed"
    return Original(original_method, target)


class ForwardAuth:
    def __init__(
        self,
        config: Config,
        repair: SessionRepair | None,
        router: Router,
        client_address: Callable[[web.Request], str],
        count_request: Callable[[str, int], None],
    ) -> None:
        self.ingress = config.forward_auth.ingress
        self.prefix = f"{config.admin_prefix}/{ENDPOINT}"
        self.repair = repair
        self.router = router
        self.client_address = client_address
        self.count_request = count_request
        self.access_log = config.logging.access_log
        self.log = get_logger()

    async def handle(self, request: web.Request) -> web.Response:
        started = time.perf_counter() if self.access_log else 0.0
        tail = request.raw_path[len(self.prefix) :] if request.raw_path.startswith(self.prefix) else ""
        original = original_request(self.ingress, request.headers, request.method, tail)
        if isinstance(original, str):
            return web.Response(status=400, text=f"cookieguard: {original}\n", headers=_NO_STORE)
        route = self.router.match(original.target.path)
        context = bind_request(route=route.match if route else None)  # every log line of this request
        try:
            response = await self._answer(request, route)
            if route is not None:
                self.count_request(route.match, response.status)
            if self.access_log:
                log_access(self.log, original.method, original.target.path, response.status, started)
            return response
        finally:
            end_request(context)

    async def _answer(self, request: web.Request, route: Route | None) -> web.Response:
        cookie_header = request.headers.get("Cookie")
        plan: Plan = UNCHANGED
        repair = self.repair
        # No route: the ingress forwards paths cookieguard was not told about; nothing to repair.
        if route is not None and route.refresh and repair is not None and cookie_header:
            plan, judged = await repair.plan(cookie_header)
            if isinstance(plan, Refresh):
                # Only a due session pays for its address. Never a redirect: nginx's
                # auth_request turns a 3xx into a 500 (docs/forward-auth/).
                plan = await repair.refresh(judged, plan, self.client_address(request), is_navigation=False)
        return answer(plan, cookie_header)


def answer(plan: Plan, cookie_header: str | None) -> web.Response:
    """The ingress's answer for a plan; `cookie_header` is the request's (None: it had none)."""
    if isinstance(plan, Answer):
        # on_rejected: login. 401: each ingress's idiom sends navigations to login_url.
        response = web.json_response({"error": "session_expired"}, status=401, headers=_NO_STORE)
    else:
        assert isinstance(plan, Forward)
        response = web.Response(status=200, headers=_NO_STORE)
        if cookie_header is not None:
            response.headers["Cookie"] = (
                plan.cookie_header if plan.cookie_header is not None else cookie_header
            )
    for i, cookie in enumerate(plan.set_cookies):
        line = cookie.header()
        response.headers.add("Set-Cookie", line)
        response.headers[f"{SET_COOKIE_HEADER}{i}"] = line
    return response
