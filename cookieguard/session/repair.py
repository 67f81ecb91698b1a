"""Session repair: gathers what the plan needs (cookieguard.session.plan) and carries out what it says.

The plan is pure; this is its shell. It reads the session (once per distinct Cookie header),
judges tokens (the verifier's cached verdict, else a signature check, paced), sends planned
refreshes to the IdP (single-flight, budgeted), remembers opaque tokens' lifetimes, logs and
counts each refresh. The proxy and the session endpoint both use it.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from cookieguard.config import Config
from cookieguard.logs import annotate_request, get_logger
from cookieguard.lru import LRU
from cookieguard.metrics import Metrics
from cookieguard.session.layouts import Layout, Session, SessionReader
from cookieguard.session.limits import Claimant, LogThrottle
from cookieguard.session.plan import (
    NO_VERDICTS,
    Answer,
    Check,
    Forward,
    Lifetime,
    Plan,
    Policy,
    Refresh,
    SessionCheck,
    Verdicts,
    plan_session,
    refreshed_user,
    session_check,
)
from cookieguard.session.refresh import Refresher
from cookieguard.session.result import RefreshResult
from cookieguard.tokens.claims import MAX_TOKEN_CHARS, ClaimsReader, TokenKind, session_id, token_key
from cookieguard.tokens.verifier import TokenCheck, TokenStatus, TokenVerifier
from cookieguard.vocabulary import Outcome


@dataclass
class Auth:
    """What session repair needs; absent when no provider is configured."""

    layout: Layout
    refresher: Refresher
    verifier: TokenVerifier | None  # None: verify.signature is false
    claims: ClaimsReader  # the process's claims memo, shared with the verifier
    wall_clock: Callable[[], float] = time.time
    sessions: SessionReader = field(init=False)
    # One `outcome: limited` line per budget and address or subject per minute (docs/operations.md "Logs").
    limited_log: LogThrottle = field(default_factory=LogThrottle)

    def __post_init__(self) -> None:
        self.sessions = SessionReader(self.layout)


# Requests per event-loop turn that may start a signature check or a refresh. bench/README.md,
# "Each step, measured" (step 5, the refresh storm): fresh sessions' p99 during a 1,000-session
# storm was 71-81 ms unpaced, 23-43 ms at 4, 42 ms at 8, 34 ms at 2 (single runs, noisy); the
# storm took no longer.
PACE_PER_TURN = 4


class Pacer:
    """Lets at most `per_turn` callers through per event-loop turn; the others wait their turn.

    A burst of requests that all need expensive work (a thousand expired sessions at once: a
    signature check and an IdP call each) would otherwise run in one turn of the event loop and
    hold up every other request, including fresh sessions that need nothing, for that long.
    Paced, each turn does a bounded amount of that work and the cheap requests go in between.
    """

    def __init__(self, per_turn: int) -> None:
        self._slots = asyncio.Semaphore(per_turn)

    async def turn(self) -> None:
        await self._slots.acquire()
        asyncio.get_running_loop().call_soon(self._slots.release)


@dataclass(slots=True)
class Judged:
    """What was gathered for one request's plan; the plan after the refresh reads it again."""

    cookie_header: str = field(repr=False)
    session: Session | None
    verdicts: Verdicts
    now_s: float


class _Read:
    """One Cookie header's session as read, the key of its access token's verdict (None: the
    plan will not ask for it first), and the verdicts record last built from that verdict
    (reused while the verifier returns the same one)."""

    __slots__ = ("access_key", "session", "verdicts")

    def __init__(self, session: Session | None, access_key: bytes | None) -> None:
        self.session = session
        self.access_key = access_key
        self.verdicts = NO_VERDICTS


NOT_READ = _Read(None, None)
READS_KEPT = 512  # SessionReader's default size


