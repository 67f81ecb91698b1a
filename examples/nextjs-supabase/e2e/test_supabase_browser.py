"""A real browser, the real Next.js + @supabase/ssr app, a GoTrue-like server, with and without cookieguard.

What runs, all on loopback and ephemeral ports, each stopped by its own PID (or, for the auth
server, closed on its own event loop):
- the auth server: `cookieguard.ops.demo.gotrue.GoTrueServer` (GoTrue's rotation and reuse rules, ES256
  keys with a JWKS, the gateway's `apikey` check), in a thread of this process, so the test reads
  its counters (`stats.refresh_calls`, `reused_parent`, `already_used`) directly;
- the app: `next start -H localhost` of the example's production build (`make e2e` builds it),
  pointed at that server by NEXT_PUBLIC_SUPABASE_URL / NEXT_PUBLIC_SUPABASE_ANON_KEY;
- cookieguard: `cookieguard run` in front of the app (second test only), `provider.kind:
  supabase`, `cookies.layout: supabase`;
- the browser: Debian's Chromium, headless, a fresh profile per test, driven by `browser.mjs`.

The browser signs in on /login (a Server Action: signInWithPassword on the server), waits for the
access token to come due, then follows the dashboard's link to `/`, which the middleware answers
with the template's bare redirect to /dashboard. Each run writes what the browser saw, hop by hop,
and a screenshot of its last page under test-output/e2e/.

Time. auth-js refreshes a session whenever less than EXPIRY_MARGIN_MS (90 s: 3 ticks of 30 s) of
its access token is left, on the server too; cookieguard's refresh window is
min(refresh.before_expiry, half the token's lifetime). So the tokens live ACCESS_TOKEN_TTL_S =
200 s (cookieguard's window: 100 s, ahead of auth-js's 90 s), and the auth server's clock runs
behind the real one (`OffsetClock`) so that a fresh token has only a few real seconds to go before
it comes due: no test waits out a 100 s window three times. Every token still says what a 200 s
token says (`iat`, `exp` 200 s apart); only the moment it was issued is moved into the past.

Races, and why the runs are deterministic:
- The app has no browser-side Supabase client (sign-in is a Server Action, the pages are server
  components), so nothing refreshes on a timer: every refresh is made by the request the test
  just sent, and the auth server's counters have moved before the page the test waits for loads.
- Through cookieguard, cookieguard's window opens 10 s before the app's (100 s vs 90 s before
  `exp`); cookieguard refreshes before it forwards, so even a click that lands late reaches the
  app with a fresh token.
- The only waiting that is not on an event is for time itself: the token has to come due (or
  expire) in real time. `_wait_until` sleeps until that moment read from the browser's own cookie,
  with a deadline; everything else waits on navigations (`framenavigated`, `load`), on selectors,
  and on the response headers of each hop.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import tempfile
import threading
import time
import uuid
from collections.abc import Coroutine, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest

from cookieguard.ops.demo.gotrue import GoTrueServer, ManualClock, User
from tests.support.e2e import BrowserDriver, next_start
from tests.support.proxy_process import CookieguardProcess

pytestmark = pytest.mark.e2e

APP = Path(__file__).resolve().parents[1]
ROOT = APP.parents[1]
OUTPUT = ROOT / "test-output" / "e2e"
PASSWORD = "Correct-Horse-9"
ANON_KEY = "sb_publishable_e2e_" + uuid.uuid4().hex
COOKIE = "sb-127-auth-token"  # @supabase/ssr's name for http://127.0.0.1:<port>: the host's first label
ACCESS_TOKEN_TTL_S = 200
AUTH_JS_MARGIN_S = 90  # auth-js EXPIRY_MARGIN_MS
BEFORE_EXPIRY_S = 100  # cookieguard's window: min(this, ACCESS_TOKEN_TTL_S / 2)
# Real seconds a fresh token has before cookieguard's window opens (through) / before it expires
# (directly: auth-js must see it really expired, or a refused refresh keeps the session).
THROUGH_DUE_AFTER_S = 5
DIRECT_EXPIRES_AFTER_S = AUTH_JS_MARGIN_S + 5
EXPIRIES = 3
DIRECT_EXPIRIES = 2

T = TypeVar("T")


class OffsetClock(ManualClock):
    """The auth server's clock: the real one, `behind_s` seconds late (tokens look older)."""

    def __init__(self) -> None:
        super().__init__()
        self.behind_s = 0.0

    def __call__(self) -> float:
        return time.time() - self.behind_s


