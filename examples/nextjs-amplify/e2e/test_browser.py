"""A real browser, the real Next.js + Amplify app, a Cognito-compatible IdP, with and without cookieguard.

What runs, all on loopback and ephemeral ports, each stopped by its own PID:
- the IdP: `cookieguard.ops.demo.emulator` (moto's Cognito server) with rotating refresh tokens and
  `ACCESS_TOKEN_LIFETIME_S` access tokens, in this process;
- the app: `next start -H localhost` of the example's production build (`make e2e` builds it),
  with `jwks-redirect.cjs` preloaded so Amplify's JWT check fetches the emulator's keys;
- cookieguard: `cookieguard run` in front of the app (second test only);
- the browser: Debian's Chromium, headless, a fresh profile per test, driven by `browser.mjs`.

The browser signs in with Amplify's `signIn` (from the page, straight to the IdP), waits for the
access token to expire in real time, then follows the link to /go (the app's middleware answers
with a redirect) and to /profile (a rewrite). Each run writes what the browser saw, hop by hop,
and a screenshot of its last page under test-output/e2e/.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from cookieguard.ops.demo.emulator import CognitoEmulator, PoolInfo
from tests.support.e2e import BrowserDriver, next_start
from tests.support.proxy_process import CookieguardProcess

pytestmark = pytest.mark.e2e

APP = Path(__file__).resolve().parents[1]
ROOT = APP.parents[1]
OUTPUT = ROOT / "test-output" / "e2e"
PASSWORD = "Correct-Horse-9"
# Short enough for three expiries in about a minute, long enough that a step (a few page loads)
# never straddles one. Amplify counts a token as expired 5 s early; cookieguard's window is capped
# at half the lifetime (10 s here), so cookieguard always refreshes before the app would.
ACCESS_TOKEN_LIFETIME_S = 20
EXPIRIES = 3
# The session health run: the app's session-health.js polls every SESSION_POLL_MS; tokens live
# SESSION_TOKEN_LIFETIME_S, so cookieguard's refresh window (half of it, 6 s) opens a few polls after
# each refresh, and Amplify (which counts a token as expired 5 s early) never refreshes on its own
# while the browser signs in. The session endpoint lives under another admin_prefix than the
# default, handed to the script by the app's layout.
SESSION_POLL_MS = 1500
SESSION_TOKEN_LIFETIME_S = 12
HEALTH_PREFIX = "/_guard"
# (the dashboard's link, its path, where the browser ends up, what the page says about the way)
LINKS = [
    ("#go", "/go", "/dashboard", "Reached directly"),
    ("#profile", "/profile", "/profile", "through the rewrite"),
]


# -- processes ---------------------------------------------------------------------------------


class Browser(BrowserDriver):
    app = APP

    def access_token_exp(self) -> float:
        """`exp` of the access token the browser holds (Amplify's cookie, read from the profile)."""
        for cookie in self.command("cookies")["cookies"]:
            if cookie["name"].endswith(".accessToken"):
                payload = cookie["value"].split(".")[1]
                claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
                return float(claims["exp"])
        raise AssertionError("the browser holds no access token")

    def auth_cookies(self) -> dict[str, str]:
        """Amplify's cookies by their last name part (accessToken, refreshToken, ...)."""
        return {
            cookie["name"].rsplit(".", 1)[-1]: cookie["value"]
            for cookie in self.command("cookies")["cookies"]
            if cookie["name"].startswith("CognitoIdentityServiceProvider.")
        }

    def refresh_token(self) -> str | None:
        for cookie in self.command("cookies")["cookies"]:
            if cookie["name"].endswith(".refreshToken"):
                return str(cookie["value"])
        return None


class Transcript:
    """What the browser saw, step by step: printed, and written to test-output/e2e/<run>.txt."""

    def __init__(self, run: str, emulator: CognitoEmulator) -> None:
        self.run = run
        self._emulator = emulator
        self._base_calls = emulator.refresh_calls
        self.lines: list[str] = []

    @property
    def refresh_calls(self) -> int:
        return self._emulator.refresh_calls - self._base_calls

    def step(self, label: str, page: dict[str, Any]) -> dict[str, Any]:
        self.lines.append(f"{label}")
        for hop in page["hops"]:
            target = f" -> {hop['location']}" if hop["location"] else ""
            cookies = " ".join(_short(name) for name in hop["set_cookies"]) or "none"
            self.lines.append(
                f"    {hop['method']} {hop['path']:<10} {hop['status']}{target:<16} set-cookie: {cookies}"
            )
        shown = page["text"].splitlines()
        user = next((line for line in shown if line.startswith("Signed in as")), None)
        verdict = user if user else f"NOT SIGNED IN ({shown[0] if shown else 'empty page'})"
        self.lines.append(f"    => {page['url']}: {verdict}; IdP refresh calls so far: {self.refresh_calls}")
        return page

    def note(self, text: str) -> None:
        self.lines.append(text)

    def write(self) -> Path:
        OUTPUT.mkdir(parents=True, exist_ok=True)
        path = OUTPUT / f"{self.run}.txt"
        path.write_text("\n".join(self.lines) + "\n")
        print(f"\n--- {self.run} ---\n" + "\n".join(self.lines))
        return path


def _short(cookie_name: str) -> str:
    sign, name = cookie_name[0], cookie_name[1:]
    return sign + name.rsplit(".", 1)[-1]


def _exp(jwt: str) -> float:
    payload = jwt.split(".")[1]
    return float(json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))["exp"])


