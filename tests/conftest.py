"""Shared fixtures. Fixture modules under tests/support/ are registered here."""

pytest_plugins: list[str] = [
    "tests.support.oidc_idp",
]
