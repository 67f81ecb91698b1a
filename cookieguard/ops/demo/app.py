"""The demo's app: a tiny site whose auth middleware has the seed's bug, faithfully.

It behaves like a Next.js app with server-side auth in `middleware.ts`, with either library
(`demo.idps.AppAuth`): Amplify v6 (`runWithAmplifyServerContext` + `fetchAuthSession`) against
Cognito, or `@supabase/ssr`'s `createServerClient` + `auth.getUser()` (the Next.js template's
`updateSession`) against Supabase Auth:

- `POST /login` signs the user in against the IdP and writes the library's cookies on its
  redirect. That response carries its cookies: there is no bug here.
- The middleware runs on every other page. It reads the library's cookies; when the access token
  has expired (Amplify's `isTokenExpired`, auth-js's `EXPIRY_MARGIN_MS`, with a tolerance scaled
  down to the demo's short token lifetimes) it refreshes the tokens itself at the IdP and writes
  the new cookies on the response it was *given* (`NextResponse.next()`, the template's
  `supabaseResponse`).
- Then it may answer with a *different* response: `/` sends a signed-in user to `/dashboard` and
  anyone else to `/login` (`NextResponse.redirect(...)`), and a page that needs a user redirects
  to `/login` when there is none. Those redirects are fresh responses: the refreshed `Set-Cookie`
  headers written a moment ago are dropped. That is the bug (the Supabase template's comment
  warns about exactly this: "the user's session terminates prematurely").

With Cognito's rotation the dropped cookies are fatal: the IdP has already invalidated the
refresh token the browser still holds, so the next request's refresh is rejected and the user is
signed out. GoTrue forgives the parent of its active token, so there the next request's refresh
costs a second IdP call instead. Every refresh attempt and what became of its cookies is
recorded in `events`, so the demo can tell what happened; the app itself never prints or logs a
token.
"""

from __future__ import annotations

import html
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field, replace

import aiohttp
from aiohttp import web

from cookieguard.config import CookieAttributes
from cookieguard.cookies import parse_cookie_header
from cookieguard.ops.demo.emulator import PoolInfo
from cookieguard.ops.demo.idps import DEMO_PASSWORD, AppAuth, CognitoAuth, IdPError
from cookieguard.session.layouts import FreshTokens, Session
from cookieguard.tokens.claims import ClaimsReader, decode_claims

# Pages the middleware does not run on (Next's `config.matcher` excluding them).
_PUBLIC_PATHS = frozenset({"/login", "/logout", "/favicon.ico"})
USER_KEY = web.RequestKey("demo_user", str)
EXPIRES_KEY = web.RequestKey("demo_access_token_exp", float)


@dataclass(frozen=True)
class AppEvent:
    """What the app's middleware (or sign-in) did on one request. Never holds a token."""

    path: str
    action: str  # signed_in | sign_in_failed | refreshed | refresh_rejected | signed_out
    cookies_dropped: bool = False  # its Set-Cookie headers were on a response it did not return
    error: str | None = None  # the IdP's error code, never its message


