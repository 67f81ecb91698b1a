"""What the examples' browser tests (examples/*/e2e, `make e2e`) share: ports, the processes they
start and stop by PID, and the Chromium driver each example's `browser.mjs` speaks to."""

from __future__ import annotations

import contextlib
import json
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any


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
