"""The session plan: should this request's session be refreshed, and what then?

One pure function, `plan_session`, answers it as plain data. The caller gathers the facts (the
session its layout read from the Cookie header, the verdicts on the session's tokens, the wall
clock, and after a refresh its result) and carries the plan out: the proxy forwards or answers,
the session endpoint reports, `cookieguard explain` prints, and a forward-auth endpoint could do
the same without an aiohttp object. Nothing here does I/O, logs or reads a clock.

A caller runs it in steps (docs/behaviour.md §1):

1. `plan_session(session, verdicts, now)`: `Check(kind)` while a verdict the plan needs is not
   gathered yet (a signature check is I/O: the caller does it and plans again), then `Forward`
   unchanged, or `Refresh` (what to send to the IdP and whom to charge it to).
2. After the refresh, `plan_session(..., result=result)`: `Forward` with the fresh tokens in the
   Cookie header and as Set-Cookies, `Forward` without the auth cookies and with them expired
   (`on_rejected: clear`), `Answer` 302/401 (`on_rejected: login`), or `Forward` unchanged (the
   IdP could not answer, a budget held the call back, `on_rejected: pass`).

`session_check` turns a plan into the session endpoint's report (docs/operations.md "Session endpoint").

When a token is due is decided here once (`due`), on the server's clock (`time_left`): the due
window, the time left and the reason travel on `Refresh.due`, and on a fresh `Forward.due` when
the caller asks (`Policy.keep_due`: `cookieguard explain` prints them). The module imports
nothing that does I/O (tests/test_plan.py imports it with those modules blocked).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, NamedTuple

from cookieguard.cookies import SetCookie, parse_cookie_header
from cookieguard.session.layouts import FreshTokens, Layout, Session
from cookieguard.session.result import RefreshResult
from cookieguard.tokens.claims import Claims, TokenCheck, TokenKind, TokenStatus, decode_claims
from cookieguard.vocabulary import CheckReason, DueReason, ForwardReason, OnRejected, Outcome

if TYPE_CHECKING:
    from cookieguard.config import Config, CookieAttributes


@dataclass(frozen=True, slots=True)
class Policy:
    """What the plan needs from the configuration."""

    layout: Layout
    before_expiry_s: float
    on_rejected: (
        OnRejected  # docs/behaviour.md §3 (`flag`: only a layout that lists it in `rejected_policies`)
    )
    login_url: str
    attributes: CookieAttributes = field(repr=False)
    signature_verified: bool  # verify.signature: without it nothing is proven
    # The claims that name the user, the provider's (ProviderConfig.user_claims): read from the
    # IdP's fresh tokens, as the verifier reads them from the request's.
    user_claims: tuple[str, ...]
    # Carry the due window on a fresh session's Forward too (`cookieguard explain` prints it).
    # The proxy does not read it there, and its hottest path then allocates nothing.
    keep_due: bool = False

    @classmethod
    def from_config(cls, config: Config, layout: Layout) -> Policy:
        return cls(
            layout=layout,
            before_expiry_s=config.refresh.before_expiry_s,
            on_rejected=config.refresh.on_rejected,
            login_url=config.refresh.login_url,
            attributes=config.cookies.attributes,
            signature_verified=config.verify.signature,
            user_claims=config.provider.user_claims if config.provider is not None else (),
        )


class Lifetime(NamedTuple):
    issued_at: float
    expires_at: float


class Verdicts(NamedTuple):
    """What the caller learnt about the session's tokens. A verdict left None is not gathered
    yet (the plan asks for it with `Check` when it needs it); a token the session lacks has none.

    `opaque_lifetime`: for an opaque access token, the lifetime from the token response that
    issued it, when cookieguard received that response itself (docs/providers/oidc.md "Any OIDC provider":
    `expires_in`); None when cookieguard never saw it issued.
    """

    access: TokenCheck | None = None
    id: TokenCheck | None = None
    opaque_lifetime: Lifetime | None = None

    def with_verdict(self, kind: TokenKind, check: TokenCheck, opaque_lifetime: Lifetime | None) -> Verdicts:
        if kind == "access":
            return Verdicts(check, self.id, opaque_lifetime)
        return Verdicts(self.access, check, self.opaque_lifetime)


NO_VERDICTS = Verdicts()


@dataclass(frozen=True, slots=True)
class Proof:
    """Whether a session is proven (docs/security.md "Abuse limits"): one of its access or id tokens
    verifies against the IdP's keys for this client (expired is fine). `subject` and `user` come
    from that token only; `reason` says why a session is not proven."""

    subject: str | None = None
    user: str | None = None
    reason: str = "ok"  # ok | no_token | not_verified (verify.signature false) | no_sub | <verdict reason>
    # The token that proves it, or the last one that did not (what `cookieguard explain` names).
    kind: TokenKind | None = field(default=None, compare=False)

    @property
    def proven(self) -> bool:
        return self.subject is not None


NOT_VERIFIED = Proof(reason="not_verified")


class AccessState(NamedTuple):
    """What the access token says about the session.

    `reason`: `ok` (its lifetime is known as far as it goes: `expires_at` None when it has no
    `exp`), `absent` (no access token beside the refresh token), `invalid_token` (it fails
    verification: the session is not trusted and never refreshed), `opaque_unseen` (an opaque
    token cookieguard never saw issued: the app's own sign-in just issued it, so it is not due).
    """

    reason: str
    issued_at: float | None = None
    expires_at: float | None = None


ABSENT = AccessState("absent")
INVALID = AccessState("invalid_token")
OPAQUE_UNSEEN = AccessState("opaque_unseen")


class Due(NamedTuple):
    """Whether the access token is due for a refresh (docs/behaviour.md §2), as the plan
    decided it. `left_s`: the time left before its `exp` on the server's clock (negative: it
    expired that long ago); `window_s`: the refresh window it is judged by, `refresh.before_expiry`
    or, when `capped`, half the token's lifetime. Both None when it has no `exp` or is absent."""

    reason: DueReason
    left_s: float | None = None
    window_s: float | None = None
    capped: bool = False

    @property
    def is_due(self) -> bool:
        return self.reason is not DueReason.FRESH


