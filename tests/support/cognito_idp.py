"""A real Cognito-compatible IdP for the tests: moto's server via `cookieguard.ops.demo.emulator`.

`cognito_emulator` (session-scoped) runs one emulator for the whole session on an ephemeral port.
Tests use `cognito_idp`: the same emulator with its counters and injections (`delay_s`,
`fail_next`, `retry_after_s`, `access_token_lifetime_s`) reset before and after the test.

Pools are cheap (a few ms): each test makes its own with `make_cognito_pool(...)`, or takes
`cognito_pool` / `cognito_pool_with_secret`, and signs a user in with `make_cognito_user(pool)`
or takes `cognito_user` (a signed-in user of `cognito_pool`). Tokens minted while a test changed
`access_token_lifetime_s` keep that lifetime.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest

from cookieguard.ops.demo.emulator import CognitoEmulator, PoolInfo

PASSWORD = "Correct-Horse-9"


@dataclass(frozen=True)
class CognitoUser:
    """A signed-in user: what Amplify would hold after sign-in."""

    pool: PoolInfo
    username: str
    access_token: str = field(repr=False)
    id_token: str = field(repr=False)
    refresh_token: str = field(repr=False)
    expires_in_s: int


@pytest.fixture(scope="session")
def cognito_emulator() -> Iterator[CognitoEmulator]:
    with CognitoEmulator() as emulator:
        yield emulator


@pytest.fixture
def cognito_idp(cognito_emulator: CognitoEmulator) -> Iterator[CognitoEmulator]:
    cognito_emulator.reset()
    yield cognito_emulator
    cognito_emulator.reset()


@pytest.fixture
def make_cognito_pool(cognito_idp: CognitoEmulator) -> Callable[..., PoolInfo]:
    """make_cognito_pool(with_secret=False, rotate_refresh_tokens=False, retry_grace_period_s=0)."""

    def make(
        *, with_secret: bool = False, rotate_refresh_tokens: bool = False, retry_grace_period_s: int = 0
    ) -> PoolInfo:
        return cognito_idp.create_pool(
            with_secret=with_secret,
            rotate_refresh_tokens=rotate_refresh_tokens,
            retry_grace_period_s=retry_grace_period_s,
        )

    return make


@pytest.fixture
def make_cognito_user(cognito_idp: CognitoEmulator) -> Callable[..., CognitoUser]:
    """make_cognito_user(pool, username=None): create a user in `pool` and sign them in."""

    def make(pool: PoolInfo, username: str | None = None) -> CognitoUser:
        username = username or f"user-{uuid.uuid4().hex[:8]}@example.com"
        cognito_idp.create_user(pool, username, PASSWORD, email=username if "@" in username else None)
        result = cognito_idp.sign_in(pool, username, PASSWORD)
        return CognitoUser(
            pool=pool,
            username=username,
            access_token=result["AccessToken"],
            id_token=result["IdToken"],
            refresh_token=result["RefreshToken"],
            expires_in_s=result["ExpiresIn"],
        )

    return make


@pytest.fixture
def cognito_pool(make_cognito_pool: Callable[..., PoolInfo]) -> PoolInfo:
    return make_cognito_pool()


@pytest.fixture
def cognito_pool_with_secret(make_cognito_pool: Callable[..., PoolInfo]) -> PoolInfo:
    return make_cognito_pool(with_secret=True)


@pytest.fixture
def cognito_user(cognito_pool: PoolInfo, make_cognito_user: Callable[..., CognitoUser]) -> CognitoUser:
    return make_cognito_user(cognito_pool)


def cognito_guard_config(
    pool: PoolInfo, upstream: str, *, timeout: str = "2s", backoff: str = "3s", **overrides: Any
) -> dict[str, Any]:
    """A `cookieguard run` config for an Amplify app in front of `upstream`, refreshing at `pool`.

    `provider={...}` and `refresh={...}` are merged into the defaults; other keys replace them.
    """
    provider = pool.provider_yaml(timeout=timeout)
    provider.update(overrides.pop("provider", {}))
    refresh: dict[str, Any] = {"before_expiry": "5m", "backoff": backoff}
    refresh.update(overrides.pop("refresh", {}))
    config: dict[str, Any] = {
        "upstream": upstream,
        "provider": provider,
        "refresh": refresh,
        "logging": {"level": "debug"},
    }
    config.update(overrides)
    return config


@pytest.fixture
def make_expiring_user(
    cognito_idp: CognitoEmulator, make_cognito_user: Callable[..., CognitoUser], known_secrets: Any
) -> Callable[..., CognitoUser]:
    """make_expiring_user(pool, username=None): a signed-in user whose access and id tokens
    expired a minute ago (minted with a negative lifetime), with a live refresh token. Its tokens
    and the pool's secret are registered with the no-secret check."""

    def make(pool: PoolInfo, username: str | None = None) -> CognitoUser:
        lifetime = cognito_idp.access_token_lifetime_s
        cognito_idp.access_token_lifetime_s = -60
        try:
            user = make_cognito_user(pool, username)
        finally:
            cognito_idp.access_token_lifetime_s = lifetime
        known_secrets.add(user.refresh_token, user.access_token, user.id_token, pool.client_secret)
        return user

    return make


@pytest.fixture
def expiring_user(cognito_pool: PoolInfo, make_expiring_user: Callable[..., CognitoUser]) -> CognitoUser:
    return make_expiring_user(cognito_pool)


def amplify_cookie_header(user: CognitoUser, **tokens: str | None) -> str:
    """The Cookie header a browser sends for `user` after an Amplify sign-in; `tokens` override."""
    from tests.support.apps import amplify_cookies

    values: dict[str, str | None] = {
        "access_token": user.access_token,
        "id_token": user.id_token,
        "refresh_token": user.refresh_token,
    }
    values.update(tokens)
    cookies = amplify_cookies(user.pool.client_id, user.username, **values)
    return "; ".join(f"{k}={v}" for k, v in cookies.items())


def made_up_session(pool: PoolInfo) -> str:
    """What an attacker sends: a made-up username and refresh token, no other token."""
    from tests.support.apps import amplify_cookies

    cookies = amplify_cookies(
        pool.client_id,
        f"mallory-{uuid.uuid4().hex[:6]}",
        access_token=None,
        id_token=None,
        refresh_token="eyJjdHkiOiJKV1QiLCJlbmMiOiJBMjU2R0NNIn0." + uuid.uuid4().hex,
    )
    return "; ".join(f"{k}={v}" for k, v in cookies.items())
