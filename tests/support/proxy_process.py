"""Run `cookieguard run` as a real subprocess on an ephemeral port, and read its logs.

Every process started here is remembered so the autouse no-secret fixture can read everything it
printed, and is stopped by its own PID at the end of the test.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]

# Processes started during the current test (read by the no-secret fixture).
STARTED: list[CookieguardProcess] = []


class CookieguardProcess:
    def __init__(self, config: dict[str, Any] | str, env: dict[str, str] | None = None) -> None:
        if isinstance(config, dict):
            config = dict(config)
            config.setdefault("listen", "127.0.0.1:0")
            # The admin listener's default (127.0.0.1:9090) is one port for every process.
            config.setdefault("admin_listen", "127.0.0.1:0")
            text = yaml.safe_dump(config, sort_keys=False)
        elif "admin_listen" not in config:
            text = config.rstrip("\n") + "\nadmin_listen: 127.0.0.1:0\n"
        else:
            text = config
        self._dir = tempfile.TemporaryDirectory(prefix="cookieguard-test-")
        self.config_path = Path(self._dir.name) / "cookieguard.yaml"
        self.config_path.write_text(text)
        self.env = {**os.environ, **(env or {})}
        self.proc: subprocess.Popen[str] | None = None
        self.lines: list[str] = []
        self.stderr_lines: list[str] = []
        self._cond = threading.Condition()
        self.port: int | None = None
        self.admin_port: int | None = None
        self.signalled = False
        STARTED.append(self)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def admin_url(self) -> str:
        """Where healthz, readyz and metrics answer (`admin_listen`)."""
        return f"http://127.0.0.1:{self.admin_port}"

    def start(self, timeout_s: float = 20.0) -> CookieguardProcess:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "cookieguard", "run", "--config", str(self.config_path)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            errors="replace",
            env=self.env,
            cwd=ROOT,
        )
        threading.Thread(target=self._read, args=(self.proc.stdout, self.lines), daemon=True).start()
        threading.Thread(target=self._read, args=(self.proc.stderr, self.stderr_lines), daemon=True).start()
        listening = self.wait_for_event("listening", timeout_s=timeout_s)
        self.port = int(listening["listen"][0].rsplit(":", 1)[1])
        self.admin_port = int(listening["admin_listen"][0].rsplit(":", 1)[1])
        return self

    def _read(self, stream: Any, sink: list[str]) -> None:
        for line in stream:
            with self._cond:
                sink.append(line.rstrip("\n"))
                self._cond.notify_all()

    def events(self, name: str | None = None) -> list[dict[str, Any]]:
        out = []
        with self._cond:
            lines = list(self.lines)
        for line in lines:
            try:
                event = json.loads(line)
            except ValueError:
                continue
            if isinstance(event, dict) and (name is None or event.get("event") == name):
                out.append(event)
        return out

    def wait_for_event(
        self, name: str, timeout_s: float = 10.0, where: Callable[[dict[str, Any]], bool] | None = None
    ) -> dict[str, Any]:
        deadline = time.monotonic() + timeout_s
        while True:
            for event in self.events(name):
                if where is None or where(event):
                    return event
            remaining = deadline - time.monotonic()
            if remaining <= 0 or (
                self.proc is not None and self.proc.poll() is not None and not self._pending()
            ):
                raise AssertionError(
                    f"no {name!r} event from cookieguard within {timeout_s}s; "
                    f"exit={self.proc.poll() if self.proc else None}\nstdout:\n"
                    + "\n".join(self.lines[-20:])
                    + "\nstderr:\n"
                    + "\n".join(self.stderr_lines[-20:])
                )
            with self._cond:
                self._cond.wait(timeout=min(remaining, 0.2))

    def events_once(
        self,
        name: str,
        count: int = 1,
        where: Callable[[dict[str, Any]], bool] | None = None,
        timeout_s: float = 10.0,
    ) -> list[dict[str, Any]]:
        """The `name` events, once at least `count` of them (matching `where`) have been read: the
        process writes a line before it answers, but the reader thread may not have it yet."""

        def enough(_: dict[str, Any]) -> bool:
            return sum(1 for e in self.events(name) if where is None or where(e)) >= count

        self.wait_for_event(name, timeout_s, enough)
        return self.events(name)

    def _pending(self) -> bool:
        return False

    def output(self) -> str:
        with self._cond:
            return "\n".join(self.lines + self.stderr_lines)

    def signal(self, sig: int = signal.SIGTERM) -> None:
        assert self.proc is not None
        self.signalled = True
        self.proc.send_signal(sig)

    def stop(self, timeout_s: float = 20.0) -> int | None:
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            if not self.signalled:
                self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode

    def close(self) -> None:
        self.stop()
        self._dir.cleanup()


@pytest.fixture
def cookieguard_process() -> Any:
    """Factory: `cookieguard_process(config_dict_or_yaml, env=...)` -> a started process."""
    started: list[CookieguardProcess] = []

    def start(config: dict[str, Any] | str, env: dict[str, str] | None = None) -> CookieguardProcess:
        proc = CookieguardProcess(config, env=env).start()
        started.append(proc)
        return proc

    yield start
    for proc in started:
        proc.close()


def run_cli(
    *args: str, input_text: str | None = None, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """Run `cookieguard ARGS` to completion and capture its output."""
    proc = subprocess.run(
        [sys.executable, "-m", "cookieguard", *args],
        input=input_text,
        capture_output=True,
        text=True,
        env={**os.environ, **(env or {})},
        cwd=ROOT,
        timeout=120,
    )
    STARTED_CLI_OUTPUT.append(proc.stdout + proc.stderr)
    return proc


STARTED_CLI_OUTPUT: list[str] = []