DUE_ABSENT = Due(DueReason.ABSENT)
DUE_NO_EXP = Due(DueReason.NO_EXP)


def time_left(expires_at: float, now_s: float, clock_drift_ms: int) -> float:
    """Seconds before `expires_at` on the server's clock; expired when <= 0. Amplify keeps
    `clockDrift` = server time - browser time (ms) and judges expiry on the server's clock; the
    proxy does the same so both agree on when a token is due."""
    return expires_at - (now_s + clock_drift_ms / 1000)


def refresh_window(before_expiry_s: float, expires_at: float, issued_at: float | None) -> float:
    """`before_expiry`, capped at half the token's lifetime when its `iat` is known: with
    `before_expiry: 5m` and an IdP issuing 5-minute tokens, every request would otherwise
    refresh again."""
    if issued_at is not None and expires_at > issued_at:
        return min(before_expiry_s, (expires_at - issued_at) / 2)
    return before_expiry_s


def due(access: AccessState, now_s: float, before_expiry_s: float, clock_drift_ms: int) -> Due:
    """When the refresh is due: within the refresh window before `exp`, on the server's clock;
    expired when no time is left."""
    expires_at = access.expires_at
    if expires_at is None:
        return DUE_ABSENT if access is ABSENT else DUE_NO_EXP
    left = time_left(expires_at, now_s, clock_drift_ms)
    window = refresh_window(before_expiry_s, expires_at, access.issued_at)
    capped = window < before_expiry_s
    if left > window:
        return Due(DueReason.FRESH, left, window, capped)
    return Due(DueReason.EXPIRED if left <= 0 else DueReason.DUE, left, window, capped)


