"""`cookieguard demo`: the scripted story shows the bug directly and the fix through cookieguard,
and `--serve` leaves a working pair running until SIGTERM; both with `--provider cognito` (the
default: moto, Amplify's cookies) and `--provider supabase` (the GoTrue-compatible server,
@supabase/ssr's cookie).

All run the real command as a subprocess; its output is checked by the autouse no-secret fixture
(no JWT-shaped string may appear in what the demo prints).
"""

from __future__ import annotations

import importlib.util
import queue
import re
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from typing import Any

import pytest

from tests.support import proxy_process
from tests.support.proxy_process import ROOT, run_cli

# The Cognito story needs the `demo` extra (moto); the Supabase one needs nothing extra.
needs_moto = pytest.mark.skipif(importlib.util.find_spec("moto") is None, reason="needs the `demo` extra")


@needs_moto
def test_short_demo_shows_the_bug_directly_and_the_fix_through_cookieguard() -> None:
    started = time.monotonic()
    result = run_cli("demo", "--short")
    elapsed = time.monotonic() - started
    out = result.stdout
    assert result.returncode == 0, out + result.stderr

    direct = re.search(
        r"^  direct: +signed out after (\d+) expir\w+, (\d+) refresh\w*(?: \((\d+) rejected\))?, (\d+) lost$",
        out,
        re.M,
    )
    assert direct is not None, out
    assert direct.group(1) == "1"  # the first expiry already signs the user out
    # The refresh on `/` is lost in the redirect, the next one uses the spent token: rejected.
    # (A stalled machine may add a refresh on the dashboard before the first expiry; it is delivered.)
    assert int(direct.group(2)) >= 2 and direct.group(3) == "1" and direct.group(4) == "1"

    guarded = re.search(
        r"^  through cookieguard: signed in after (\d+) expiries, (\d+) refreshes, (\d+) lost$", out, re.M
    )
    assert guarded is not None, out
    assert guarded.group(1) == "2" and int(guarded.group(2)) >= 2 and guarded.group(3) == "0"

    # The story says why, step by step.
    assert "the app refreshed at the IdP, then its redirect dropped the new cookies" in out
    assert "RefreshTokenReuseException" in out
    fixed = "cookieguard refreshed at the IdP; the app got a fresh token and had nothing to refresh"
    assert out.count(fixed) == int(guarded.group(2))
    assert "SIGNED OUT" in out
    assert "behind cookieguard the app still refreshed" not in out
    assert "without `Secure`" in out
    assert elapsed < 30, f"the short demo took {elapsed:.1f} s"


def test_short_supabase_demo_counts_what_the_redirect_bug_costs_with_gotrues_reuse_rules() -> None:
    started = time.monotonic()
    result = run_cli("demo", "--short", "--provider", "supabase")
    elapsed = time.monotonic() - started
    out = result.stdout
    assert result.returncode == 0, out + result.stderr
    assert "provider.kind supabase, cookies.layout supabase" in out
    assert "+sb-127-auth-token" in out  # @supabase/ssr's cookie, `sb-<ref>-auth-token`

    # Directly: GoTrue forgives the parent of its active refresh token, so the user stays signed
    # in, but every expiry costs the app two refreshes: the one on `/` is dropped by the redirect,
    # the next page refreshes again with the same spent token and GoTrue answers with the token it
    # had already issued. Nothing is `already used`.
    direct = re.search(
        r"^  direct: +signed in after (\d+) expiries, (\d+) refreshes, (\d+) lost, (\d+) already used$",
        out,
        re.M,
    )
    assert direct is not None, out
    assert direct.group(1) == "2" and direct.group(3) == "2" and direct.group(4) == "0"
    # (A stalled machine may add a refresh on the dashboard right after sign-in; it is delivered.)
    assert int(direct.group(2)) >= 4
    assert out.count("the app refreshed at the IdP, then its redirect dropped the new cookies") == 2
    assert out.count("GoTrue answered with the token the redirect had dropped") == 2
    assert "directly the user stayed signed in, at a price" in out
    assert "the redirect bug alone does not sign one browser out" in out

    # Through cookieguard: one refresh per expiry, by cookieguard, none lost or already used.
    guarded = re.search(
        r"^  through cookieguard: signed in after (\d+) expiries, (\d+) refreshes, (\d+) lost, "
        r"(\d+) already used$",
        out,
        re.M,
    )
    assert guarded is not None, out
    assert guarded.group(1) == "2" and int(guarded.group(2)) >= 2
    assert guarded.group(3) == "0" and guarded.group(4) == "0"
    fixed = "cookieguard refreshed at the IdP; the app got a fresh token and had nothing to refresh"
    assert out.count(fixed) == int(guarded.group(2))
    assert "SIGNED OUT" not in out
    assert "behind cookieguard the app still refreshed" not in out
    assert "sb_publishable_" not in out + result.stderr  # the anon key is never printed
    assert elapsed < 40, f"the short demo took {elapsed:.1f} s"


def test_demo_rejects_a_nonsense_expiry_count() -> None:
    result = run_cli("demo", "--expiries", "0")
    assert result.returncode == 2
    assert "not a positive whole number" in result.stderr


def _lines(stream: Any, sink: queue.Queue[str]) -> None:
    for line in stream:
        sink.put(line)


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None