class SessionRepair:
    def __init__(self, config: Config, auth: Auth, metrics: Metrics) -> None:
        self.auth = auth
        self.policy = Policy.from_config(config, auth.layout)
        self.metrics = metrics
        self._opaque_allowed = config.provider is not None and config.provider.opaque_access_tokens
        self._pacer = Pacer(PACE_PER_TURN)
        self.log = get_logger()
        # Per Cookie header: the session and its access token's cache key (as many as the
        # session reader keeps).
        self._reads: LRU[str, _Read] = LRU(READS_KEPT)

    async def plan(self, cookie_header: str) -> tuple[Plan, Judged]:
        """Read the session and plan, gathering the verdicts the plan asks for."""
        auth = self.auth
        read = self._read(cookie_header) if cookie_header else NOT_READ
        session = read.session
        now = auth.wall_clock()
        verdicts = NO_VERDICTS
        verifier = auth.verifier
        if read.access_key is not None and verifier is not None:
            # The verdict the plan asks for first, looked up by the key computed with the read:
            # a fresh session then costs one cached read, one cached verdict and one pass.
            verdict = verifier.peek_key(read.access_key, "access")
            if verdict is not None and verdict.status is not TokenStatus.OPAQUE:
                if read.verdicts.access is not verdict:
                    read.verdicts = NO_VERDICTS.with_verdict("access", verdict, None)
                verdicts = read.verdicts
        plan = plan_session(session, verdicts, now, self.policy)
        while isinstance(plan, Check):
            assert session is not None
            token = plan.token(session) or ""
            # The hot path: a token seen before costs a dictionary lookup, and no await.
            verdict = verifier.peek(token, plan.kind) if verifier is not None else None
            if verdict is not None and verdict.status is not TokenStatus.OPAQUE:
                verdicts = verdicts.with_verdict(plan.kind, verdict, verdicts.opaque_lifetime)
            else:
                verdicts = await self._gather(verdicts, plan.kind, token)
            plan = plan_session(session, verdicts, now, self.policy)
        return plan, Judged(cookie_header, session, verdicts, now)

    def _read(self, cookie_header: str) -> _Read:
        read = self._reads.get(cookie_header)
        if read is None:
            session = self.auth.sessions.read(cookie_header)
            access_key = None
            # The plan asks for the access token's verdict first whenever the session has one and
            # a refresh token (judge_access); a token too long for the verifier's cache has no key.
            if (
                session is not None
                and session.refresh_token
                and session.access_token
                and len(session.access_token) <= MAX_TOKEN_CHARS
            ):
                access_key = token_key(session.access_token)
            read = _Read(session, access_key)
            self._reads.put(cookie_header, read)
        return read

    async def refresh(self, judged: Judged, refresh: Refresh, address: str, *, is_navigation: bool) -> Plan:
        """Refresh as planned (single-flight, the budgets), then the plan again with the result;
        the refresh is logged and counted."""
        annotate_request(session=session_id(refresh.refresh_token))
        await self._pacer.turn()
        result = await self.auth.refresher.refresh(
            refresh.refresh_token,
            context=refresh.context,
            claimant=Claimant(address, refresh.proof.subject),
            urgent=refresh.urgent,
        )
        plan = plan_session(
            judged.session,
            judged.verdicts,
            judged.now_s,
            self.policy,
            cookie_header=judged.cookie_header,
            result=result,
            is_navigation=is_navigation,
        )
        if isinstance(plan, Forward) and plan.fresh is not None and plan.opaque_lifetime is not None:
            lifetime = plan.opaque_lifetime
            self.auth.refresher.note_opaque_lifetime(
                plan.fresh.access_token, lifetime.issued_at, lifetime.expires_at
            )
        assert judged.session is not None
        self._log_refresh(judged.session, refresh, result, plan, address)
        return plan

    async def check(self, cookie_header: str, address: Callable[[], str]) -> SessionCheck:
        """The session endpoint: repair the session exactly as a proxied request would, then report.

        The request is never forwarded; the Set-Cookie headers the plan decided on (fresh tokens,
        or expired auth cookies for a dead session) go back to the browser with the report.
        """
        plan, judged = await self.plan(cookie_header)
        if isinstance(plan, Refresh):
            # Off the fast path: only a session that is due pays for its address. Never a
            # redirect from here: the answer is always the JSON report.
            plan = await self.refresh(judged, plan, address(), is_navigation=False)
        assert isinstance(plan, Forward | Answer)
        session, verdicts = judged.session, judged.verdicts
        report = session_check(session, verdicts, plan, judged.now_s, self.policy)
        while isinstance(report, Check):
            assert session is not None
            verdicts = await self._gather(verdicts, report.kind, report.token(session) or "")
            report = session_check(session, verdicts, plan, judged.now_s, self.policy)
        return report

    async def _gather(self, verdicts: Verdicts, kind: TokenKind, token: str) -> Verdicts:
        verdict = await self._verdict(kind, token)
        lifetime = None
        if kind == "access" and verdict.status is TokenStatus.OPAQUE:
            seen = self.auth.refresher.opaque_lifetime(token)
            lifetime = Lifetime(*seen) if seen is not None else None
        return verdicts.with_verdict(kind, verdict, lifetime or verdicts.opaque_lifetime)

    async def _verdict(self, kind: TokenKind, token: str) -> TokenCheck:
        verifier = self.auth.verifier
        if verifier is None:
            return unverified_verdict(
                token, self.auth.claims, opaque_allowed=kind == "access" and self._opaque_allowed
            )
        verdict = verifier.peek(token, kind)
        if verdict is None:
            await self._pacer.turn()  # a token not seen before costs a signature check
            verdict = await verifier.check(token, kind=kind)
        return verdict

    def _log_refresh(
        self, session: Session, refresh: Refresh, result: RefreshResult, plan: Plan, address: str
    ) -> None:
        """The `token_refresh` line and the refresh metrics (docs/operations.md "Logs", "Metrics")."""
        metrics = self.metrics
        metrics.refresh_total.labels(outcome=result.outcome).inc()
        if result.outcome is Outcome.REFRESHED:
            metrics.refresh_duration.observe(result.duration_ms / 1000)
        if result.duration_ms and result.outcome in (Outcome.REFRESHED, Outcome.REJECTED):
            metrics.refresh_wait.observe(result.wait_ms / 1000)
        proof = refresh.proof
        extra: dict[str, object] = {}
        if result.outcome is Outcome.LIMITED:
            metrics.refresh_limited.labels(limit=result.error or "").inc()
            # A spray must not flood the logs: one line per budget and subject or address a minute.
            who = f"subject:{proof.subject}" if proof.proven else f"address:{address}"
            if not self.auth.limited_log.allow(f"{result.error}|{who}", self.auth.wall_clock()):
                return
            # The address is logged as it is: operators need it to act, and it is no credential.
            extra = {"limit": result.error, "address": address}
        new_claims = plan.fresh_claims if isinstance(plan, Forward) else None
        log = self.log.warning if result.outcome in (Outcome.FAILED, Outcome.LIMITED) else self.log.info
        log(
            "token_refresh",
            outcome=result.outcome,
            user=refreshed_user(proof, session, plan, self.policy.user_claims),
            proven=proof.proven,
            **extra,
            old_exp=int(refresh.old_expires_at) if refresh.old_expires_at else None,
            new_exp=int(new_claims.exp) if new_claims and new_claims.exp else None,
            duration_ms=result.duration_ms,
            wait_ms=result.wait_ms,
            idp_status=result.idp_status,
            error=result.error,
            rotated=bool(result.tokens and result.tokens.rotated),
        )


def unverified_verdict(token: str, claims_reader: ClaimsReader, *, opaque_allowed: bool) -> TokenCheck:
    """A verdict without a signature check (`verify.signature: false`): what the token's claims
    say, as decoded."""
    claims = claims_reader.read(token)
    if claims is None:
        return TokenCheck(TokenStatus.OPAQUE, reason="opaque") if opaque_allowed else _NOT_A_JWT
    return TokenCheck(TokenStatus.VALID, claims, "unverified")


_NOT_A_JWT = TokenCheck(TokenStatus.INVALID, reason="not_a_jwt")