# ---------------------------------------------------------------------------------------------
# Plans
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Check:
    """Gather the verdict on the session's token of this kind, then plan again."""

    kind: TokenKind

    def token(self, session: Session) -> str | None:
        return session.access_token if self.kind == "access" else session.id_token


CHECK_ACCESS = Check("access")
CHECK_ID = Check("id")


@dataclass(frozen=True, slots=True)
class Refresh:
    """Send this refresh token to the IdP, charged to the proof's subject (else the address)."""

    refresh_token: str = field(repr=False)
    context: Mapping[str, str] = field(repr=False)  # Session.refresh_context, for the provider
    proof: Proof
    due: Due
    old_expires_at: float | None  # the access token's `exp`, for the log line
    # Forwarded unrefreshed, the app would get no access token, an expired one, or one that
    # expires before it could act on it (docs/security.md "Abuse limits": such a session waits for the IdP
    # ceiling). False: still valid for a while, merely inside `before_expiry`.
    urgent: bool = True

    @property
    def reason(self) -> DueReason:
        return self.due.reason


@dataclass(frozen=True, slots=True)
class Forward:
    """Forward the request. `cookie_header` None: the client's Cookie header as it came."""

    reason: ForwardReason  # after a refresh, its outcome
    cookie_header: str | None = field(default=None, repr=False)
    set_cookies: tuple[SetCookie, ...] = field(default=(), repr=False)  # merged into the answer
    outcome: Outcome | None = None  # the refresh outcome, when a refresh was made
    fresh: FreshTokens | None = None  # the tokens the refresh gave
    fresh_claims: Claims | None = None  # the fresh access token's claims, decoded once (None: opaque)
    # Remember this lifetime for the fresh access token: it is opaque, and only this token
    # response says when it expires.
    opaque_lifetime: Lifetime | None = None
    due: Due | None = None  # `fresh`, with Policy.keep_due: how far the token is from its refresh


@dataclass(frozen=True, slots=True)
class Answer:
    """Answer without forwarding: 302 to `location` for a navigation, else 401
    `{"error": "session_expired"}` (docs/behaviour.md §3, `login`)."""

    status: int
    location: str | None
    set_cookies: tuple[SetCookie, ...] = field(repr=False)
    outcome: Outcome
    reason: ForwardReason = ForwardReason.REJECTED


Plan = Check | Refresh | Forward | Answer

# A token this close to its expiry is as good as expired to the app: Amplify's server-side
# session refreshes by itself a token within 5 s of `exp` (isTokenExpired's tolerance), and a
# handler may still call an API with the token after that check.
APP_MARGIN_S = 30.0

NO_SESSION = Forward(ForwardReason.NO_SESSION)
NO_REFRESH_TOKEN = Forward(ForwardReason.NO_REFRESH_TOKEN)
INVALID_TOKEN = Forward(ForwardReason.INVALID_TOKEN)
UNSEEN_OPAQUE_TOKEN = Forward(ForwardReason.OPAQUE_UNSEEN)
FRESH = Forward(ForwardReason.FRESH)  # `due` left out (Policy.keep_due)


