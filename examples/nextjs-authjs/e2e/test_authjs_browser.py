"""A real browser, the real Next.js + next-auth 4 app, the real oidc-provider: the refresh race the
Auth.js refresh-token-rotation guide admits, measured directly, and the same app through
cookieguard (`cookies.layout: authjs`), which keeps the user signed in.

What runs, all on loopback and ephemeral ports, each stopped by its own PID:
- the IdP: tests/oidc_provider (panva's oidc-provider) with rotating refresh tokens, reuse
  detection that revokes the grant, ACCESS_TOKEN_TTL_S access tokens, and a confidential client
  that the browser signs in with by authorization code (the server signs in "alice" at once);
- the app: `next start -H localhost` of the example's production build (`make e2e` builds it);
- the browser: Debian's Chromium, headless, a fresh profile, driven by `browser.mjs`;
- cookieguard (second test only): `cookieguard run` in front of the app, `provider.kind: oidc`,
  `cookies.layout: authjs` (version 4, the app's secret, the guide's field names).

The browser signs in, then, expiry after expiry, waits for the access token to expire in real time
and follows the dashboard's links: /go (the middleware refreshes and answers with a redirect that
drops its cookie) and /profile (a rewrite). The session cookie is read from the browser's profile
and decrypted with cookieguard's Auth.js codec (the app's secret is the test's), so the test knows
when the tokens in it expire. Writes what the browser saw, hop by hop, under test-output/e2e/.
"""

from __future__ import annotations

import contextlib
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from cookieguard.session.layouts.authjs import Keys, TokenFields, read_session, read_tokens
from tests.support.e2e import BrowserDriver, free_port, next_start
from tests.support.oidc_idp import OidcIdp, start_oidc_idp
from tests.support.proxy_process import CookieguardProcess

pytestmark = pytest.mark.e2e

APP = Path(__file__).resolve().parents[1]
ROOT = APP.parents[1]
OUTPUT = ROOT / "test-output" / "e2e"
# The app's NEXTAUTH_SECRET (a test value; the codec decrypts the browser's cookie with it).
SECRET = "e2e-next-auth-secret-" + "0123456789abcdef" * 2
CLIENT_ID = "nextjs-authjs-example"
CLIENT_SECRET = "example-client-secret"
# Short enough for a few expiries in about a minute, long enough that a step never straddles one.
ACCESS_TOKEN_TTL_S = 10
EXPIRIES = 3
SESSION_COOKIE = "next-auth.session-token"
LINKS = [("#go", "/go"), ("#profile", "/profile")]


class Browser(BrowserDriver):
    app = APP

    def session_claims(self) -> dict[str, Any] | None:
        """The next-auth session the browser holds, decrypted (None: signed out or unreadable)."""
        pairs = [(c["name"], c["value"]) for c in self.command("cookies")["cookies"]]
        session = read_session(Keys(4, [SECRET]), pairs, time.time())
        return session.claims if session else None


class Transcript:
    """What the browser saw, step by step: printed, and written to test-output/e2e/<run>.txt."""

    def __init__(self, run: str, idp: OidcIdp) -> None:
        self.run = run
        self.idp = idp
        self.lines: list[str] = []

    def step(self, label: str, page: dict[str, Any]) -> dict[str, Any]:
        self.lines.append(label)
        for hop in page["hops"]:
            target = f" -> {hop['location'].split('?')[0]}" if hop["location"] else ""
            cookies = " ".join(hop["set_cookies"]) or "none"
            self.lines.append(
                f"    {hop['method']} {hop['path'][:40]:<40} {hop['status']}{target:<24} cookies: {cookies}"
            )
        stats = self.idp.stats()
        first = page["text"].splitlines()[0] if page["text"] else "empty page"
        self.lines.append(
            f"    => {page['url']}: {first}; IdP refresh calls so far: {stats['refresh_requests']}"
            f" (invalid_grant {stats['invalid_grant']}, grants revoked {stats['grants_revoked']})"
        )
        return page

    def note(self, text: str) -> None:
        self.lines.append(text)

    def write(self) -> None:
        OUTPUT.mkdir(parents=True, exist_ok=True)
        (OUTPUT / f"{self.run}.txt").write_text("\n".join(self.lines) + "\n")
        print(f"\n--- {self.run} ---\n" + "\n".join(self.lines))


