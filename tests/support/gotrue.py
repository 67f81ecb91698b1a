"""The GoTrue-compatible test server lives in the package (`cookieguard demo --provider supabase`
runs it); the tests import it from here."""

from cookieguard.demo.gotrue import DEFAULT_REUSE_INTERVAL_S, GoTrueServer, ManualClock

__all__ = ["DEFAULT_REUSE_INTERVAL_S", "GoTrueServer", "ManualClock"]
