"""`cookieguard explain`: what the proxy sees in a `Cookie` header, and what it would do.

Offline and pure: no IdP call, no JWKS fetch, no signature check. Claims are read from the
tokens' payloads and checked against the configuration (issuer, client, token use), so the verdict
is the proxy's own (cookieguard.session.plan, the same refresh window) except for the signature.

It never prints a token or a cookie value: only cookie names, lengths and a few claims (`sub`,
the user the provider's `user_claims` name, `client_id`, `token_use`, `iss`, `iat`, `exp`), and
the session id (the first 12 hex digits of sha256 of the refresh token, as in the logs).
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass
from datetime import datetime, tzinfo

from cookieguard.config import Config
from cookieguard.cookies import parse_cookie_header
from cookieguard.session.layouts import LAYOUTS, Session
from cookieguard.session.plan import (
    Check,
    Due,
    Forward,
    Plan,
    Policy,
    Proof,
    Refresh,
    Verdicts,
    judge_access,
    plan_session,
    prove,
    time_left,
)
from cookieguard.tokens.claims import (
    Claims,
    TokenCheck,
    TokenKind,
    TokenStatus,
    check_claims,
    decode_claims,
    expectations_for,
    session_id,
)
from cookieguard.tokens.providers import user_claims_of
from cookieguard.vocabulary import DueReason, ForwardReason

_HEADER_PREFIX = re.compile(r"^\s*cookie\s*:\s*", re.IGNORECASE)


def cookie_header_from(text: str) -> str:
    """The header value from what a person pastes: with or without `Cookie:`, wrapped or not."""
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    joined = " ".join(lines)
    header = _HEADER_PREFIX.sub("", joined)
    # Wrapped lines split at `; ` join back with a space; a double `;` would only add empty pieces.
    return header.strip()


@dataclass(frozen=True)
class Verdict:
    action: str  # forward | refresh | no session
    why: str


def explain(
    header: str,
    config: Config,
    *,
    now_s: float,
    tz: tzinfo | None = None,
    client_id: str | None = None,
) -> list[str]:
    """The lines `cookieguard explain` prints for one Cookie header."""
    cookies = parse_cookie_header(header)
    out = ["cookieguard explain: offline (no IdP call, no signature check; claims are read, not verified)"]
    if client_id is None and config.provider is not None and config.provider.uses_client:
        client_id = config.provider.client_id
    # The layout may find what the configuration does not say in the cookie names (a client id).
    offline = LAYOUTS[config.cookies.layout].offline(config.cookies, config.provider, cookies, client_id)
    out += offline.notes
    if offline.ambiguous:
        return out
    before_expiry = _relative(config.refresh.before_expiry_s)
    out.append(f"config: {config.source}  layout: {config.cookies.layout}  before_expiry: {before_expiry}")
    out.append(f"cookies in the header: {len(cookies)}")
    layout = offline.layout
    if layout is None:
        out += _verdict_lines(Verdict("forward", offline.no_session))
        return out
    session = layout.read(cookies)
    if session is None:
        out.append("user: none")
        out += _verdict_lines(Verdict("forward", "no session: none of this app's auth cookies are present"))
        return out

    out.append(f"user: {session.user}" if session.user else "user: (not stored in cookies by this layout)")
    out.append("auth cookies:")
    values = dict(cookies)
    for name in sorted(session.cookie_names):
        size = len(values.get(name, ""))
        out.append(f"  {name}  ({size} char{'' if size == 1 else 's'})")
    out += layout.describe(session, lambda epoch_s, what: _when(epoch_s, now_s, tz, what))
    if session.clock_drift_ms:
        out.append(f"clock drift (server - browser): {session.clock_drift_ms} ms")

    user_claims = user_claims_of(config.provider)
    access = decode_claims(session.access_token, user_claims) if session.access_token else None
    out += _token_lines("access token", session.access_token, access, now_s, tz)
    id_claims = decode_claims(session.id_token or "", user_claims)
    out += _token_lines("id token", session.id_token, id_claims, now_s, tz)
    if session.refresh_token:
        out.append(
            f"refresh token: {len(session.refresh_token)} chars, session {session_id(session.refresh_token)}"
        )
    else:
        out.append("refresh token: absent")
    policy = dataclasses.replace(Policy.from_config(config, layout), keep_due=True)
    verdicts = _offline_verdicts(session, config, now_s)
    plan = plan_session(session, verdicts, now_s, policy)
    assert not isinstance(plan, Check), "every token's verdict is given"
    out += _verdict_lines(_decide(plan, session, verdicts, now_s))
    out.append(_proof_line(session, verdicts, policy, config))
    if config.provider is not None and config.verify.signature:
        out.append("note: the proxy also verifies the signature against the IdP's keys (not done here)")
    return out


def offline_verdict(token: str, kind: TokenKind, config: Config, now_s: float) -> TokenCheck:
    """What explain can say about a token without the IdP's keys: its claims as read, checked
    against the configuration; UNKNOWN (the signature is not checked) when nothing is wrong."""
    claims = decode_claims(token)
    provider = config.provider
    if claims is None:
        if kind == "access" and provider is not None and provider.opaque_access_tokens:
            return TokenCheck(TokenStatus.OPAQUE, reason="opaque")
        return TokenCheck(TokenStatus.INVALID, reason="not_a_jwt")
    if provider is not None and config.verify.signature:
        problem = check_claims(claims, expectations_for(provider, config.verify, kind), now_s)
        if problem is not None and problem != "not_yet_valid":
            return TokenCheck(TokenStatus.INVALID, reason=problem)
    return TokenCheck(TokenStatus.UNKNOWN, claims, "not_checked")


def _offline_verdicts(session: Session, config: Config, now_s: float) -> Verdicts:
    """The verdicts explain can give: claims read, not verified; an opaque access token counts
    as never seen issued (its lifetime is known only to the proxy that received it)."""
    access, id_token = session.access_token, session.id_token
    return Verdicts(
        access=offline_verdict(access, "access", config, now_s) if access else None,
        id=offline_verdict(id_token, "id", config, now_s) if id_token else None,
    )


def _decide(plan: Plan, session: Session, verdicts: Verdicts, now_s: float) -> Verdict:
    """The proxy's own plan (cookieguard.session.plan) put in words: what it decided and the due
    window it carries; nothing is judged here."""
    if isinstance(plan, Refresh):
        return Verdict("refresh", _due_text(plan.due))
    assert isinstance(plan, Forward)
    match plan.reason:
        case ForwardReason.FRESH:
            assert plan.due is not None
            return Verdict("forward", _due_text(plan.due))
        case ForwardReason.NO_REFRESH_TOKEN:
            access = judge_access(session, verdicts)
            exp = None if isinstance(access, Check) else access.expires_at
            if exp is not None and time_left(exp, now_s, session.clock_drift_ms) <= 0:
                return Verdict(
                    "forward", "no refresh token, and the access token has expired: the user must sign in"
                )
            return Verdict("forward", "no refresh token: cookieguard cannot refresh this session")
        case ForwardReason.OPAQUE_UNSEEN:
            return Verdict(
                "forward",
                "the access token is not a JWT (opaque): its expiry is known only from a token response "
                "cookieguard saw itself, so it refreshes it only when that lifetime runs out",
            )
        case ForwardReason.INVALID_TOKEN:
            problem = verdicts.access.reason if verdicts.access is not None else "invalid"
            if problem == "not_a_jwt":
                return Verdict(
                    "forward",
                    "the access token is not a JWT: treated as no session (never refreshed, passed through)",
                )
            return Verdict(
                "forward", f"the access token fails the claim checks ({problem}): treated as no session"
            )
    return Verdict("forward", f"no session ({plan.reason})")


def _due_text(when: Due) -> str:
    """The plan's due window in words."""
    if when.reason is DueReason.ABSENT:
        return "no access token, but a refresh token: cookieguard refreshes"
    if when.reason is DueReason.NO_EXP or when.left_s is None or when.window_s is None:
        return "the access token has no exp claim: cookieguard refreshes"
    left, window = when.left_s, when.window_s
    window_text = f"the {_relative(window)} refresh window" + (
        " (half the token's lifetime)" if when.capped else " (refresh.before_expiry)"
    )
    if when.reason is DueReason.EXPIRED:
        return f"the access token expired {_relative(-left)} ago"
    if when.reason is DueReason.DUE:
        return f"the access token expires in {_relative(left)}, within {window_text}"
    return (
        f"the access token is fresh: it expires in {_relative(left)}, outside {window_text}; "
        f"refresh due in {_relative(left - window)}"
    )


