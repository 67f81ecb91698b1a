"""The demo's two modes: a scripted story (`run_demo`) and a pair left running (`serve_demo`).

One story for every provider (`demo.idps`: Cognito + Amplify, Supabase + `@supabase/ssr`). What
is printed is counted, not assumed: refresh calls at the IdP (its own counter), the app's own
refresh attempts and what became of their cookies (the app's record), cookieguard's refresh
outcomes (its `/metrics`), the refresh tokens that actually reached the browser (its cookie jar)
and, where the IdP counts them, its `already used` answers. A refresh is *lost* when the IdP
answered with tokens that never reached the browser: with Cognito's rotation that signs the user
out on the next refresh; GoTrue gives the same refresh token out again when its parent comes
back, so there a lost answer costs a second refresh instead.
"""

from __future__ import annotations

import asyncio
import re
import signal
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TextIO

import aiohttp
import yaml
from aiohttp import web

from cookieguard.config import CookieAttributes
from cookieguard.loader import parse_config
from cookieguard.ops.demo.app import AppEvent, DemoApp
from cookieguard.ops.demo.browser import Hop, ScriptedBrowser, short_name
from cookieguard.ops.demo.emulator import EmulatorUnavailable
from cookieguard.ops.demo.idps import DEMO_PASSWORD, DemoIdP, make_idp

# The demo runs on plain http, where browsers refuse `Secure` cookies: both the app and
# cookieguard write them without it here. cookieguard's own default is `Secure`.
DEMO_COOKIES = CookieAttributes(secure=False)
# Amplify's isTokenExpired tolerance (5 s) and auth-js's EXPIRY_MARGIN_MS (90 s), scaled down to
# the demo's short lifetimes.
APP_REFRESH_TOLERANCE_S = 0.5
EXPIRY_MARGIN_S = 0.3  # how long after the access token's `exp` the browser comes back
MAX_REDIRECTS = 5

EXIT_OK = 0
EXIT_FIX_FAILED = 1
EXIT_CANNOT_LISTEN = 1
EXIT_UNAVAILABLE = 3  # the `demo` extra (moto) is not installed


