"""An upstream app with the seed's bug, and helpers to build and read the cookies a browser holds.

The app behaves like a Next.js app whose middleware answers with `NextResponse.redirect(...)` or
`NextResponse.rewrite(...)`: whatever it does, it never writes refreshed auth cookies. It records
the `Cookie` header of every request, so a test can see which tokens the app itself received.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web
from aiohttp.test_utils import TestServer

from cookieguard.cookies import encode_uri_component, parse_cookie_header
from cookieguard.session.layouts import AmplifyLayout

SEEN = web.AppKey("seen", list)

# Every kind of answer start_buggy_app gives, as (method, path, status): session repair must put
# its cookies on each of them (redirects, rewrites, 304, 4xx, 5xx, HEAD, streamed bodies).
RESPONSE_KINDS = [
    ("GET", "/redirect", 302),
    ("GET", "/rewrite", 200),
    ("GET", "/not-modified", 304),
    ("GET", "/missing", 404),
    ("GET", "/broken", 500),
    ("HEAD", "/page", 200),
    ("GET", "/stream", 200),
]


async def reset_mid_body(request: web.Request) -> web.StreamResponse:
    """An upstream handler that promises a 1 MB body, sends 1 KB, then resets the connection."""
    response = web.StreamResponse()
    response.content_length = 1_000_000
    await response.prepare(request)
    await response.write(b"x" * 1000)
    await asyncio.sleep(0.1)
    assert request.transport is not None
    request.transport.abort()  # connection reset in the middle of the body
    return response


async def close_without_answer(request: web.Request) -> web.StreamResponse:
    """A server handler that closes the connection instead of answering (an IdP dropping it)."""
    assert request.transport is not None
    request.transport.close()
    return web.Response()


async def start_buggy_app(aiohttp_server: Any) -> TestServer:
    seen: list[dict[str, str]] = []

    def record(request: web.Request) -> None:
        seen.append(
            {"path": request.path, "method": request.method, "cookie": request.headers.get("Cookie", "")}
        )

    async def page(request: web.Request) -> web.Response:
        record(request)
        return web.Response(text=f"<h1>page {request.path}</h1>", content_type="text/html")

    async def redirect(request: web.Request) -> web.Response:
        record(request)  # NextResponse.redirect: a fresh response, refreshed cookies dropped
        return web.Response(status=302, headers={"Location": "/dashboard"})

    async def rewrite(request: web.Request) -> web.Response:
        record(request)  # NextResponse.rewrite: another page's body under this URL
        return web.Response(text="<h1>page /dashboard</h1>", content_type="text/html")

    async def not_modified(request: web.Request) -> web.Response:
        record(request)
        return web.Response(status=304, headers={"ETag": '"v1"'})

    async def missing(request: web.Request) -> web.Response:
        record(request)
        return web.Response(status=404, text="not found")

    async def broken(request: web.Request) -> web.Response:
        record(request)
        return web.Response(status=500, text="internal error")

    async def stream(request: web.Request) -> web.StreamResponse:
        record(request)
        response = web.StreamResponse()
        await response.prepare(request)
        for n in range(3):
            await response.write(f"part{n}\n".encode())
            await asyncio.sleep(0.05)
        await response.write_eof()
        return response

    async def logout(request: web.Request) -> web.Response:
        record(request)  # the app signs the user out: its expiring cookies must win
        response = web.Response(status=302, headers={"Location": "/"})
        for name, _ in parse_cookie_header(request.headers.get("Cookie", "")):
            if name.startswith("CognitoIdentityServiceProvider.") or name in ("at", "rt", "idt"):
                response.headers.add("Set-Cookie", f"{name}=; Path=/; Max-Age=0")
        return response

    app = web.Application()
    app[SEEN] = seen
    app.router.add_route("*", "/redirect", redirect)
    app.router.add_get("/rewrite", rewrite)
    app.router.add_get("/not-modified", not_modified)
    app.router.add_get("/missing", missing)
    app.router.add_get("/broken", broken)
    app.router.add_get("/stream", stream)
    app.router.add_get("/logout", logout)
    app.router.add_route("*", "/{tail:.*}", page)
    server: TestServer = await aiohttp_server(app)
    return server


def seen_by(app: TestServer) -> list[dict[str, str]]:
    assert app.app is not None
    return app.app[SEEN]


@dataclass
class Browser:
    """A cookie jar that behaves like a browser's for one host: Set-Cookie in, Cookie out."""

    cookies: dict[str, str] = field(default_factory=dict)

    def header(self) -> str:
        return "; ".join(f"{k}={v}" for k, v in self.cookies.items())

    def receive(self, set_cookies: list[str]) -> None:
        for line in set_cookies:
            first = line.split(";", 1)[0]
            name, _, value = first.partition("=")
            attrs = {a.strip().split("=", 1)[0].lower(): a for a in line.split(";")[1:]}
            expired = "max-age" in attrs and attrs["max-age"].split("=", 1)[1].strip() in ("0", "-1")
            if expired or not value:
                self.cookies.pop(name.strip(), None)
            else:
                self.cookies[name.strip()] = value.strip()


def amplify_cookies(
    client_id: str,
    username: str,
    *,
    access_token: str | None,
    id_token: str | None,
    refresh_token: str | None,
    extra: Mapping[str, str] | None = None,
) -> dict[str, str]:
    """The cookies Amplify v6's adapter writes after sign-in (values encodeURIComponent'ed)."""
    layout = AmplifyLayout(client_id)
    cookies = {"_ga": "GA1.1.123456789.1700000000"}
    cookies[layout.last_auth_user_name] = encode_uri_component(username)
    for key, value in (("accessToken", access_token), ("idToken", id_token), ("refreshToken", refresh_token)):
        if value is not None:
            cookies[layout.cookie_name(username, key)] = encode_uri_component(value)
    cookies[layout.cookie_name(username, "clockDrift")] = "0"
    cookies[layout.cookie_name(username, "signInDetails")] = encode_uri_component(
        '{"loginId":"x","authFlowType":"USER_SRP_AUTH"}'
    )
    cookies.update(extra or {})
    return cookies


def cookie_value(cookie_header: str, name: str) -> str | None:
    for key, value in parse_cookie_header(cookie_header):
        if key == name:
            return value
    return None


def set_cookie_values(set_cookies: list[str]) -> dict[str, str]:
    """name -> raw value of each Set-Cookie header (the last one for a name wins)."""
    out = {}
    for line in set_cookies:
        name, _, value = line.split(";", 1)[0].partition("=")
        out[name.strip()] = value.strip()
    return out