def _proof_line(session: Session, verdicts: Verdicts, policy: Policy, config: Config) -> str:
    """Whether the proxy would count the session as proven (docs/security.md "Abuse limits"): proven
    sessions are budgeted per subject, unproven ones per client address and in all. The plan's
    own rule, on the offline verdicts; a signature cannot be checked here, so the best answer
    for well-formed tokens is "unknown"."""
    if config.provider is None:
        return "proven: no (no provider configured: nothing is refreshed)"
    proof = prove(session, verdicts, policy, assume_signed=True)
    assert isinstance(proof, Proof), "every token's verdict is given"
    if proof.reason == "not_verified":
        return "proven: no (verify.signature is false: every refresh is budgeted as unproven)"
    if proof.proven and proof.kind is None:
        # The layout vouches for it: a cookie sealed with the app's secret (docs/providers/authjs.md).
        return f"proven: yes (the session cookie decrypts with the app's secret; subject {proof.subject})"
    if proof.proven:
        return (
            f"proven: unknown (the {proof.kind} token names this client and subject {proof.subject}; "
            "the proxy proves it with a signature check against the IdP's keys, not done here)"
        )
    if proof.reason == "no_token":
        return "proven: no (no access or id token beside the refresh token: budgeted per address)"
    return f"proven: no ({proof.kind} token: {proof.reason}: budgeted per address)"