@dataclass(frozen=True)
class DemoSettings:
    expiries: int = 3
    token_lifetime_s: int = 5
    host: str = "127.0.0.1"
    port: int = 0  # cookieguard (`--serve` defaults to 8080)
    app_port: int = 0  # the app (`--serve` defaults to 3000)
    provider: str = "cognito"  # `--provider`: cognito | supabase

    @property
    def before_expiry_s(self) -> int:
        """cookieguard's `refresh.before_expiry`: before the app's own tolerance, well within the lifetime."""
        return max(1, self.token_lifetime_s // 5)


@dataclass
class PhaseResult:
    name: str
    signed_in: bool = True
    expiries_passed: int = 0
    signed_out_at: int | None = None
    idp_refreshes: int = 0
    app_refreshes: int = 0
    rejected: int = 0
    successful: int = 0
    delivered: int = 0  # new refresh tokens the browser received after sign-in
    already_used: int | None = None  # the IdP's `already used` answers, where it counts them
    reissued: int = 0  # refreshes the IdP answered with a token it had issued before

    @property
    def lost(self) -> int:
        return max(0, self.successful - self.delivered)

    def verdict(self) -> str:
        refreshes = f"{self.idp_refreshes} refresh{'es' if self.idp_refreshes != 1 else ''}"
        if self.rejected:
            refreshes += f" ({self.rejected} rejected)"
        if self.signed_in:
            state = f"signed in after {_plural(self.expiries_passed, 'expiry', 'expiries')}"
        else:
            state = f"signed out after {_plural(self.signed_out_at or 0, 'expiry', 'expiries')}"
        text = f"{state}, {refreshes}, {self.lost} lost"
        if self.already_used is not None:
            text += f", {self.already_used} already used"
        return text


@dataclass
class _Stack:
    """What one demo run started, stopped in reverse order."""

    idp: DemoIdP
    app: DemoApp
    app_url: str = ""
    guard_url: str = ""
    admin_url: str = ""  # healthz, readyz and metrics (`admin_listen`: a port of its own, on loopback)
    runners: list[web.AppRunner] = field(default_factory=list)


def _plural(n: int, one: str, many: str) -> str:
    return f"{n} {one if n == 1 else many}"


# ---------------------------------------------------------------------------------------------
# Start and stop the three parts
# ---------------------------------------------------------------------------------------------


def guard_config_yaml(
    idp: DemoIdP, app_url: str, settings: DemoSettings, *, log_level: str
) -> tuple[str, dict[str, str]]:
    """cookieguard's configuration for the demo (a YAML document, as a user would write it) and
    the environment its `${...}` refer to (Supabase's anon key)."""
    provider, env = idp.guard_sections()
    config: dict[str, Any] = {
        "listen": f"{settings.host}:{settings.port}",
        "upstream": app_url,
        "provider": provider,
        "cookies": {"layout": idp.layout_name, "attributes": {"secure": DEMO_COOKIES.secure}},
        "refresh": {"before_expiry": f"{settings.before_expiry_s}s"},
        "logging": {"level": log_level, "format": "console"},
    }
    return yaml.safe_dump(config, sort_keys=False), env


async def _start(app: web.Application, host: str, port: int) -> tuple[web.AppRunner, str]:
    runner = web.AppRunner(app, access_log=None, handle_signals=False, shutdown_timeout=2)
    await runner.setup()
    try:
        await web.TCPSite(runner, host, port).start()
    except BaseException:
        await runner.cleanup()
        raise
    bound_host, bound_port = runner.addresses[0][:2]
    return runner, f"http://{bound_host}:{bound_port}"


async def _start_stack(
    settings: DemoSettings, *, log_level: str, on_event: Callable[[AppEvent], None] | None = None
) -> _Stack:
    """The IdP, then the app, then cookieguard; on failure, what was started is stopped."""
    from cookieguard.app import build_admin_app, build_app
    from cookieguard.edge.admin import ADMIN_KEY
    from cookieguard.logs import configure_logging, get_logger

    configure_logging(log_level, "console")
    idp = make_idp(settings.provider, settings.token_lifetime_s)
    await idp.start()
    app = DemoApp(idp.auth, APP_REFRESH_TOLERANCE_S, DEMO_COOKIES, on_event=on_event)
    stack = _Stack(idp, app)
    try:
        runner, stack.app_url = await _start(app.build(), settings.host, settings.app_port)
        stack.runners.append(runner)
        text, env = guard_config_yaml(idp, stack.app_url, settings, log_level=log_level)
        config = parse_config(text, env=env, source="<demo>")
        # What `cookieguard run` logs at start-up, so the demo's log names its provider too.
        get_logger().info(
            "config_loaded",
            path=config.source,
            routes=len(config.routes),
            provider=idp.kind,
            layout=config.cookies.layout,
            store=config.store.kind,
        )
        guard = build_app(config)
        runner, stack.guard_url = await _start(guard, settings.host, settings.port)
        stack.runners.append(runner)
        runner, stack.admin_url = await _start(build_admin_app(guard[ADMIN_KEY], config), "127.0.0.1", 0)
        stack.runners.append(runner)
    except BaseException:
        await _stop_stack(stack)
        raise
    return stack


async def _stop_stack(stack: _Stack) -> None:
    for runner in reversed(stack.runners):
        await runner.cleanup()
    stack.runners.clear()
    await stack.idp.stop()


# ---------------------------------------------------------------------------------------------
# The scripted story
# ---------------------------------------------------------------------------------------------


class _Narrator:
    def __init__(self, out: TextIO) -> None:
        self.out = out

    def line(self, text: str = "") -> None:
        print(text, file=self.out, flush=True)

    def hop(self, label: str, hop: Hop, note: str) -> None:
        target = f"-> {hop.location}" if hop.location else (hop.title or "")
        cookies = [f"+{short_name(n)}" for n in hop.stored] + [f"-{short_name(n)}" for n in hop.deleted]
        cookies += [f"refused {short_name(n)} (Secure on http)" for n in hop.refused]
        got = " ".join(cookies) if cookies else "none"
        request = f"{hop.method} {hop.path}"
        self.line(f"  {label:<9} {request:<15} {hop.status} {target:<14} cookies: {got}")
        if note:
            self.line(f"  {'':<9} {'':<15} {note}")


class _Story:
    def __init__(self, stack: _Stack, http: aiohttp.ClientSession, say: _Narrator) -> None:
        self.stack = stack
        self.http = http
        self.say = say

    async def phase(self, name: str, base_url: str, expiries: int, *, through_guard: bool) -> PhaseResult:
        result = PhaseResult(name)
        idp, app = self.stack.idp, self.stack.app
        browser = ScriptedBrowser(base_url, self.http, app.layout)
        idp_before, app_before, reissued_before = idp.refresh_calls, app.refreshes, idp.reissued
        already_used_before = idp.already_used
        events_before = len(app.events)
        guard_before = await self._guard_outcomes() if through_guard else {}

        form = {"username": app.library.demo_user, "password": DEMO_PASSWORD}
        signed_in = await self.navigate(browser, result, "sign in", "POST", "/login", form)
        self.say.line(f"  {'':<9} => {'signed in' if signed_in else 'NOT signed in'}")
        for n in range(1, expiries + 1):
            exp = browser.access_token_exp()
            if exp is None:
                break
            wait_s = max(0.0, exp + EXPIRY_MARGIN_S - time.time())
            self.say.line(f"  ... waiting {wait_s:.1f} s until the access token has expired")
            await asyncio.sleep(wait_s)
            signed_in = await self.navigate(browser, result, f"expiry {n}", "GET", "/")
            if not signed_in:
                result.signed_in, result.signed_out_at = False, n
                self.say.line(f"  {'':<9} => SIGNED OUT: the user has to sign in again")
                break
            result.expiries_passed = n
            self.say.line(f"  {'':<9} => still signed in")

        result.idp_refreshes = idp.refresh_calls - idp_before
        result.app_refreshes = app.refreshes - app_before
        result.reissued = idp.reissued - reissued_before
        if already_used_before is not None:
            result.already_used = (idp.already_used or 0) - already_used_before
        app_events = app.events[events_before:]
        result.successful = sum(1 for e in app_events if e.action == "refreshed")
        result.rejected = sum(1 for e in app_events if e.action == "refresh_rejected")
        if through_guard:
            after = await self._guard_outcomes()
            result.successful += int(after.get("refreshed", 0) - guard_before.get("refreshed", 0))
            result.rejected += int(after.get("rejected", 0) - guard_before.get("rejected", 0))
        return result

    async def navigate(
        self,
        browser: ScriptedBrowser,
        result: PhaseResult,
        label: str,
        method: str,
        path: str,
        form: dict[str, str] | None = None,
    ) -> bool:
        """Request `path` and follow redirects like a browser; True if it ends signed in."""
        idp, app = self.stack.idp, self.stack.app
        hop: Hop | None = None
        for _ in range(MAX_REDIRECTS):
            idp_before, reissued_before = idp.refresh_calls, idp.reissued
            events_before = len(app.events)
            held = browser.refresh_token_id()
            hop = await browser.request(method, path, form)
            idp_calls = idp.refresh_calls - idp_before
            events = app.events[events_before:]
            now_held = browser.refresh_token_id()
            signing_in = any(e.action == "signed_in" for e in events)
            if now_held is not None and now_held != held and not signing_in:
                result.delivered += 1  # a refreshed (rotated) refresh token reached the browser
            reissued = idp.reissued - reissued_before
            self.say.hop(label, hop, _explain(events, idp_calls, reissued, app.library.reuse_error))
            label = ""
            if hop.location is None or hop.status not in (301, 302, 303, 307, 308):
                break
            method, path, form = "GET", hop.location, None
        return hop is not None and hop.status == 200 and hop.path == "/dashboard"

    async def _guard_outcomes(self) -> dict[str, float]:
        """cookieguard's `cookieguard_refresh_total` by outcome, from its metrics endpoint."""
        async with self.http.get(f"{self.stack.admin_url}/.cookieguard/metrics") as resp:
            text = await resp.text()
        counts: dict[str, float] = {}
        for match in re.finditer(r'^cookieguard_refresh_total\{outcome="(\w+)"\} ([0-9.e+]+)$', text, re.M):
            counts[match.group(1)] = float(match.group(2))
        return counts


def _explain(events: list[AppEvent], idp_calls: int, reissued: int, reuse_error: str) -> str:
    """Who did what on one request, from the app's record and the IdP's counters."""
    notes: list[str] = []
    app_calls = 0
    for event in events:
        if event.action == "refreshed":
            app_calls += 1
            if event.cookies_dropped:
                notes.append("the app refreshed at the IdP, then its redirect dropped the new cookies")
            else:
                notes.append("the app refreshed at the IdP and its page carried the new cookies")
        elif event.action == "refresh_rejected":
            app_calls += 1
            why = " (a refresh token that was already used)" if event.error == reuse_error else ""
            notes.append(f"the app's refresh was rejected by the IdP: {event.error}{why}")
        elif event.action == "signed_in":
            notes.append("the app signed the user in")
    if reissued:
        notes.append(
            "the browser's refresh token was the parent of the active one: GoTrue answered with the "
            "token the redirect had dropped"
        )
    guard_calls = idp_calls - app_calls
    if guard_calls > 0:
        tail = "; the app got a fresh token and had nothing to refresh" if app_calls == 0 else ""
        notes.insert(0, f"cookieguard refreshed at the IdP{tail}")
    return "; ".join(notes)


async def _story(settings: DemoSettings, say: _Narrator) -> tuple[PhaseResult, PhaseResult]:
    stack = await _start_stack(settings, log_level="warning")
    try:
        idp = stack.idp
        say.line(
            f"cookieguard demo: an app with the redirect bug, a local {idp.title} IdP, cookieguard in front"
        )
        say.line(f"  IdP          {idp.describe(settings.token_lifetime_s)}")
        say.line(
            f"  app          {stack.app_url}: its middleware refreshes an expired token itself, then `/` "
            "answers with a redirect that drops the new cookies"
        )
        say.line(
            f"  cookieguard  {stack.guard_url} -> app, provider.kind {idp.kind}, cookies.layout "
            f"{idp.layout_name}, refresh.before_expiry {settings.before_expiry_s}s "
            "(cookies without `Secure`: the demo runs on plain http)"
        )
        timeout = aiohttp.ClientTimeout(total=15)
        async with aiohttp.ClientSession(cookie_jar=aiohttp.DummyCookieJar(), timeout=timeout) as http:
            story = _Story(stack, http, say)
            say.line()
            say.line("1) direct: browser -> app")
            direct = await story.phase("direct", stack.app_url, settings.expiries, through_guard=False)
            say.line()
            say.line("2) through cookieguard: browser -> cookieguard -> app")
            guarded = await story.phase(
                "through cookieguard", stack.guard_url, settings.expiries, through_guard=True
            )
        return direct, guarded
    finally:
        await _stop_stack(stack)


def run_demo(settings: DemoSettings, out: TextIO | None = None) -> int:
    """The scripted story, both ways; exit status 0 when cookieguard kept the user signed in."""
    say = _Narrator(out or sys.stdout)
    started = time.monotonic()
    try:
        direct, guarded = asyncio.run(_story(settings, say))
    except EmulatorUnavailable as exc:
        print(f"cookieguard demo: {exc}", file=sys.stderr)
        return EXIT_UNAVAILABLE
    say.line()
    say.line("verdict")
    say.line(f"  direct:              {direct.verdict()}")
    say.line(f"  through cookieguard: {guarded.verdict()}")
    say.line("  (lost: refresh answers that never reached the browser; counted at the IdP and in the jar)")
    if guarded.app_refreshes:
        say.line(f"  (behind cookieguard the app still refreshed {guarded.app_refreshes} time(s) itself)")
    if direct.signed_in and direct.reissued:
        say.line(
            f"  (directly the user stayed signed in, at a price: each time the redirect dropped the app's "
            f"refresh, the next page refreshed again with the same spent refresh token and GoTrue, which "
            f"forgives the parent of the active token at any time, answered with the token it had already "
            f"issued: {direct.idp_refreshes} refreshes for {direct.expiries_passed} expiries, "
            f"{direct.reissued} of them answered that way)"
        )
        say.line(
            "  (with GoTrue the redirect bug alone does not sign one browser out; "
            "`refresh_token_already_used` needs a refresh token two rotations old, used more than 10 s "
            "after its revocation, e.g. by a request that was in flight across two refreshes)"
        )
    elif direct.signed_in:
        say.line("  (the direct run did not show the bug this time)")
    say.line(f"  took {time.monotonic() - started:.1f} s")
    fixed = (
        guarded.signed_in
        and guarded.lost == 0
        and not guarded.already_used
        and guarded.expiries_passed == settings.expiries
    )
    return EXIT_OK if fixed else EXIT_FIX_FAILED


# ---------------------------------------------------------------------------------------------
# --serve: the pair left running for a person with a browser
# ---------------------------------------------------------------------------------------------


def serve_demo(settings: DemoSettings, out: TextIO | None = None) -> int:
    """Start the IdP, the app and cookieguard, print URLs, run until SIGTERM/SIGINT."""
    say = _Narrator(out or sys.stdout)
    try:
        return asyncio.run(_serve(settings, say))
    except EmulatorUnavailable as exc:
        print(f"cookieguard demo: {exc}", file=sys.stderr)
        return EXIT_UNAVAILABLE


def _print_event(say: _Narrator) -> Callable[[AppEvent], None]:
    def show(event: AppEvent) -> None:
        if event.action == "refreshed":
            what = "refreshed tokens at the IdP" + (
                "; its redirect DROPPED the new cookies" if event.cookies_dropped else "; cookies sent"
            )
        elif event.action == "refresh_rejected":
            what = f"refresh rejected by the IdP ({event.error}): the user is signed out"
        else:
            what = event.action.replace("_", " ")
        say.line(f"[app] {event.path}: {what}")

    return show


async def _serve(settings: DemoSettings, say: _Narrator) -> int:
    try:
        stack = await _start_stack(settings, log_level="info", on_event=_print_event(say))
    except OSError as exc:
        print(
            f"cookieguard demo: cannot listen: {exc.strerror or exc} (use --port / --app-port)",
            file=sys.stderr,
        )
        return EXIT_CANNOT_LISTEN
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    try:
        # Browsers do not separate cookies by port: the direct app is shown under another host
        # name so that its cookies and cookieguard's never mix in one browser.
        direct_url = stack.app_url.replace("127.0.0.1", "localhost", 1)
        idp = stack.idp
        say.line("cookieguard demo is running (Ctrl-C stops it):")
        say.line(f"  through cookieguard (the fix):  {stack.guard_url}/")
        say.line(f"  the app directly (the bug):     {direct_url}/")
        say.line(f"  sign in as {stack.app.library.demo_user!r}, password {DEMO_PASSWORD!r} (prefilled)")
        if idp.already_used is None:
            after = "directly you are signed out, through cookieguard you stay signed in"
        else:
            after = (
                "directly the app refreshes twice (the second time GoTrue hands out the token the "
                "redirect dropped), through cookieguard once"
            )
        say.line(f"  access tokens live {settings.token_lifetime_s} s; after that, click Home: {after}")
        say.line(f"  IdP ({idp.title}): {idp.endpoint}")
        say.line(f"  cookieguard admin: {stack.admin_url}/.cookieguard/healthz, /.cookieguard/metrics")
        say.line("  cookies are written without `Secure` because the demo runs on plain http")
        await stop.wait()
        say.line("cookieguard demo: stopping")
    finally:
        # The handlers stay while stopping: a second Ctrl-C must not interrupt the cleanup.
        await _stop_stack(stack)
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(sig)
    return EXIT_OK