def _wait_for_expiry(browser: Browser, transcript: Transcript) -> None:
    # The thing awaited is wall-clock time itself: the token has to be really expired.
    exp = browser.access_token_exp()
    remaining = exp - time.time() + 1.0
    transcript.note(f"  ... waiting {max(remaining, 0):.1f} s until the access token has expired")
    if remaining > 0:
        time.sleep(remaining)


# -- fixtures ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def emulator() -> Iterator[CognitoEmulator]:
    with CognitoEmulator(
        access_token_lifetime_s=ACCESS_TOKEN_LIFETIME_S, rotate_refresh_tokens=True, retry_grace_period_s=0
    ) as running:
        yield running


@pytest.fixture(scope="module")
def pool(emulator: CognitoEmulator) -> PoolInfo:
    return emulator.create_pool()


@contextlib.contextmanager
def _next_server(
    emulator: CognitoEmulator, pool: PoolInfo, log_name: str, extra_env: dict[str, str] | None = None
) -> Iterator[str]:
    """`next start -H localhost` of the built app; yields its URL (http://localhost:<port>)."""
    env = {
        "COGNITO_USER_POOL_ID": pool.user_pool_id,
        "COGNITO_CLIENT_ID": pool.client_id,
        "COGNITO_USER_POOL_ENDPOINT": emulator.endpoint,
        "COGNITO_JWKS_ORIGIN": emulator.endpoint,
        "NODE_OPTIONS": f"--require {APP / 'e2e' / 'jwks-redirect.cjs'}",
        **(extra_env or {}),
    }
    with next_start(APP, env, OUTPUT / log_name) as url:
        yield url


@pytest.fixture(scope="module")
def next_app(emulator: CognitoEmulator, pool: PoolInfo) -> Iterator[str]:
    """The app as it ships: the session health script polls every minute (its default)."""
    with _next_server(emulator, pool, "next.log") as url:
        yield url
    assert "jwks-redirect:" in (OUTPUT / "next.log").read_text(), "Amplify never fetched the JWKS"


@pytest.fixture
def browser(tmp_path: Path) -> Iterator[Browser]:
    profile = Path(tempfile.mkdtemp(prefix="chromium-", dir=tmp_path))
    running = Browser(profile)
    yield running
    running.close()


def _start_cookieguard(
    emulator: CognitoEmulator,
    pool: PoolInfo,
    app_url: str,
    refresh: dict[str, str],
    admin_prefix: str | None = None,
) -> CookieguardProcess:
    """`cookieguard run` with the configuration the README tells Next.js + Amplify users to run,
    pointed at the emulator and the app."""
    config = yaml.safe_load((ROOT / "config" / "cognito.yaml").read_text())
    config["listen"] = "127.0.0.1:0"
    config["provider"] |= {"endpoint": emulator.endpoint, "jwks_url": pool.jwks_url}
    config["refresh"] |= refresh
    if admin_prefix is not None:
        config["admin_prefix"] = admin_prefix
    env = {
        "APP_UPSTREAM": app_url,
        "COGNITO_USER_POOL_ID": pool.user_pool_id,
        "COGNITO_CLIENT_ID": pool.client_id,
    }
    return CookieguardProcess(config, env=env).start()