def plan_session(
    session: Session | None,
    verdicts: Verdicts,
    now_s: float,
    policy: Policy,
    *,
    cookie_header: str = "",
    result: RefreshResult | None = None,
    is_navigation: bool = False,
) -> Plan:
    """What to do with this request's session. `cookie_header` is the request's whole Cookie
    header (rewritten when the plan changes cookies); `result` the refresh's, once made;
    `is_navigation` decides between 302 and 401 for `on_rejected: login`."""
    if session is None:
        return NO_SESSION
    if not session.refresh_token:
        return NO_REFRESH_TOKEN
    access = judge_access(session, verdicts)
    if isinstance(access, Check):
        return access
    if access is INVALID:
        return INVALID_TOKEN  # a token that fails verification is no session: never refresh it
    if access is OPAQUE_UNSEEN:
        return UNSEEN_OPAQUE_TOKEN
    expires_at = access.expires_at
    if expires_at is not None and not policy.keep_due:
        # due() below, without its record: most requests carry a fresh session.
        window = refresh_window(policy.before_expiry_s, expires_at, access.issued_at)
        if time_left(expires_at, now_s, session.clock_drift_ms) > window:
            return FRESH
    when = due(access, now_s, policy.before_expiry_s, session.clock_drift_ms)
    if when.reason is DueReason.FRESH:
        return Forward(ForwardReason.FRESH, due=when)
    proof = prove(session, verdicts, policy)
    if isinstance(proof, Check):
        return proof
    if result is None:
        return Refresh(
            session.refresh_token,
            context=session.refresh_context,
            proof=proof,
            due=when,
            old_expires_at=access.expires_at,
            urgent=_urgent(when),
        )
    return _after_refresh(session, result, now_s, policy, cookie_header, is_navigation)


def _urgent(when: Due) -> bool:
    """Whether the app would get no access token, an expired one, or one within APP_MARGIN_S of
    its expiry, were the request forwarded unrefreshed."""
    return when.reason is not DueReason.DUE or (when.left_s is not None and when.left_s <= APP_MARGIN_S)


def _after_refresh(
    session: Session,
    result: RefreshResult,
    now_s: float,
    policy: Policy,
    cookie_header: str,
    is_navigation: bool,
) -> Forward | Answer:
    layout = policy.layout
    if result.tokens is not None:
        tokens = result.tokens
        claims = decode_claims(tokens.access_token, policy.user_claims)
        fresh = FreshTokens(
            access_token=tokens.access_token,
            id_token=tokens.id_token or session.id_token,
            refresh_token=tokens.refresh_token or session.refresh_token or "",
            # Amplify's clockDrift: server time - browser time, from the fresh token's `iat`.
            clock_drift_ms=round(claims.iat * 1000 - now_s * 1000)
            if claims and claims.iat
            else session.clock_drift_ms,
            expires_in_s=tokens.expires_in_s,
            extra_fields=tokens.extra_fields,
        )
        opaque_lifetime = None
        if claims is None and tokens.expires_in_s is not None:
            opaque_lifetime = Lifetime(now_s, now_s + tokens.expires_in_s)
        return Forward(
            ForwardReason(result.outcome),
            cookie_header=layout.cookie_header(parse_cookie_header(cookie_header), session, fresh),
            set_cookies=tuple(layout.set_cookies(session, fresh, policy.attributes)),
            outcome=result.outcome,
            fresh=fresh,
            fresh_claims=claims,
            opaque_lifetime=opaque_lifetime,
        )
    if result.outcome is not Outcome.REJECTED or policy.on_rejected is OnRejected.PASS:
        # IdP trouble never signs a user out: forward as the request came.
        return Forward(ForwardReason(result.outcome), outcome=result.outcome)
    if policy.on_rejected is OnRejected.FLAG:
        # The app sees its own error field in this very request and signs the user out itself.
        header, flagged = layout.flag_rejected(parse_cookie_header(cookie_header), session, policy.attributes)
        return Forward(
            ForwardReason.REJECTED, cookie_header=header, set_cookies=tuple(flagged), outcome=result.outcome
        )
    clear = tuple(layout.clear_cookies(session, policy.attributes))
    if policy.on_rejected is OnRejected.LOGIN:
        if is_navigation:
            return Answer(302, policy.login_url, clear, result.outcome)
        return Answer(401, None, clear, result.outcome)
    return Forward(
        ForwardReason.REJECTED,
        cookie_header=layout.stripped_cookie_header(parse_cookie_header(cookie_header), session),
        set_cookies=clear,
        outcome=result.outcome,
    )