@dataclass
class DemoApp:
    """The app; `build()` returns the aiohttp application, `events` what it did.

    `auth` is the app's auth library and its IdP; a Cognito `PoolInfo` stands for Amplify's.
    """

    auth: AppAuth | PoolInfo
    refresh_tolerance_s: float = 0.5  # Amplify's isTokenExpired uses 5 s for hour-long tokens
    cookie_attributes: CookieAttributes = field(default_factory=CookieAttributes)
    on_event: Callable[[AppEvent], None] | None = None
    events: list[AppEvent] = field(default_factory=list)
    clock: Callable[[], float] = time.time  # wall clock; tests move it forward

    def __post_init__(self) -> None:
        self.library: AppAuth = CognitoAuth(self.auth) if isinstance(self.auth, PoolInfo) else self.auth
        self.layout = self.library.layout
        self.claims = ClaimsReader()
        self._idp: aiohttp.ClientSession | None = None

    @property
    def refreshes(self) -> int:
        """Refresh calls this app made to the IdP (successful or not)."""
        return sum(1 for e in self.events if e.action in ("refreshed", "refresh_rejected"))

    def build(self) -> web.Application:
        app = web.Application(middlewares=[self._middleware])
        app.cleanup_ctx.append(self._idp_client)
        app.router.add_get("/login", self._login_page)
        app.router.add_post("/login", self._login)
        app.router.add_get("/logout", self._logout)
        app.router.add_get("/dashboard", self._dashboard)
        app.router.add_get("/", self._home)
        return app

    def _record(self, event: AppEvent) -> None:
        self.events.append(event)
        if self.on_event is not None:
            self.on_event(event)

    async def _idp_client(self, app: web.Application) -> AsyncIterator[None]:
        self._idp = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10))
        yield
        await self._idp.close()

    @property
    def idp(self) -> aiohttp.ClientSession:
        assert self._idp is not None, "the app is not running"
        return self._idp

    def _write(self, session: Session, tokens: FreshTokens) -> tuple[list[str], float]:
        """The library's cookies for fresh tokens, as Set-Cookie header values; and the new expiry."""
        headers = [c.header() for c in self.layout.set_cookies(session, tokens, self.cookie_attributes)]
        claims = decode_claims(tokens.access_token)
        exp = claims.exp if claims is not None and claims.exp is not None else 0.0
        return headers, exp

    # -- the middleware (the bug lives here) -------------------------------------------------

    @web.middleware
    async def _middleware(
        self, request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> web.StreamResponse:
        if request.path in _PUBLIC_PATHS:
            return await handler(request)
        # `NextResponse.next()`: the response the library's cookie adapter writes refreshed tokens on.
        pending: list[str] = []
        user: str | None = None
        exp = 0.0
        event: AppEvent | None = None
        session = self.layout.read(parse_cookie_header(request.headers.get("Cookie", "")))
        if session is not None and session.user:
            claims = self.claims.read(session.access_token or "")  # per token, once
            exp = claims.exp if claims is not None and claims.exp is not None else 0.0
            # Amplify's isTokenExpired (now + clockDrift + tolerance > expiresAt); auth-js's
            # `expires_at - now < EXPIRY_MARGIN_MS` is the same test.
            if self.clock() + self.refresh_tolerance_s < exp:
                user = session.user
            elif session.refresh_token:
                answer = await self.library.refresh(self.idp, session, self.clock())
                if isinstance(answer, IdPError):
                    # Both libraries clear their session after a rejection, on the same response.
                    attrs = self.cookie_attributes
                    pending = [c.header() for c in self.layout.clear_cookies(session, attrs)]
                    event = AppEvent(request.path, "refresh_rejected", error=answer.code)
                else:
                    pending, exp = self._write(session, answer)
                    user = session.user
                    event = AppEvent(request.path, "refreshed")

        if request.path == "/" or user is None:
            # `return NextResponse.redirect(...)`: a new response; `pending` is not on it.
            target = "/dashboard" if user is not None else "/login"
            if event is not None:
                self._record(replace(event, cookies_dropped=bool(pending)))
            return web.Response(status=302, headers={"Location": target})

        if event is not None:
            self._record(event)
        request[USER_KEY] = user
        request[EXPIRES_KEY] = exp
        response = await handler(request)
        for header in pending:  # `return response`: the cookies arrive
            response.headers.add("Set-Cookie", header)
        return response

    # -- pages ----------------------------------------------------------------------------------

    async def _home(self, request: web.Request) -> web.StreamResponse:
        raise web.HTTPFound("/dashboard")  # not reached: the middleware answers for `/`

    async def _dashboard(self, request: web.Request) -> web.Response:
        user, exp = request[USER_KEY], request[EXPIRES_KEY]
        left = (
            f"<p>Your access token expires at {time.strftime('%H:%M:%S', time.localtime(exp))}"
            f" (in {max(0, round(exp - self.clock()))} s). After that, open "
            '<a href="/">Home</a>: the middleware refreshes the tokens, then redirects here.</p>'
        )
        return _page(
            "Dashboard",
            f"<p>Signed in as <b>{html.escape(user)}</b>.</p>{left}"
            '<p><a href="/">Home</a> · <a href="/dashboard">Dashboard</a> · '
            '<a href="/logout">Sign out</a></p>',
        )

    async def _login_page(self, request: web.Request) -> web.Response:
        return _page(
            "Sign in",
            "<p>You are signed out.</p>"
            '<form method="post" action="/login">'
            f'<label>User <input name="username" value="{html.escape(self.library.demo_user)}"></label> '
            f'<label>Password <input name="password" type="password" value="{DEMO_PASSWORD}"></label> '
            '<button type="submit">Sign in</button></form>',
        )

    async def _login(self, request: web.Request) -> web.Response:
        form = await request.post()
        username, password = str(form.get("username", "")), str(form.get("password", ""))
        answer = await self.library.sign_in(self.idp, username, password, self.clock())
        if isinstance(answer, IdPError):
            self._record(AppEvent("/login", "sign_in_failed", error=answer.code))
            return _page("Sign in", "<p>Wrong user or password.</p>", status=401)
        response = web.Response(status=302, headers={"Location": "/dashboard"})
        for header in self._write(answer.session, answer.tokens)[0]:
            response.headers.add("Set-Cookie", header)
        self._record(AppEvent("/login", "signed_in"))
        return response

    async def _logout(self, request: web.Request) -> web.Response:
        response = web.Response(status=302, headers={"Location": "/login"})
        session = self.layout.read(parse_cookie_header(request.headers.get("Cookie", "")))
        if session is not None:
            for cookie in self.layout.clear_cookies(session, self.cookie_attributes):
                response.headers.add("Set-Cookie", cookie.header())
            self._record(AppEvent("/logout", "signed_out"))
        return response


def _page(title: str, body: str, status: int = 200) -> web.Response:
    text = (
        f"<!doctype html><html><head><meta charset='utf-8'><title>{title}</title></head>"
        f"<body><h1>{title}</h1>{body}</body></html>"
    )
    return web.Response(text=text, status=status, content_type="text/html")