def _sign_in(
    browser: Browser, transcript: Transcript, base: str, emulator: CognitoEmulator, pool: PoolInfo
) -> str:
    username = f"user-{os.urandom(3).hex()}@example.com"
    emulator.create_user(pool, username, PASSWORD, email=username)
    transcript.step("open the sign-in page", browser.command("goto", url=base + "/sign-in"))
    page = transcript.step(
        f"sign in as {username} (Amplify signIn in the browser, USER_PASSWORD_AUTH)",
        browser.command("sign_in", username=username, password=PASSWORD),
    )
    assert page["url"] == "/dashboard", page
    assert f"Signed in as {username}" in page["text"]
    return username


# -- the two runs ------------------------------------------------------------------------------


def test_directly_the_app_signs_the_user_out_at_the_first_expiry(
    emulator: CognitoEmulator, pool: PoolInfo, next_app: str, browser: Browser
) -> None:
    transcript = Transcript("direct", emulator)
    transcript.note(f"1) direct: Chromium -> Next.js ({next_app})")
    try:
        _sign_in(browser, transcript, next_app, emulator, pool)
        _wait_for_expiry(browser, transcript)
        page = transcript.step("expiry 1: follow the link to /go", browser.command("click", selector="#go"))
        browser.command("screenshot", path=str(OUTPUT / "direct.png"))
    finally:
        transcript.write()

    # The middleware refreshed (rotating the refresh token) and answered /go with a redirect
    # that dropped the new cookies; on /dashboard it refreshed again with the spent token, the
    # IdP refused (RefreshTokenReuseException), Amplify cleared the session: signed out.
    assert page["url"] == "/sign-in", page
    assert "Signed in as" not in page["text"]
    assert transcript.refresh_calls == 2
    assert all(hop["set_cookies"] == [] for hop in page["hops"][:1]), "the redirect carried cookies"


def test_through_cookieguard_the_user_stays_signed_in(
    emulator: CognitoEmulator, pool: PoolInfo, next_app: str, browser: Browser
) -> None:
    # before_expiry is capped at half the lifetime (10 s) anyway.
    proxy = _start_cookieguard(emulator, pool, next_app, refresh={"before_expiry": "8s"})
    # localhost, as in production behind a host name: Chromium keeps Amplify's Secure cookies on
    # http://localhost (a secure context), and they are shared by every port of it.
    base = f"http://localhost:{proxy.port}"
    transcript = Transcript("through-cookieguard", emulator)
    transcript.note(f"2) through cookieguard: Chromium -> cookieguard ({base}) -> Next.js ({next_app})")
    try:
        username = _sign_in(browser, transcript, base, emulator, pool)
        for expiry in range(1, EXPIRIES + 1):
            old_exp, old_refresh_token = browser.access_token_exp(), browser.refresh_token()
            _wait_for_expiry(browser, transcript)
            # The first request after the expiry alternates between the redirect and the rewrite.
            links = LINKS if expiry % 2 else LINKS[::-1]
            for order, (selector, link, lands_on, what) in enumerate(links):
                page = transcript.step(
                    f"expiry {expiry}: follow the link to {link}", browser.command("click", selector=selector)
                )
                assert page["url"] == lands_on, page
                assert f"Signed in as {username}" in page["text"]
                assert what in page["text"]
                first_hop = page["hops"][0]
                assert first_hop["status"] == (307 if link == "/go" else 200)
                delivered = "+accessToken" in [_short(name) for name in first_hop["set_cookies"]]
                # cookieguard refreshed on the first request after the expiry and merged the new
                # cookies into the app's redirect or rewrite; the second request was fresh.
                assert delivered == (order == 0), first_hop
                assert transcript.refresh_calls == expiry

            assert browser.access_token_exp() > old_exp
            assert browser.refresh_token() not in (None, old_refresh_token), "the rotated token was lost"
        browser.command("screenshot", path=str(OUTPUT / "through-cookieguard.png"))
    finally:
        transcript.write()
        proxy.close()
        (OUTPUT / "cookieguard.log").write_text(proxy.output() + "\n")

    outcomes = [event["outcome"] for event in proxy.events("token_refresh")]
    assert outcomes == ["refreshed"] * EXPIRIES


