"""What the examples' browser tests (examples/*/e2e, `make e2e`) share: ports, the processes they
start and stop by PID, and the Chromium driver each example's `browser.mjs` speaks to."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def wait_until_serving(url: str, process: subprocess.Popen[bytes], timeout_s: float) -> None:
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


def stop(process: subprocess.Popen[Any]) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@contextlib.contextmanager
def next_start(
    app: Path, env: Mapping[str, str], log_path: Path, *, port: int | None = None, ready_path: str = "/"
) -> Iterator[str]:
    """`next start -H localhost` of an example's production build (`make e2e` builds it), with the
    environment plus `env`, its output in `log_path`; yields its URL (http://localhost:<port>)."""
    if not (app / ".next" / "BUILD_ID").exists() or not (app / "node_modules").is_dir():
        pytest.fail("the example is not built: run `make e2e` (npm ci, next build, then this test)")
    port = free_port() if port is None else port
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with log_path.open("wb") as log:
        # -H localhost, not 127.0.0.1: with an IP Next proxies its own rewrites back into itself
        # and runs the middleware twice (vercel/next.js#84341).
        process = subprocess.Popen(
            [str(app / "node_modules" / ".bin" / "next"), "start", "-H", "localhost", "-p", str(port)],
            cwd=app,
            env={**os.environ, "NEXT_TELEMETRY_DISABLED": "1", **env},
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        try:
            url = f"http://localhost:{port}"
            wait_until_serving(url + ready_path, process, timeout_s=60)
            yield url
        finally:
            stop(process)


class BrowserDriver:
    """Chromium through `<app>/e2e/browser.mjs`: one JSON command per line, one JSON answer per
    line. A subclass names its example's directory as `app`."""

    app: Path

    def __init__(self, profile_dir: Path) -> None:
        self._process = subprocess.Popen(
            ["node", str(self.app / "e2e" / "browser.mjs"), str(profile_dir)],
            cwd=self.app,
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

    def close(self) -> None:
        with contextlib.suppress(AssertionError, BrokenPipeError, ValueError):
            self.command("close")
        try:
            self._process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            stop(self._process)
