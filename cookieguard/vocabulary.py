"""The words cookieguard's decisions are made of, each set declared once.

They are public: the `outcome` field of the `token_refresh` log line and the label of
`cookieguard_refresh_total`, `refresh.on_rejected` in the YAML, the session endpoint's `reason`
(docs/operations.md "Logs", "Metrics" and "Session endpoint", docs/configuration.md
"Configuration reference"). StrEnums, so a member is its string: log lines, metric labels and
JSON stay byte for byte what they were, and tests/test_public_surface.py checks the docs name
exactly these members.
"""

from __future__ import annotations

from enum import StrEnum, unique


@unique
class Outcome(StrEnum):
    """How a refresh ended (docs/behaviour.md §3)."""

    REFRESHED = "refreshed"  # this request called the IdP
    JOINED = "joined"  # it waited for a refresh already under way
    REUSED = "reused"  # it found a result from the grace window
    REJECTED = "rejected"  # the IdP said the session is over
    FAILED = "failed"  # the IdP could not answer: keep the session, back off
    LIMITED = "limited"  # a budget held the IdP call back (docs/security.md "Abuse limits")


@unique
class ForwardReason(StrEnum):
    """Why a request is forwarded as it is: the session needs nothing, or after a refresh, its
    outcome (the same words as `Outcome`)."""

    UNCHANGED = "unchanged"  # the route does not refresh, or no provider: the session is not read
    NO_SESSION = "no_session"
    NO_REFRESH_TOKEN = "no_refresh_token"
    INVALID_TOKEN = "invalid_token"  # fails verification: no session, never refreshed
    OPAQUE_UNSEEN = "opaque_unseen"  # an opaque access token cookieguard never saw issued
    FRESH = "fresh"
    REFRESHED = "refreshed"
    JOINED = "joined"
    REUSED = "reused"
    REJECTED = "rejected"
    FAILED = "failed"
    LIMITED = "limited"


@unique
class DueReason(StrEnum):
    """Whether the access token is due for a refresh, and why (docs/behaviour.md §2)."""

    ABSENT = "absent"  # no access token beside the refresh token
    NO_EXP = "no_exp"  # it has no `exp`
    EXPIRED = "expired"  # past its `exp` on the server's clock
    DUE = "due"  # within the refresh window
    FRESH = "fresh"  # not due


@unique
class OnRejected(StrEnum):
    """`refresh.on_rejected`: what the answer does when the IdP rejects the refresh token."""

    CLEAR = "clear"  # forward without the auth cookies and expire them
    PASS = "pass"  # forward as the request came
    LOGIN = "login"  # 302 to `login_url` for a navigation, else 401
    FLAG = "flag"  # keep the cookie, set its error field (a layout that lists it in `rejected_policies`)


@unique
class CheckReason(StrEnum):
    """The session endpoint's `reason`."""

    OK = "ok"
    REFRESHED = "refreshed"
    NO_SESSION = "no_session"
    EXPIRED = "expired"
    REJECTED = "rejected"
    INVALID_TOKEN = "invalid_token"
    REFRESH_UNAVAILABLE = "refresh_unavailable"
    LIMITED = "limited"
    UNPROVEN = "unproven"  # nothing but a refresh token, and its refresh did not happen
    NO_PROVIDER = "no_provider"
