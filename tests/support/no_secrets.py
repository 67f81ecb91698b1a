"""The no-secret guarantee, enforced over every test: nothing cookieguard logs or prints may
contain a token, a secret or a full cookie value.

An autouse fixture captures cookieguard's in-process logs (at debug level, so every event is
rendered), plus the output of every `cookieguard` subprocess a test started, and fails the test
when any of it contains something shaped like a JWT or any secret the test registered with
`known_secrets.add(...)` (refresh tokens, client secrets, store keys, cookie values).
"""

from __future__ import annotations

import io
import re
from collections.abc import Iterator

import pytest

from cookieguard.logs import configure_logging

from . import proxy_process

_JWT = re.compile(r"eyJ[A-Za-z0-9_-]{4,}\.eyJ[A-Za-z0-9_-]{4,}\.[A-Za-z0-9_-]*")


class KnownSecrets:
    def __init__(self) -> None:
        self.values: set[str] = set()

    def add(self, *values: str | None) -> None:
        for value in values:
            if value and len(value) >= 8:
                self.values.add(value)


@pytest.fixture
def known_secrets() -> KnownSecrets:
    return _CURRENT


_CURRENT = KnownSecrets()


def find_leaks(text: str, secrets: set[str]) -> list[str]:
    leaks = [f"JWT-shaped string: {m.group(0)[:16]}..." for m in _JWT.finditer(text)]
    leaks += [f"registered secret starting {s[:6]!r}" for s in secrets if s in text]
    return leaks


@pytest.fixture(autouse=True)
def no_secrets_in_logs(request: pytest.FixtureRequest) -> Iterator[io.StringIO]:
    global _CURRENT
    _CURRENT = KnownSecrets()
    proxy_process.STARTED.clear()
    proxy_process.STARTED_CLI_OUTPUT.clear()
    buffer = io.StringIO()
    configure_logging(level="debug", fmt="json", stream=buffer)
    yield buffer
    if request.node.get_closest_marker("leaks_allowed"):
        return
    outputs = [buffer.getvalue()]
    outputs += [p.output() for p in proxy_process.STARTED]
    outputs += proxy_process.STARTED_CLI_OUTPUT
    leaks = find_leaks("\n".join(outputs), _CURRENT.values)
    assert not leaks, f"cookieguard logged or printed secrets: {leaks}"