def signed_in(page: dict[str, Any]) -> bool:
    return "Signed in as alice" in page["text"]


# -- fixtures ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def app_port() -> int:
    return free_port()


@pytest.fixture(scope="module")
def idp(app_port: int) -> Iterator[OidcIdp]:
    login_client = {
        "client_id": CLIENT_ID,
        "client_secret": CLIENT_SECRET,
        "redirect_uris": [f"http://localhost:{app_port}/api/auth/callback/oidc"],
    }
    with start_oidc_idp(access_token_ttl_s=ACCESS_TOKEN_TTL_S, login_client=login_client) as running:
        yield running


@contextlib.contextmanager
def _next_server(idp: OidcIdp, port: int, log_name: str) -> Iterator[str]:
    """`next start -H localhost` of the built app; yields its URL (http://localhost:<port>)."""
    env = {
        "NEXTAUTH_URL": f"http://localhost:{port}",
        "NEXTAUTH_SECRET": SECRET,
        "OIDC_ISSUER": idp.issuer,
        "OIDC_CLIENT_ID": CLIENT_ID,
        "OIDC_CLIENT_SECRET": CLIENT_SECRET,
    }
    with next_start(APP, env, OUTPUT / log_name, port=port) as url:
        yield url


@pytest.fixture(scope="module")
def next_app(idp: OidcIdp, app_port: int) -> Iterator[str]:
    with _next_server(idp, app_port, "next-authjs.log") as url:
        yield url


@pytest.fixture
def browser(tmp_path: Path) -> Iterator[Browser]:
    profile = Path(tempfile.mkdtemp(prefix="chromium-", dir=tmp_path))
    running = Browser(profile)
    yield running
    running.close()


def _wait_for_expiry(browser: Browser, transcript: Transcript) -> None:
    # The thing awaited is wall-clock time itself: the access token has to be really expired.
    claims = browser.session_claims()
    assert claims is not None, "the browser holds no readable session"
    expires_at = read_tokens(claims, TokenFields()).expires_at_s
    assert expires_at is not None
    remaining = expires_at - time.time() + 1.0
    transcript.note(f"  ... waiting {max(remaining, 0):.1f} s until the access token has expired")
    if remaining > 0:
        time.sleep(remaining)


# -- directly ----------------------------------------------------------------------------------


def test_directly_the_guide_s_app_loses_the_session_within_a_few_expiries(
    idp: OidcIdp, next_app: str, browser: Browser
) -> None:
    transcript = Transcript("authjs-direct", idp)
    transcript.note(
        f"1) direct: Chromium -> Next.js, next-auth 4 ({next_app}); tokens live {ACCESS_TOKEN_TTL_S} s"
    )
    idp.reset()
    lost_at = None
    try:
        transcript.step("open the sign-in page", browser.command("goto", url=next_app + "/sign-in"))
        page = transcript.step("sign in (authorization code at the IdP)", browser.command("sign_in"))
        assert page["url"] == "/dashboard" and signed_in(page), page
        first = browser.session_claims()
        assert first is not None and first.get("refresh_token") and "error" not in first
        for expiry in range(1, EXPIRIES + 1):
            _wait_for_expiry(browser, transcript)
            selector, link = LINKS[(expiry - 1) % 2]
            page = transcript.step(
                f"expiry {expiry}: follow the link to {link}", browser.command("click", selector=selector)
            )
            if not signed_in(page):
                lost_at = expiry
                break
        browser.command("screenshot", path=str(OUTPUT / "authjs-direct.png"))
    finally:
        transcript.write()

    stats = idp.stats()
    # The middleware refreshed (rotating the refresh token), its new cookie went nowhere (the
    # redirect or rewrite dropped it), and the server component refreshed again with the spent
    # token: the IdP refused it and revoked the grant, the guide's callback set RefreshTokenError.
    assert lost_at is not None, "the user stayed signed in across every expiry"
    assert "RefreshTokenError" in page["text"] or "Not signed in" in page["text"], page
    assert stats["invalid_grant"] >= 1, stats
    assert stats["refresh_requests"] > lost_at, stats  # more than one refresh per expiry