def judge_access(session: Session, verdicts: Verdicts) -> AccessState | Check:
    token = session.access_token
    if not token:
        return ABSENT  # absent but refreshable
    verdict = verdicts.access
    if verdict is None:
        return CHECK_ACCESS
    if verdict.status is TokenStatus.INVALID:
        return INVALID
    if session.expires_at is not None:
        # The session's own record of the expiry, as the app reads it (the token may be opaque).
        claims = verdict.claims
        return AccessState("ok", claims.iat if claims is not None else None, session.expires_at)
    if verdict.status is TokenStatus.OPAQUE:
        seen = verdicts.opaque_lifetime
        return OPAQUE_UNSEEN if seen is None else AccessState("ok", seen.issued_at, seen.expires_at)
    # VALID, or UNKNOWN (the JWKS cannot be fetched right now: the IdP will judge the refresh).
    claims = verdict.claims
    return AccessState("ok", claims.iat, claims.exp) if claims is not None else AccessState("ok")


def prove(
    session: Session, verdicts: Verdicts, policy: Policy, *, assume_signed: bool = False
) -> Proof | Check:
    """Is the session proven? An UNKNOWN verdict (JWKS unreachable) proves nothing, unless
    `assume_signed` (`cookieguard explain`, which checks no signature: would it be proven?)."""
    if session.sealed_subject is not None:
        return Proof(session.sealed_subject, session.user)
    if not policy.signature_verified:
        return NOT_VERIFIED
    reason = "no_token"
    last: TokenKind | None = None
    proving = (TokenStatus.VALID, TokenStatus.UNKNOWN) if assume_signed else (TokenStatus.VALID,)
    candidates: tuple[tuple[Check, str | None, TokenCheck | None], ...] = (
        (CHECK_ACCESS, session.access_token, verdicts.access),
        (CHECK_ID, session.id_token, verdicts.id),
    )
    for check, token, verdict in candidates:
        if not token:
            continue
        if verdict is None:
            return check
        if verdict.status in proving and verdict.claims is not None and verdict.claims.sub:
            return Proof(verdict.claims.sub, reported_user(verdict.claims), kind=check.kind)
        reason = verdict.reason if verdict.status not in proving else "no_sub"
        last = check.kind
    return Proof(reason=reason, kind=last)


def reported_user(claims: Claims) -> str | None:
    """The user a verified token names: the first of its provider's `user_claims` it carries
    (tokens.claims_from picks it), else `sub`."""
    return claims.user or claims.sub


def user_of(proof: Proof, session: Session) -> str | None:
    """The user to report (docs/operations.md "Logs"): from a verified token; the cookies' name only when
    nothing can be verified (`verify.signature: false`). A token of one user under another's
    name reports the token's user."""
    if proof.proven:
        return proof.user
    return session.user if proof is NOT_VERIFIED else None


def refreshed_user(proof: Proof, session: Session, plan: Plan, user_claims: tuple[str, ...]) -> str | None:
    """The user a refresh is logged under: the one a verified token names; else the one the
    IdP's fresh tokens name (they came from the IdP itself); the cookies' name only when nothing
    can be verified."""
    if proof.user is not None:
        return proof.user
    if isinstance(plan, Forward) and plan.fresh is not None:
        user = fresh_user(plan.fresh, plan.fresh_claims, user_claims)
        if user is not None:
            return user
    return session.user if proof is NOT_VERIFIED else None


def fresh_user(fresh: FreshTokens, access_claims: Claims | None, user_claims: tuple[str, ...]) -> str | None:
    """The user the IdP's fresh tokens name: the access token's (`access_claims`, read with
    `user_claims`), else the id token's."""
    user = reported_user(access_claims) if access_claims is not None else None
    if user is None and fresh.id_token:
        id_claims = decode_claims(fresh.id_token, user_claims)
        user = reported_user(id_claims) if id_claims is not None else None
    return user


