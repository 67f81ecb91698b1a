"""Shared fixtures. Fixture modules under tests/support/ are registered here."""

import pytest

pytest.register_assert_rewrite("tests.support")

pytest_plugins = [
    "tests.support.no_secrets",
    "tests.support.proxy_process",
    "tests.support.oidc_idp",
    "tests.support.cognito_idp",
]
