"""The refresh decision and the navigation test: pure functions over plain data."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from cookieguard.session.decide import Action, is_navigation, needs_refresh
from tests.support.properties import core_property

NOW = 1_800_000_000.0


def decide(
    exp: float | None,
    *,
    rt: bool = True,
    before: float = 300,
    drift_ms: int = 0,
    now: float = NOW,
    iat: float | None = None,
) -> Action:
    return needs_refresh(
        has_refresh_token=rt,
        access_expires_at=exp,
        access_issued_at=iat,
        now_s=now,
        before_expiry_s=before,
        clock_drift_ms=drift_ms,
    )


def test_far_from_expiry_forwards() -> None:
    assert decide(NOW + 3600) is Action.FORWARD


def test_within_before_expiry_refreshes() -> None:
    assert decide(NOW + 299) is Action.REFRESH
    assert decide(NOW + 300) is Action.REFRESH
    assert decide(NOW + 301) is Action.FORWARD


def test_expired_refreshes() -> None:
    assert decide(NOW - 10) is Action.REFRESH


def test_absent_access_token_with_refresh_token_refreshes() -> None:
    assert decide(None) is Action.REFRESH


def test_without_refresh_token_nothing_can_be_done() -> None:
    assert decide(None, rt=False) is Action.FORWARD
    assert decide(NOW - 10, rt=False) is Action.FORWARD


def test_clock_drift_is_applied_like_amplify() -> None:
    # The server's clock is 10 minutes ahead of ours: a token with 8 minutes left by our clock
    # has already passed before_expiry on the server's.
    assert decide(NOW + 480, drift_ms=600_000) is Action.REFRESH
    assert decide(NOW + 480, drift_ms=-600_000) is Action.FORWARD


@core_property
@given(
    exp=st.floats(min_value=0, max_value=4e9),
    t1=st.floats(min_value=0, max_value=4e9),
    dt=st.floats(min_value=0, max_value=1e8),
    before=st.floats(min_value=0, max_value=86400),
    drift=st.integers(min_value=-(10**8), max_value=10**8),
    lifetime=st.one_of(st.none(), st.floats(min_value=-1e6, max_value=1e7)),
)
def test_decision_is_monotonic_in_time(
    exp: float, t1: float, dt: float, before: float, drift: int, lifetime: float | None
) -> None:
    """Once a token is due, it stays due as time goes on; an expired token is always due; the
    window is never wider than before_expiry, whatever the token's issue time says."""
    iat = None if lifetime is None else exp - lifetime
    due = decide(exp, now=t1, before=before, drift_ms=drift, iat=iat)
    if due is Action.REFRESH:
        assert decide(exp, now=t1 + dt, before=before, drift_ms=drift, iat=iat) is Action.REFRESH
    server_now = t1 + drift / 1000
    if exp <= server_now:
        assert due is Action.REFRESH
    if exp - server_now > before:
        assert due is Action.FORWARD


def test_navigation_vs_background() -> None:
    html = "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"
    assert is_navigation({"Accept": html, "Sec-Fetch-Mode": "navigate"})
    assert is_navigation({"Accept": html})  # older browsers send no Sec-Fetch-* headers
    assert not is_navigation({"Accept": html, "Sec-Fetch-Mode": "cors"})
    assert not is_navigation({"Accept": "application/json", "Sec-Fetch-Mode": "navigate"})
    assert not is_navigation({"Accept": "*/*"})
    assert not is_navigation({})


def test_the_window_is_at_most_half_the_token_lifetime() -> None:
    """With 5-minute tokens and before_expiry 5m, refreshing on every request would follow."""

    def due(left_s: float, lifetime_s: float) -> Action:
        exp = NOW + left_s
        return needs_refresh(
            has_refresh_token=True,
            access_expires_at=exp,
            access_issued_at=exp - lifetime_s,
            now_s=NOW,
            before_expiry_s=300,
        )

    assert due(left_s=299, lifetime_s=300) is Action.FORWARD  # just issued
    assert due(left_s=151, lifetime_s=300) is Action.FORWARD
    assert due(left_s=149, lifetime_s=300) is Action.REFRESH
    assert due(left_s=299, lifetime_s=3600) is Action.REFRESH  # long-lived: before_expiry rules
    assert due(left_s=-60, lifetime_s=-120) is Action.REFRESH  # nonsense lifetimes: plain expiry