# -- the session health script ------------------------------------------------------------------


@pytest.fixture
def short_tokens(emulator: CognitoEmulator) -> Iterator[None]:
    emulator.access_token_lifetime_s = SESSION_TOKEN_LIFETIME_S
    yield
    emulator.reset()  # lifetime and injected failures back to the module's


def _poll_line(poll: dict[str, Any], start_ms: float) -> str:
    body = poll.get("body") or {}
    cookies = " ".join(_short(name) for name in poll.get("set_cookies") or []) or "none"
    return (
        f"    +{(poll['at_ms'] - start_ms) / 1000:5.1f} s  GET {HEALTH_PREFIX}/session {poll['status']}"
        f"  authenticated={body.get('authenticated')} reason={body.get('reason')}"
        f" expires_in={body.get('expires_in')}  set-cookie: {cookies}"
    )


def test_session_health_script_renews_in_place_and_signs_out_only_when_the_idp_says_so(
    emulator: CognitoEmulator, pool: PoolInfo, browser: Browser, short_tokens: None
) -> None:
    poll_s = SESSION_POLL_MS / 1000
    endpoint = f"{HEALTH_PREFIX}/session"
    app_env = {"SESSION_HEALTH_INTERVAL_MS": str(SESSION_POLL_MS), "COOKIEGUARD_SESSION_ENDPOINT": endpoint}
    with _next_server(emulator, pool, "next-session-health.log", app_env) as app_url:
        proxy = _start_cookieguard(
            emulator,
            pool,
            app_url,
            refresh={"before_expiry": "8s", "backoff": "2s"},  # the window is capped at 6 s anyway
            admin_prefix=HEALTH_PREFIX,
        )
        base = f"http://localhost:{proxy.port}"
        transcript = Transcript("session-health", emulator)
        transcript.note(
            f"3) session health: Chromium -> cookieguard ({base}, admin_prefix {HEALTH_PREFIX}) -> Next.js;"
            f" session-health.js polls every {poll_s:g} s, access tokens live {SESSION_TOKEN_LIFETIME_S} s"
        )
        polls: list[dict[str, Any]] = []
        start_ms = time.time() * 1000
        try:
            # The app serves the repository's script as it is, through cookieguard.
            with urllib.request.urlopen(base + "/session-health.js", timeout=10) as served:
                assert served.read() == (ROOT / "examples" / "session-health.js").read_bytes()

            _sign_in(browser, transcript, base, emulator, pool)
            tab = browser.command("watch_tab", endpoint=endpoint)
            start_ms = time.time() * 1000
            assert tab["url"] == "/dashboard" and tab["mark_intact"], tab
            stays = {"url": "/dashboard", "mark_intact": True, "navigations": 0, "documents": 0}

            # (a) Alive: a poll inside the refresh window renews the cookies; the page never reloads.
            before = browser.auth_cookies()
            calls = emulator.refresh_calls
            transcript.note("(a) the tab sits on /dashboard; the script polls")
            renewed = browser.command(
                "wait_poll",
                after=0,
                reasons=["refreshed"],
                timeout_ms=int((SESSION_TOKEN_LIFETIME_S + 3 * poll_s) * 1000),
            )
            assert {"+accessToken", "+idToken", "+refreshToken"} <= {
                _short(n) for n in renewed["poll"]["set_cookies"]
            }
            assert {k: renewed["tab"][k] for k in stays} == stays, renewed["tab"]
            after = browser.auth_cookies()
            assert after["accessToken"] != before["accessToken"], "the access-token cookie was not renewed"
            assert _exp(after["accessToken"]) > _exp(before["accessToken"])
            assert after["refreshToken"] != before["refreshToken"], "the rotated refresh token was lost"
            assert emulator.refresh_calls == calls + 1
            next_index = renewed["index"] + 1

            # (c) IdP down (every refresh call answers 503): the tab stays, even once the access
            # token has expired.
            emulator.fail_with, emulator.fail_ratio = 503, 1.0
            transcript.note("(c) the IdP answers every refresh with 503")
            down = browser.command(
                "wait_poll",
                after=next_index,
                reasons=["refresh_unavailable"],
                expired=True,
                timeout_ms=int((_exp(after["accessToken"]) - time.time() + 3 * poll_s) * 1000),
            )
            assert {k: down["tab"][k] for k in stays} == stays, down["tab"]
            assert emulator.injected_failures >= 1
            outage = browser.command("tab")["polls"][next_index : down["index"] + 1]
            assert all(p["body"]["authenticated"] is True for p in outage), outage
            assert any(p["body"]["reason"] == "refresh_unavailable" for p in outage[:-1]), (
                "expired on the first try?"
            )
            assert browser.auth_cookies()["refreshToken"] == after["refreshToken"], "a cookie was touched"

            # The IdP is back: the next poll after the session's backoff refreshes, still in place.
            emulator.fail_ratio = 0.0
            transcript.note("    the IdP answers again")
            back = browser.command(
                "wait_poll", after=down["index"] + 1, reasons=["refreshed"], timeout_ms=15_000
            )
            assert {k: back["tab"][k] for k in stays} == stays, back["tab"]

            # (b) The refresh token is revoked at the IdP: at the next refresh the IdP refuses, and
            # the tab goes to the sign-in page on that very poll's answer.
            revoked = browser.auth_cookies()["refreshToken"]
            emulator.revoke(pool, urllib.parse.unquote(revoked))
            transcript.note("(b) RevokeToken at the IdP for the browser's refresh token")
            refused = browser.command(
                "wait_poll",
                after=back["index"] + 1,
                reasons=["rejected", "expired", "invalid_token"],
                timeout_ms=int((SESSION_TOKEN_LIFETIME_S + 3 * poll_s) * 1000),
            )
            assert refused["poll"]["body"]["reason"] == "rejected", refused["poll"]
            assert "-accessToken" in [_short(n) for n in refused["poll"]["set_cookies"]]
            landed = browser.command("wait_url", pathname="/sign-in", timeout_ms=int(poll_s * 1000) + 10_000)
            polls = landed["polls"]
            page = transcript.step("    the script sends the tab to sign in", landed["page"])
            assert page["url"] == "/sign-in?next=%2Fdashboard", page
            assert "Signed in as" not in page["text"] and "Sign in" in page["text"]
            # The refused poll's answer itself sent the tab away: the sign-in page was requested
            # before the next poll was due, and no later poll came from the dashboard.
            load = next(load for load in landed["loads"] if load["at_ms"] >= refused["poll"]["at_ms"])
            assert load["path"] == "/sign-in?next=%2Fdashboard", landed["loads"]
            reaction_ms = load["at_ms"] - refused["poll"]["at_ms"]
            assert reaction_ms < SESSION_POLL_MS, reaction_ms
            assert [p for p in polls[refused["index"] + 1 :] if p["from"] != "/sign-in"] == [], polls
            assert landed["tab"]["navigations"] >= 1 and not landed["tab"]["mark_intact"]
            transcript.note(f"    /sign-in requested {reaction_ms:.0f} ms after the refused poll's answer")
            assert (
                "accessToken" not in browser.auth_cookies() and "refreshToken" not in browser.auth_cookies()
            )
            browser.command("screenshot", path=str(OUTPUT / "session-health.png"))
        finally:
            if not polls:
                with contextlib.suppress(AssertionError):
                    polls = browser.command("tab")["polls"]
            transcript.note("every answer of the session endpoint the tab received:")
            for poll in polls:
                transcript.note(_poll_line(poll, start_ms))
            transcript.write()
            proxy.close()
            (OUTPUT / "cookieguard-session-health.log").write_text(proxy.output() + "\n")

    refreshes = proxy.events("token_refresh")
    assert {event["route"] for event in refreshes} == {endpoint}  # every refresh came from the poll
    outcomes = [event["outcome"] for event in refreshes]
    assert outcomes[0] == "refreshed" and outcomes[-1] == "rejected", outcomes
    assert "failed" in outcomes and set(outcomes) <= {"refreshed", "failed", "rejected"}, outcomes
