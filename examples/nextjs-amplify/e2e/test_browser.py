"""A real browser, the real Next.js + Amplify app, a Cognito-compatible IdP, with and without cookieguard.

What runs, all on loopback and ephemeral ports, each stopped by its own PID:
- the IdP: `cookieguard.demo.emulator` (moto's Cognito server) with rotating refresh tokens and
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
import signal
import socket
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from cookieguard.demo.emulator import CognitoEmulator, PoolInfo
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
# (the dashboard's link, its path, where the browser ends up, what the page says about the way)
LINKS = [
    ("#go", "/go", "/dashboard", "Reached directly"),
    ("#profile", "/profile", "/profile", "through the rewrite"),
]


# -- processes ---------------------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _wait_until_serving(url: str, process: subprocess.Popen[bytes], timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise AssertionError(f"{url}: the server exited with {process.returncode}")
        try:
            with urllib.request.urlopen(url, timeout=5):
                return
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            time.sleep(0.2)
    raise AssertionError(f"{url}: not serving after {timeout_s} s")


def _stop(process: subprocess.Popen[Any]) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


class Browser:
    """Chromium through browser.mjs: one JSON command per line, one JSON answer per line."""

    def __init__(self, profile_dir: Path) -> None:
        self._process = subprocess.Popen(
            ["node", str(APP / "e2e" / "browser.mjs"), str(profile_dir)],
            cwd=APP,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )

    def command(self, op: str, **arguments: Any) -> dict[str, Any]:
        assert self._process.stdin is not None and self._process.stdout is not None
        self._process.stdin.write(json.dumps({"op": op, **arguments}) + "\n")
        self._process.stdin.flush()
        line = self._process.stdout.readline()
        if not line:
            raise AssertionError(f"the browser driver exited ({self._process.wait()}) during {op!r}")
        answer: dict[str, Any] = json.loads(line)
        if not answer.pop("ok"):
            raise AssertionError(f"browser {op!r} failed: {answer['error']}")
        return answer

    def access_token_exp(self) -> float:
        """`exp` of the access token the browser holds (Amplify's cookie, read from the profile)."""
        for cookie in self.command("cookies")["cookies"]:
            if cookie["name"].endswith(".accessToken"):
                payload = cookie["value"].split(".")[1]
                claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
                return float(claims["exp"])
        raise AssertionError("the browser holds no access token")

    def refresh_token(self) -> str | None:
        for cookie in self.command("cookies")["cookies"]:
            if cookie["name"].endswith(".refreshToken"):
                return str(cookie["value"])
        return None

    def close(self) -> None:
        with contextlib.suppress(AssertionError, BrokenPipeError, ValueError):
            self.command("close")
        try:
            self._process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            _stop(self._process)


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


@pytest.fixture(scope="module")
def next_app(emulator: CognitoEmulator, pool: PoolInfo) -> Iterator[str]:
    """`next start -H localhost` of the built app; its URL (http://localhost:<port>)."""
    if not (APP / ".next" / "BUILD_ID").exists() or not (APP / "node_modules").is_dir():
        pytest.fail("the example is not built: run `make e2e` (npm ci, next build, then this test)")
    port = _free_port()
    env = {
        **os.environ,
        "COGNITO_USER_POOL_ID": pool.user_pool_id,
        "COGNITO_CLIENT_ID": pool.client_id,
        "COGNITO_USER_POOL_ENDPOINT": emulator.endpoint,
        "COGNITO_JWKS_ORIGIN": emulator.endpoint,
        "NODE_OPTIONS": f"--require {APP / 'e2e' / 'jwks-redirect.cjs'}",
        "NEXT_TELEMETRY_DISABLED": "1",
    }
    OUTPUT.mkdir(parents=True, exist_ok=True)
    with (OUTPUT / "next.log").open("wb") as log:
        # -H localhost, not 127.0.0.1: with an IP Next proxies its own rewrites back into itself
        # and runs the middleware twice (vercel/next.js#84341).
        process = subprocess.Popen(
            [str(APP / "node_modules" / ".bin" / "next"), "start", "-H", "localhost", "-p", str(port)],
            cwd=APP,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        try:
            url = f"http://localhost:{port}"
            _wait_until_serving(url + "/", process, timeout_s=60)
            yield url
        finally:
            _stop(process)
    assert "jwks-redirect:" in (OUTPUT / "next.log").read_text(), "Amplify never fetched the JWKS"


@pytest.fixture
def browser(tmp_path: Path) -> Iterator[Browser]:
    profile = Path(tempfile.mkdtemp(prefix="chromium-", dir=tmp_path))
    running = Browser(profile)
    yield running
    running.close()


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
    # The configuration the README tells Next.js + Amplify users to run, pointed at the emulator.
    config = yaml.safe_load((ROOT / "config" / "cognito.yaml").read_text())
    config["listen"] = "127.0.0.1:0"
    config["provider"] |= {"endpoint": emulator.endpoint, "jwks_url": pool.jwks_url}
    config["refresh"]["before_expiry"] = "8s"  # capped at half the lifetime (10 s) anyway
    proxy = CookieguardProcess(
        config,
        env={
            "APP_UPSTREAM": next_app,
            "COGNITO_USER_POOL_ID": pool.user_pool_id,
            "COGNITO_CLIENT_ID": pool.client_id,
        },
    ).start()
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
