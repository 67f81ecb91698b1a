"""The example's browser end-to-end test: run by `make e2e`, never by `make test`."""

import pytest


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "e2e: real Next.js, real Chromium, minutes of wall-clock time")
