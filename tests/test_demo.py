"""`cookieguard demo`: the scripted story shows the bug directly and the fix through cookieguard,
and `--serve` leaves a working pair running until SIGTERM.

Both run the real command as a subprocess; its output is checked by the autouse no-secret fixture
(no JWT-shaped string may appear in what the demo prints).
"""

from __future__ import annotations

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
from typing import Any

import pytest

from tests.support import proxy_process
from tests.support.proxy_process import ROOT, run_cli

pytest.importorskip("moto", reason="the demo needs the `demo` extra")


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


def _open(url: str, data: dict[str, str] | None = None) -> tuple[int, Any]:
    opener = urllib.request.build_opener(_NoRedirect)
    body = urllib.parse.urlencode(data).encode() if data is not None else None
    try:
        with opener.open(url, data=body, timeout=10) as resp:
            resp.read()
            return resp.status, resp.headers
    except urllib.error.HTTPError as exc:  # 3xx without a redirect handler, 4xx, 5xx
        return exc.code, exc.headers


def test_serve_answers_on_its_urls_and_stops_on_sigterm() -> None:
    proc = subprocess.Popen(
        [sys.executable, "-m", "cookieguard", "demo", "--serve", "--port", "0", "--app-port", "0"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        cwd=ROOT,
    )
    lines: queue.Queue[str] = queue.Queue()
    reader = threading.Thread(target=_lines, args=(proc.stdout, lines), daemon=True)
    reader.start()
    seen: list[str] = []
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

        assert _open(f"{guard.group(1)}/.cookieguard/healthz")[0] == 200
        status, headers = _open(f"{guard.group(1)}/")
        assert status == 302 and headers["Location"] == "/login"  # signed out: the app sends you to sign in
        assert _open(f"{direct.group(1)}/login")[0] == 200
        status, headers = _open(f"{guard.group(1)}/login", {"username": "demo", "password": "Demo-Passw0rd!"})
        assert status == 302 and headers["Location"] == "/dashboard"
        set_cookies = headers.get_all("Set-Cookie")
        assert any(".demo.accessToken=" in c for c in set_cookies)
        assert not any("Secure" in c for c in set_cookies)  # a browser on plain http keeps them
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