# -- through cookieguard ------------------------------------------------------------------------


def test_through_cookieguard_signed_in_across_every_expiry_one_refresh_each(
    idp: OidcIdp, next_app: str, browser: Browser
) -> None:
    # The agreed configuration for a next-auth 4 app with the guide's jwt callback.
    config = {
        "listen": "127.0.0.1:0",
        "upstream": next_app,
        "provider": {
            "kind": "oidc",
            "issuer": idp.issuer,
            "client_id": CLIENT_ID,
            "client_secret": CLIENT_SECRET,
        },
        "cookies": {"layout": "authjs", "authjs": {"version": 4, "secrets": [SECRET]}},
        # Below the tokens' 10 s, so a fresh token is not due at once; an expired one always is.
        "refresh": {"before_expiry": "3s", "on_rejected": "flag"},
        "routes": [{"match": "/_next/static/", "refresh": False}, {"match": "/"}],
    }
    proxy = CookieguardProcess(config).start()
    # localhost, the host the app's cookies are set for (cookies are per host, not per port).
    base = f"http://localhost:{proxy.port}"
    transcript = Transcript("authjs-through-cookieguard", idp)
    transcript.note(f"2) through cookieguard: Chromium -> cookieguard ({base}) -> Next.js ({next_app})")
    idp.reset()
    per_expiry: list[int] = []
    try:
        transcript.step("open the sign-in page", browser.command("goto", url=base + "/sign-in"))
        page = transcript.step("sign in (authorization code at the IdP)", browser.command("sign_in"))
        assert signed_in(page), page
        # Back through cookieguard (next-auth's callback URL is the app's own, NEXTAUTH_URL).
        page = transcript.step(
            "the dashboard through cookieguard", browser.command("goto", url=base + "/dashboard")
        )
        assert signed_in(page), page
        for expiry in range(1, EXPIRIES + 1):
            before = browser.session_claims()
            assert before is not None
            _wait_for_expiry(browser, transcript)
            calls_before = idp.stats()["refresh_requests"]
            selector, link = LINKS[(expiry - 1) % 2]
            page = transcript.step(
                f"expiry {expiry}: follow the link to {link}", browser.command("click", selector=selector)
            )
            per_expiry.append(idp.stats()["refresh_requests"] - calls_before)
            assert signed_in(page), page
            after = browser.session_claims()
            assert after is not None and "error" not in after, after
            assert after["refresh_token"] != before["refresh_token"], "the rotated refresh token was lost"
            assert after["expires_at"] > before["expires_at"]
            # The claims cookieguard does not own are kept (exp too: it decides the cookie's life).
            assert {
                k: v
                for k, v in after.items()
                if k not in ("access_token", "refresh_token", "expires_at", "iat", "exp", "jti")
            } == {
                k: v
                for k, v in before.items()
                if k not in ("access_token", "refresh_token", "expires_at", "iat", "exp", "jti")
            }
        browser.command("screenshot", path=str(OUTPUT / "authjs-through-cookieguard.png"))
    finally:
        transcript.note(f"IdP refresh calls per expiry: {per_expiry}")
        transcript.write()
        proxy.close()
        (OUTPUT / "cookieguard-authjs.log").write_text(proxy.output() + "\n")

    stats = idp.stats()
    assert per_expiry == [1] * EXPIRIES, per_expiry
    assert (stats["refresh_requests"], stats["invalid_grant"], stats["grants_revoked"]) == (EXPIRIES, 0, 0), (
        stats
    )
    outcomes = [event["outcome"] for event in proxy.events("token_refresh")]
    assert outcomes.count("refreshed") == EXPIRIES and "rejected" not in outcomes, outcomes
