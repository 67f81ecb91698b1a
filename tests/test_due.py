"""When a session is due for a refresh (cookieguard.session.plan.due), and whether a request is a
navigation (cookieguard.edge.headers): pure functions over plain data."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from cookieguard.edge.headers import is_navigation
from cookieguard.session.plan import ABSENT, AccessState, Due, due, time_left
from cookieguard.vocabulary import DueReason
from tests.support.properties import core_property

NOW = 1_800_000_000.0


def when(
    exp: float | None,
    *,
    before: float = 300,
    drift_ms: int = 0,
    now: float = NOW,
    iat: float | None = None,
) -> Due:
    return due(AccessState("ok", iat, exp), now, before, drift_ms)


def test_far_from_expiry_is_fresh() -> None:
    assert when(NOW + 3600) == Due(DueReason.FRESH, left_s=3600, window_s=300)


def test_within_before_expiry_is_due() -> None:
    assert when(NOW + 299).reason is DueReason.DUE
    assert when(NOW + 300).reason is DueReason.DUE
    assert when(NOW + 301).reason is DueReason.FRESH


def test_expired_is_due_and_says_how_long_ago() -> None:
    assert when(NOW - 10) == Due(DueReason.EXPIRED, left_s=-10, window_s=300)
    assert when(NOW).reason is DueReason.EXPIRED


def test_absent_access_token_or_no_exp_is_due() -> None:
    assert due(ABSENT, NOW, 300, 0) == Due(DueReason.ABSENT)
    assert when(None) == Due(DueReason.NO_EXP)
    assert when(None).is_due and not when(NOW + 3600).is_due


def test_clock_drift_is_applied_like_amplify() -> None:
    # The server's clock is 10 minutes ahead of ours: a token with 8 minutes left by our clock
    # has already passed before_expiry on the server's.
    assert when(NOW + 480, drift_ms=600_000).reason is DueReason.EXPIRED
    assert when(NOW + 480, drift_ms=-600_000).reason is DueReason.FRESH
    assert time_left(NOW + 480, NOW, 600_000) == -120


@core_property
@given(
    exp=st.floats(min_value=0, max_value=4e9),
    t1=st.floats(min_value=0, max_value=4e9),
    dt=st.floats(min_value=0, max_value=1e8),
    before=st.floats(min_value=0, max_value=86400),
    drift=st.integers(min_value=-(10**8), max_value=10**8),
    lifetime=st.one_of(st.none(), st.floats(min_value=-1e6, max_value=1e7)),
)
def test_due_is_monotonic_in_time(
    exp: float, t1: float, dt: float, before: float, drift: int, lifetime: float | None
) -> None:
    """Once a token is due, it stays due as time goes on; expired is exactly `time_left <= 0`
    (the one definition, with the clock drift) and always due; the window is never wider than
    before_expiry, whatever the token's issue time says."""
    iat = None if lifetime is None else exp - lifetime
    first = when(exp, now=t1, before=before, drift_ms=drift, iat=iat)
    if first.is_due:
        assert when(exp, now=t1 + dt, before=before, drift_ms=drift, iat=iat).is_due
    assert (first.reason is DueReason.EXPIRED) == (time_left(exp, t1, drift) <= 0)
    assert first.left_s == time_left(exp, t1, drift)
    if time_left(exp, t1, drift) > before:
        assert not first.is_due
    assert first.window_s is not None and first.window_s <= before


def test_the_window_is_at_most_half_the_token_lifetime() -> None:
    """With 5-minute tokens and before_expiry 5m, refreshing on every request would follow."""

    def reason(left_s: float, lifetime_s: float) -> DueReason:
        exp = NOW + left_s
        return when(exp, iat=exp - lifetime_s).reason

    assert reason(left_s=299, lifetime_s=300) is DueReason.FRESH  # just issued
    assert reason(left_s=151, lifetime_s=300) is DueReason.FRESH
    assert reason(left_s=149, lifetime_s=300) is DueReason.DUE
    assert when(NOW + 149, iat=NOW - 151) == Due(DueReason.DUE, 149, 150, capped=True)
    assert reason(left_s=299, lifetime_s=3600) is DueReason.DUE  # long-lived: before_expiry rules
    assert reason(left_s=-60, lifetime_s=-120) is DueReason.EXPIRED  # nonsense lifetimes: plain expiry


def test_navigation_vs_background() -> None:
    html = "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"
    assert is_navigation({"Accept": html, "Sec-Fetch-Mode": "navigate"})
    assert is_navigation({"Accept": html})  # older browsers send no Sec-Fetch-* headers
    assert not is_navigation({"Accept": html, "Sec-Fetch-Mode": "cors"})
    assert not is_navigation({"Accept": "application/json", "Sec-Fetch-Mode": "navigate"})
    assert not is_navigation({"Accept": "*/*"})
    assert not is_navigation({})
