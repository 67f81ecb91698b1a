"""The GoTrue-compatible test server lives in the package (`cookieguard demo --provider supabase`
runs it); the tests import it from here."""

from cookieguard.ops.demo.gotrue import DEFAULT_REUSE_INTERVAL_S, GoTrueServer, ManualClock

__all__ = ["DEAD_SESSIONS", "DEFAULT_REUSE_INTERVAL_S", "GoTrueServer", "ManualClock", "end_session"]

# Each way a GoTrue session dies, with the error code GoTrue answers a refresh with afterwards.
DEAD_SESSIONS = [
    ("sign_out", "refresh_token_not_found"),
    ("forget_session", "session_not_found"),
    ("expire_session", "session_expired"),
    ("ban", "user_banned"),
]


def end_session(gotrue: GoTrueServer, action: str, email: str, refresh_token: str) -> None:
    """End the session of `refresh_token` the way `action` (a DEAD_SESSIONS name) says: a ban
    names the user, every other action the session."""
    getattr(gotrue, action)(email if action == "ban" else gotrue.session_id_of(refresh_token))