# ---------------------------------------------------------------------------------------------
# The session endpoint's report
# ---------------------------------------------------------------------------------------------


@dataclass
class SessionCheck:
    """What the session endpoint reports. Holds no token: Set-Cookie headers only."""

    authenticated: bool
    user: str | None = None
    expires_at: float | None = None  # the access token's `exp`, epoch seconds
    refreshed: bool = False
    reason: CheckReason = CheckReason.OK
    set_cookies: list[str] = field(default_factory=list, repr=False)


def session_check(
    session: Session | None, verdicts: Verdicts, plan: Forward | Answer, now_s: float, policy: Policy
) -> SessionCheck | Check:
    """The session endpoint's report on a plan carried out (docs/operations.md "Session endpoint"), or the
    verdict it still needs (the user comes from whichever token verifies)."""
    set_cookies = [cookie.header() for cookie in plan.set_cookies]
    if session is None:
        return SessionCheck(authenticated=False, reason=CheckReason.NO_SESSION)
    fresh = plan.fresh if isinstance(plan, Forward) else None
    if fresh is None:
        judged = judge_access(session, verdicts)
        if isinstance(judged, Check):
            return judged
        proof = prove(session, verdicts, policy)
        if isinstance(proof, Check):
            return proof
        access, user = judged, user_of(proof, session)
        clock_drift_ms = session.clock_drift_ms
    else:
        assert isinstance(plan, Forward)
        access = _fresh_access(plan)
        user = (
            session.user
            if not policy.signature_verified
            else fresh_user(fresh, plan.fresh_claims, policy.user_claims)
        )
        clock_drift_ms = fresh.clock_drift_ms
    outcome = plan.outcome
    if outcome is Outcome.REJECTED and policy.on_rejected is not OnRejected.PASS:
        # The session is over; the answer carries the expired auth cookies.
        return SessionCheck(False, user, reason=CheckReason.REJECTED, set_cookies=set_cookies)
    if access is INVALID:
        return SessionCheck(authenticated=False, user=user, reason=CheckReason.INVALID_TOKEN)
    expires_at = access.expires_at
    # Expired as the plan judges it: on the server's clock.
    expired = expires_at is not None and time_left(expires_at, now_s, clock_drift_ms) <= 0
    if outcome is Outcome.FAILED or outcome is Outcome.LIMITED:
        if session.access_token is None and session.id_token is None:
            # Nothing but a refresh token, which nobody has vouched for: anybody can make one
            # up, so the session proved nothing and is not reported signed in.
            return SessionCheck(False, user, expires_at, reason=CheckReason.UNPROVEN)
        # The IdP could not answer, or a budget held the call back: the session is not over,
        # it will be refreshed on a later request.
        reason = CheckReason.LIMITED if outcome is Outcome.LIMITED else CheckReason.REFRESH_UNAVAILABLE
        return SessionCheck(True, user, expires_at, reason=reason)
    if outcome is Outcome.REJECTED:  # on_rejected: pass; the token lives until it expires
        return SessionCheck(not expired, user, expires_at, reason=CheckReason.REJECTED)
    if expired or access is ABSENT:
        return SessionCheck(False, user, expires_at, reason=CheckReason.EXPIRED)
    refreshed = bool(set_cookies)
    return SessionCheck(
        True,
        user,
        expires_at,
        refreshed=refreshed,
        reason=CheckReason.REFRESHED if refreshed else CheckReason.OK,
        set_cookies=set_cookies,
    )


def _fresh_access(plan: Forward) -> AccessState:
    claims = plan.fresh_claims
    if claims is not None:
        return AccessState("ok", claims.iat, claims.exp)
    if plan.opaque_lifetime is not None:
        return AccessState("ok", plan.opaque_lifetime.issued_at, plan.opaque_lifetime.expires_at)
    return OPAQUE_UNSEEN
