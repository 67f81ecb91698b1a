"""Pure decisions of the request pipeline: is it time to refresh, is this a navigation."""

from __future__ import annotations

import enum
from collections.abc import Mapping


class Action(enum.Enum):
    FORWARD = "forward"  # nothing to do: no session, or a token far from expiry
    REFRESH = "refresh"  # absent-but-refreshable, expired, or within before_expiry of expiry


def needs_refresh(
    *,
    has_refresh_token: bool,
    access_expires_at: float | None,
    now_s: float,
    before_expiry_s: float,
    clock_drift_ms: int = 0,
    access_issued_at: float | None = None,
) -> Action:
    """docs/behaviour.md §2. `access_expires_at` is None when there is no usable
    access token.

    Amplify keeps `clockDrift` = server time - browser time (ms) and judges expiry on the
    server's clock; the proxy does the same so both agree on when a token is due.

    The refresh window is at most half the token's lifetime: with `before_expiry: 5m` and an IdP
    issuing 5-minute tokens, every request would otherwise refresh again.
    """
    if not has_refresh_token:
        return Action.FORWARD
    if access_expires_at is None:
        return Action.REFRESH
    window = refresh_window(before_expiry_s, access_expires_at, access_issued_at)
    server_now = now_s + clock_drift_ms / 1000.0
    if access_expires_at - server_now <= window:
        return Action.REFRESH
    return Action.FORWARD


def refresh_window(before_expiry_s: float, expires_at: float, issued_at: float | None) -> float:
    """`before_expiry`, capped at half the token's lifetime when its `iat` is known."""
    if issued_at is not None and expires_at > issued_at:
        return min(before_expiry_s, (expires_at - issued_at) / 2)
    return before_expiry_s


def is_navigation(headers: Mapping[str, str]) -> bool:
    """A top-level page load (gets a redirect to sign in) vs a background fetch (gets a 401)."""
    mode = headers.get("Sec-Fetch-Mode")
    if mode is not None and mode.lower() != "navigate":
        return False
    return "text/html" in headers.get("Accept", "")
