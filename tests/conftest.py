"""Shared fixtures. Fixture modules under tests/support/ are registered here."""

import os

import pytest
from hypothesis import HealthCheck, settings

pytest.register_assert_rewrite("tests.support")

# Property tests: in CI (CI=true) the properties of the pure core that guard users (the Cookie
# parser never raises, the merge never overrides the app, the refresh decision is monotonic) run
# 10,000 examples each (`CORE_EXAMPLES`), every other property 1,000; locally 200.
settings.register_profile(
    "ci", max_examples=1_000, deadline=None, suppress_health_check=[HealthCheck.too_slow], print_blob=True
)
settings.register_profile("dev", max_examples=200, deadline=None)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE") or ("ci" if os.environ.get("CI") else "dev"))

pytest_plugins = [
    "tests.support.no_secrets",
    "tests.support.proxy_process",
    "tests.support.oidc_idp",
    "tests.support.cognito_idp",
    "tests.support.redis_server",
]