class AuthServer:
    """The GoTrue test server on its own event loop, in a thread of the test process."""

    def __init__(self) -> None:
        self.clock = OffsetClock()
        self.server = GoTrueServer(anon_key=ANON_KEY, access_token_ttl_s=ACCESS_TOKEN_TTL_S, clock=self.clock)
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="gotrue", daemon=True)
        self._thread.start()
        self._run(self.server.start())

    def _run(self, coroutine: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(coroutine, self._loop).result(timeout=30)

    def fresh_tokens_last(self, seconds: float) -> None:
        """From now on a fresh access token has `seconds` of real time before `exp`."""
        self.clock.behind_s = ACCESS_TOKEN_TTL_S - seconds

    def add_user(self) -> str:
        email = f"user-{os.urandom(3).hex()}@example.com"

        async def add() -> None:
            user = User(str(uuid.uuid4()), email, PASSWORD, created_at=self.clock())
            self.server.users[user.id] = user

        self._run(add())
        return email

    def close(self) -> None:
        self._run(self.server.close())
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10)
        self._loop.close()


# -- processes ---------------------------------------------------------------------------------


class Browser(BrowserDriver):
    app = APP

    def session(self) -> dict[str, Any] | None:
        """The session in Chromium's cookie jar: `sb-127-auth-token` (or its chunks), decoded."""
        jar = {cookie["name"]: cookie["value"] for cookie in self.command("cookies")["cookies"]}
        if COOKIE in jar:
            value = jar[COOKIE]
        else:
            chunks = []
            while f"{COOKIE}.{len(chunks)}" in jar:
                chunks.append(jar[f"{COOKIE}.{len(chunks)}"])
            value = "".join(chunks)
        if not value:
            return None
        assert value.startswith("base64-"), "not @supabase/ssr's base64url encoding"
        encoded = value.removeprefix("base64-")
        session: dict[str, Any] = json.loads(base64.urlsafe_b64decode(encoded + "=" * (-len(encoded) % 4)))
        return session


class Transcript:
    """What the browser saw, step by step: printed, and written to test-output/e2e/<run>.txt."""

    def __init__(self, run: str, auth: AuthServer) -> None:
        self.run = run
        self._stats = auth.server.stats
        self._base = (self._stats.refresh_calls, self._stats.reused_parent, self._stats.already_used)
        self.lines: list[str] = []

    @property
    def refresh_calls(self) -> int:
        return self._stats.refresh_calls - self._base[0]

    @property
    def reused_parent(self) -> int:
        return self._stats.reused_parent - self._base[1]

    @property
    def already_used(self) -> int:
        return self._stats.already_used - self._base[2]

    def step(self, label: str, page: dict[str, Any]) -> dict[str, Any]:
        self.lines.append(label)
        for hop in page["hops"]:
            target = f" -> {hop['location']}" if hop["location"] else ""
            cookies = " ".join(hop["set_cookies"]) or "none"
            self.lines.append(
                f"    {hop['method']} {hop['path']:<10} {hop['status']}{target:<16} set-cookie: {cookies}"
            )
        shown = page["text"].splitlines()
        user = next((line for line in shown if line.startswith("Signed in as")), None)
        verdict = user if user else f"NOT SIGNED IN ({shown[0] if shown else 'empty page'})"
        self.lines.append(
            f"    => {page['url']}: {verdict}; auth server: {self.refresh_calls} refresh calls,"
            f" {self.reused_parent} answered for a spent parent token, {self.already_used} already used"
        )
        return page

    def note(self, text: str) -> None:
        self.lines.append(text)

    def write(self) -> Path:
        OUTPUT.mkdir(parents=True, exist_ok=True)
        path = OUTPUT / f"{self.run}.txt"
        path.write_text("\n".join(self.lines) + "\n")
        print(f"\n--- {self.run} ---\n" + "\n".join(self.lines))
        return path