def _verdict_lines(verdict: Verdict) -> list[str]:
    return [f"verdict: {verdict.action.upper()}: {verdict.why}"]


def _token_lines(
    label: str, token: str | None, claims: Claims | None, now_s: float, tz: tzinfo | None
) -> list[str]:
    if not token:
        return [f"{label}: absent"]
    if claims is None:
        return [f"{label}: {len(token)} chars, not a JWT (no claims to read)"]
    fields = [
        f"{key}={value}"
        for key, value in (
            ("sub", claims.sub),
            ("user", claims.user),
            ("client_id", claims.client_id),
            ("aud", ",".join(claims.aud) or None),
            ("token_use", claims.token_use),
            ("iss", claims.iss),
        )
        if value
    ]
    lines = [f"{label}: JWT, {len(token)} chars" + (f", {' '.join(fields)}" if fields else "")]
    if claims.iat is not None:
        lines.append(f"  issued   {_when(claims.iat, now_s, tz, 'issued')}")
    if claims.exp is not None:
        lines.append(f"  expires  {_when(claims.exp, now_s, tz, 'expires')}")
    else:
        lines.append("  expires  never (no exp claim)")
    return lines


def _when(epoch_s: float, now_s: float, tz: tzinfo | None, what: str) -> str:
    """`2026-11-25 13:00:00 CET (expires in 4 min)`, or `(expired 2 h ago)`, in local time."""
    local = datetime.fromtimestamp(epoch_s, tz=tz) if tz else datetime.fromtimestamp(epoch_s).astimezone()
    stamp = local.strftime("%Y-%m-%d %H:%M:%S %Z").strip()
    delta = epoch_s - now_s
    if delta > 0:
        relative = f"{what} in {_relative(delta)}"
    else:
        relative = f"{'expired' if what == 'expires' else what} {_relative(-delta)} ago"
    return f"{stamp} ({relative})"


def _relative(seconds: float) -> str:
    """A human duration: 45 s, 4 min, 2 h 5 min, 3 d 4 h."""
    s = round(seconds)
    if s < 60:
        return f"{s} s"
    if s < 3600:
        return f"{s // 60} min"
    if s < 86400:
        h, m = divmod(s // 60, 60)
        return f"{h} h {m} min" if m else f"{h} h"
    d, h = divmod(s // 3600, 24)
    return f"{d} d {h} h" if h else f"{d} d"
