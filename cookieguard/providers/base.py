"""What every identity provider client returns and raises.

Two exceptions, named by what the caller must do (SPEC section 2):
`RefreshRejected` means the session is dead (clear it, or send the user to sign in);
`RefreshUnavailable` means the IdP could not answer (forward unchanged, back off, never sign out).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Protocol

import aiohttp

# How long a call may queue for one of the IdP client's pooled connections during a refresh
# storm. `provider.timeout` bounds the call itself (connecting, and each wait for the IdP's
# answer), not the queue: aiohttp's `total` would count the queue too, and a storm of 1,000
# expired sessions would then fail refreshes that never reached the IdP.
IDP_QUEUE_S = 30.0


def idp_timeout(timeout_s: float) -> aiohttp.ClientTimeout:
    return aiohttp.ClientTimeout(
        total=None, connect=timeout_s + IDP_QUEUE_S, sock_connect=timeout_s, sock_read=timeout_s
    )


@dataclass(frozen=True)
class TokenSet:
    """The IdP's answer to a refresh. `refresh_token` is set only when the IdP rotated it."""

    access_token: str = field(repr=False)
    id_token: str | None = field(default=None, repr=False)
    refresh_token: str | None = field(default=None, repr=False)
    expires_in_s: int | None = None

    @property
    def rotated(self) -> bool:
        return self.refresh_token is not None


class RefreshError(Exception):
    """Base class. `code` is the IdP's error code (never its message: messages can echo secrets)."""

    def __init__(self, code: str, *, status: int | None = None) -> None:
        super().__init__(code)
        self.code = code
        self.status = status


class RefreshRejected(RefreshError):
    """The IdP refused the refresh token: the session is over."""


class RefreshUnavailable(RefreshError):
    """The IdP could not be asked or answered badly: try again later, keep the session."""

    def __init__(self, code: str, *, status: int | None = None, retry_after_s: float | None = None) -> None:
        super().__init__(code, status=status)
        self.retry_after_s = retry_after_s


class Provider(Protocol):
    """A client for one IdP's refresh endpoint. It knows nothing of requests or cookies."""

    async def refresh(
        self, refresh_token: str, *, username: str | None = None, device_key: str | None = None
    ) -> TokenSet: ...


def parse_retry_after(value: str | None, now: datetime) -> float | None:
    """Retry-After as seconds (RFC 9110 section 10.2.3: delta-seconds or an HTTP-date)."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    seconds = (when - now).total_seconds()
    return max(0.0, seconds) if math.isfinite(seconds) else None