def _wait_until(moment: float, what: str, transcript: Transcript) -> None:
    # The thing awaited is wall-clock time itself: the token has to come due in real time.
    remaining = moment - time.time()
    assert remaining < ACCESS_TOKEN_TTL_S, f"{what} is {remaining:.0f} s away: the clock setup is wrong"
    transcript.note(f"  ... waiting {max(remaining, 0):.1f} s until {what}")
    if remaining > 0:
        time.sleep(remaining)


# -- fixtures ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def auth() -> Iterator[AuthServer]:
    running = AuthServer()
    try:
        yield running
    finally:
        running.close()


@pytest.fixture(scope="module")
def next_app(auth: AuthServer) -> Iterator[str]:
    """`next start -H localhost` of the built app; its URL (http://localhost:<port>)."""
    env = {
        "NEXT_PUBLIC_SUPABASE_URL": auth.server.url,
        "NEXT_PUBLIC_SUPABASE_ANON_KEY": ANON_KEY,
        # supabase-js 2.119 builds its realtime client eagerly and needs a global WebSocket,
        # which Node 20 has only behind this flag (Node 22 has it by default).
        "NODE_OPTIONS": "--experimental-websocket",
    }
    with next_start(APP, env, OUTPUT / "next-supabase.log", ready_path="/login") as url:
        yield url


@pytest.fixture
def browser(tmp_path: Path) -> Iterator[Browser]:
    profile = Path(tempfile.mkdtemp(prefix="chromium-", dir=tmp_path))
    running = Browser(profile)
    yield running
    running.close()


def _sign_in(browser: Browser, transcript: Transcript, base: str, auth: AuthServer) -> str:
    email = auth.add_user()
    transcript.step("open the login page", browser.command("goto", url=base + "/login"))
    page = transcript.step(
        f"sign in as {email} (signInWithPassword in the login Server Action)",
        browser.command("sign_in", email=email, password=PASSWORD),
    )
    assert page["url"] == "/dashboard", page
    assert f"Signed in as {email}" in page["text"]
    assert transcript.refresh_calls == 0
    return email


def _cookie_names(hop: dict[str, Any]) -> list[str]:
    return [name for name in hop["set_cookies"] if name.lstrip("+-").startswith(COOKIE)]


# -- the two runs ------------------------------------------------------------------------------


def test_directly_the_redirect_drops_the_session_and_gotrue_hands_it_back(
    auth: AuthServer, next_app: str, browser: Browser
) -> None:
    auth.fresh_tokens_last(DIRECT_EXPIRES_AFTER_S)
    transcript = Transcript("supabase-direct", auth)
    transcript.note(f"1) direct: Chromium -> Next.js ({next_app})")
    try:
        email = _sign_in(browser, transcript, next_app, auth)
        for expiry in range(1, DIRECT_EXPIRIES + 1):
            before = browser.session()
            assert before is not None
            _wait_until(before["expires_at"] + 1, f"the access token has expired ({expiry})", transcript)
            page = transcript.step(
                f"expiry {expiry}: follow the link to /", browser.command("click", selector="#home")
            )
            after = browser.session()
            redirect, *rest = page["hops"]
            # The middleware refreshed (GoTrue rotated the refresh token) and answered `/` with
            # the template's bare redirect: the rotated session never reached the browser.
            assert (redirect["path"], redirect["status"], redirect["location"]) == ("/", 307, "/dashboard")
            assert _cookie_names(redirect) == [], redirect
            # On /dashboard the middleware refreshed again with the spent token. GoTrue answers a
            # spent token that is the *parent of the session's active token* with that active
            # token ("the client was not able to store the result"), however late, so the user
            # stays signed in: the bug costs a second refresh per expiry, not the session.
            assert [hop["path"] for hop in rest] == ["/dashboard"]
            assert _cookie_names(rest[0]) == [f"+{COOKIE}"], rest[0]
            assert page["url"] == "/dashboard" and f"Signed in as {email}" in page["text"], page
            assert (transcript.refresh_calls, transcript.reused_parent, transcript.already_used) == (
                2 * expiry,
                expiry,
                0,
            )
            assert after is not None and after["refresh_token"] != before["refresh_token"]
            # ...and what the browser now holds is the token minted on `/` and lost there.
            session_id = auth.server.session_id_of(after["refresh_token"])
            assert after["refresh_token"] == auth.server.active_refresh_token(session_id)
        browser.command("screenshot", path=str(OUTPUT / "supabase-direct.png"))
    finally:
        transcript.write()