def _open(
    url: str, data: dict[str, str] | None = None, headers: dict[str, str] | None = None
) -> tuple[int, Any]:
    opener = urllib.request.build_opener(_NoRedirect)
    body = urllib.parse.urlencode(data).encode() if data is not None else None
    request = urllib.request.Request(url, data=body, headers=headers or {})
    try:
        with opener.open(request, timeout=10) as resp:
            resp.read()
            return resp.status, resp.headers
    except urllib.error.HTTPError as exc:  # 3xx without a redirect handler, 4xx, 5xx
        return exc.code, exc.headers


class _Output:
    """What the demo printed so far, collected by a reader thread."""

    def __init__(self, lines: queue.Queue[str]) -> None:
        self.lines = lines
        self.seen: list[str] = []

    def text(self) -> str:
        while not self.lines.empty():
            self.seen.append(self.lines.get())
        return "".join(self.seen)

    def wait_for(self, needle: str, timeout_s: float) -> str:
        deadline = time.monotonic() + timeout_s
        while needle not in self.text():
            assert time.monotonic() < deadline, self.text()
            with suppress(queue.Empty):
                self.seen.append(self.lines.get(timeout=0.5))
        return self.text()


@contextmanager
def _serving(*args: str) -> Iterator[tuple[str, str, _Output]]:
    """`cookieguard demo --serve ARGS` on free ports: (cookieguard's URL, the app's, its output).

    Stopped with SIGTERM at the end, which must end it with status 0 and "stopping".
    """
    proc = subprocess.Popen(
        [sys.executable, "-m", "cookieguard", "demo", "--serve", "--port", "0", "--app-port", "0", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        cwd=ROOT,
    )
    lines: queue.Queue[str] = queue.Queue()
    reader = threading.Thread(target=_lines, args=(proc.stdout, lines), daemon=True)
    reader.start()
    output = _Output(lines)
    seen = output.seen
    try:
        deadline = time.monotonic() + 30
        while not any("the app directly" in line for line in seen):
            assert time.monotonic() < deadline, "".join(seen)
            try:
                seen.append(lines.get(timeout=1))
            except queue.Empty:
                assert proc.poll() is None, "".join(seen)
        text = "".join(seen)
        guard = re.search(r"through cookieguard \(the fix\): +(http://127\.0\.0\.1:\d+)/", text)
        direct = re.search(r"the app directly \(the bug\): +(http://localhost:\d+)/", text)
        assert guard and direct, text
        yield guard.group(1), direct.group(1), output
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            returncode = proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
            returncode = None
        reader.join(timeout=10)  # it ends at the pipe's end of file: every line is in the queue
        while not lines.empty():
            seen.append(lines.get())
        proxy_process.STARTED_CLI_OUTPUT.append("".join(seen))
    assert returncode == 0, "".join(seen)
    assert "cookieguard demo: stopping" in "".join(seen)


@needs_moto
def test_serve_answers_on_its_urls_and_stops_on_sigterm() -> None:
    with _serving() as (guard, direct, _):
        assert _open(f"{guard}/.cookieguard/healthz")[0] == 200
        status, headers = _open(f"{guard}/")
        assert status == 302 and headers["Location"] == "/login"  # signed out: the app sends you to sign in
        assert _open(f"{direct}/login")[0] == 200
        status, headers = _open(f"{guard}/login", {"username": "demo", "password": "Demo-Passw0rd!"})
        assert status == 302 and headers["Location"] == "/dashboard"
        set_cookies = headers.get_all("Set-Cookie")
        assert any(".demo.accessToken=" in c for c in set_cookies)
        assert not any("Secure" in c for c in set_cookies)  # a browser on plain http keeps them


def _cookie_pairs(set_cookies: list[str]) -> dict[str, str]:
    return {c.split(";", 1)[0].split("=", 1)[0]: c.split(";", 1)[0].split("=", 1)[1] for c in set_cookies}


def test_serve_supabase_logs_cookieguards_refresh_without_the_apikey() -> None:
    with _serving("--provider", "supabase", "--token-lifetime", "2") as (guard, _, output):
        form = {"username": "demo@example.com", "password": "Demo-Passw0rd!"}
        status, headers = _open(f"{guard}/login", form)
        assert status == 302 and headers["Location"] == "/dashboard"
        jar = _cookie_pairs(headers.get_all("Set-Cookie"))
        assert list(jar) == ["sb-127-auth-token"]
        # Tokens live 2 s and cookieguard refreshes 1 s before expiry: ask until it has refreshed.
        deadline = time.monotonic() + 15
        refreshed: dict[str, str] = {}
        while not refreshed:
            assert time.monotonic() < deadline, output.text()
            cookie = "; ".join(f"{name}={value}" for name, value in jar.items())
            status, answer = _open(f"{guard}/", headers={"Cookie": cookie})
            assert status == 302 and answer["Location"] == "/dashboard", output.text()  # signed in
            refreshed = _cookie_pairs(answer.get_all("Set-Cookie") or [])
        assert refreshed.keys() == jar.keys() and refreshed != jar
        output.wait_for("token_refresh", timeout_s=10)
    out = output.text()
    refresh_lines = [line for line in out.splitlines() if "token_refresh" in line]
    assert any("refreshed" in line for line in refresh_lines), out
    loaded = [line for line in out.splitlines() if "config_loaded" in line]
    assert any("provider=supabase" in line and "layout=supabase" in line for line in loaded), out
    assert "[app] /: refreshed" not in out  # cookieguard refreshed first: the app had nothing to do
    assert "apikey" not in out.lower() and "sb_publishable_" not in out
