"""The reject-storm guard: an operator's mistake must not sign every user out.

Cognito answers a wrong `client_secret` with `NotAuthorizedException`, and oidc-provider answers
a refresh token presented by another (valid) client with `invalid_grant`: exactly what a dead
session gets. One typo in the config would make cookieguard clear the cookies of every user who
comes by. Dead sessions, though, trickle in one at a time; a misconfiguration rejects nearly all
of them at once. So when, within `WINDOW_S`, at least `MIN_REJECTED_SESSIONS` distinct sessions
were rejected and rejections are at least `MIN_REJECTED_RATIO` of the IdP's verdicts, cookieguard
stops believing rejections: they are treated as IdP trouble (`failed`, error `reject_storm`)
until the ratio drops.

A false alarm is cheap: during a real mass revocation the sessions are forwarded unchanged with
their expired tokens, and the app's own auth (which the IdP rejects too) signs them out itself.

Pure: no I/O, no logger, the clock is passed in. Only verdicts count (the IdP said `refreshed` or
`rejected`); timeouts and 5xx say nothing about the configuration. Each session counts once, with
its latest verdict, so one user hammering a dead token cannot start a storm.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass

WINDOW_S = 60.0
MIN_REJECTED_SESSIONS = 20
MIN_REJECTED_RATIO = 0.9
MAX_TRACKED_SESSIONS = 100_000


@dataclass(frozen=True)
class StormChange:
    """The guard went into (`started`) or out of (`ended`) a storm; counts are over the window."""

    started: bool
    rejected_sessions: int
    sessions: int
    window_s: float


class RejectStormGuard:
    def __init__(
        self,
        *,
        window_s: float = WINDOW_S,
        min_rejected_sessions: int = MIN_REJECTED_SESSIONS,
        min_rejected_ratio: float = MIN_REJECTED_RATIO,
        max_sessions: int = MAX_TRACKED_SESSIONS,
    ) -> None:
        self.window_s = window_s
        self.min_rejected_sessions = min_rejected_sessions
        self.min_rejected_ratio = min_rejected_ratio
        self.max_sessions = max_sessions
        # session key -> (time of its latest verdict, rejected?), oldest verdict first
        self._verdicts: OrderedDict[str, tuple[float, bool]] = OrderedDict()
        self._rejected = 0
        self.storming = False

    def record(self, session: str, *, rejected: bool, now: float) -> StormChange | None:
        """Note one IdP verdict; returns the change of state it caused, if any."""
        self._forget(session)
        self._verdicts[session] = (now, rejected)
        self._rejected += rejected
        while len(self._verdicts) > self.max_sessions:
            self._forget(next(iter(self._verdicts)))
        return self._evaluate(now)

    def check(self, now: float) -> StormChange | None:
        """Re-evaluate as time passes (verdicts leave the window); returns a change, if any."""
        return self._evaluate(now)

    @property
    def rejected_sessions(self) -> int:
        return self._rejected

    @property
    def sessions(self) -> int:
        return len(self._verdicts)

    def _evaluate(self, now: float) -> StormChange | None:
        horizon = now - self.window_s
        while self._verdicts:
            oldest = next(iter(self._verdicts))
            if self._verdicts[oldest][0] > horizon:
                break
            self._forget(oldest)
        total = len(self._verdicts)
        storming = (
            self._rejected >= self.min_rejected_sessions and self._rejected >= self.min_rejected_ratio * total
        )
        if storming == self.storming:
            return None
        self.storming = storming
        return StormChange(storming, self._rejected, total, self.window_s)

    def _forget(self, session: str) -> None:
        previous = self._verdicts.pop(session, None)
        if previous is not None:
            self._rejected -= previous[1]