def test_through_cookieguard_one_refresh_per_expiry(
    auth: AuthServer, next_app: str, browser: Browser
) -> None:
    auth.fresh_tokens_last(BEFORE_EXPIRY_S + THROUGH_DUE_AFTER_S)
    # The agreed configuration for Next.js + Supabase users, pointed at the test server.
    config = {
        "listen": "127.0.0.1:0",
        "upstream": next_app,
        "provider": {"kind": "supabase", "url": auth.server.url, "anon_key": ANON_KEY},
        "cookies": {"layout": "supabase"},  # sb-127-auth-token, derived from provider.url
        "refresh": {"before_expiry": f"{BEFORE_EXPIRY_S}s"},
        "routes": [{"match": "/_next/static/", "refresh": False}, {"match": "/"}],
    }
    proxy = CookieguardProcess(config).start()
    # localhost, the host the app's cookies are set for (cookies are per host, not per port).
    base = f"http://localhost:{proxy.port}"
    transcript = Transcript("supabase-through-cookieguard", auth)
    transcript.note(f"2) through cookieguard: Chromium -> cookieguard ({base}) -> Next.js ({next_app})")
    try:
        email = _sign_in(browser, transcript, base, auth)
        for expiry in range(1, EXPIRIES + 1):
            before = browser.session()
            assert before is not None
            _wait_until(
                before["expires_at"] - BEFORE_EXPIRY_S + 0.5,
                f"cookieguard's window opens ({expiry})",
                transcript,
            )
            page = transcript.step(
                f"expiry {expiry}: follow the link to /", browser.command("click", selector="#home")
            )
            redirect, *rest = page["hops"]
            # cookieguard refreshed before forwarding and merged the new session cookie into the
            # app's bare redirect; /dashboard then had a fresh token and nothing to refresh.
            assert (redirect["path"], redirect["status"], redirect["location"]) == ("/", 307, "/dashboard")
            assert f"+{COOKIE}" in _cookie_names(redirect) or f"+{COOKIE}.0" in _cookie_names(redirect), (
                redirect
            )
            assert [hop["path"] for hop in rest] == ["/dashboard"]
            assert _cookie_names(rest[0]) == [], rest[0]
            assert page["url"] == "/dashboard" and f"Signed in as {email}" in page["text"], page
            assert (transcript.refresh_calls, transcript.already_used, transcript.reused_parent) == (
                expiry,
                0,
                0,
            )
            after = browser.session()
            assert after is not None
            assert after["refresh_token"] != before["refresh_token"], "the rotated refresh token was lost"
            assert after["expires_at"] > before["expires_at"]
            assert after["user"]["email"] == email  # the fields cookieguard does not own are kept
        browser.command("screenshot", path=str(OUTPUT / "supabase-through-cookieguard.png"))
    finally:
        transcript.write()
        proxy.close()
        (OUTPUT / "cookieguard-supabase.log").write_text(proxy.output() + "\n")

    outcomes = [event["outcome"] for event in proxy.events("token_refresh")]
    assert outcomes == ["refreshed"] * EXPIRIES
