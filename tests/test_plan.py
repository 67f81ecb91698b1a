"""cookieguard.session.plan as a playbook: events in (the session as read, verdicts, the clock, the
refresh result), plans out, in order. No socket, no sleep, no IdP: the plan is pure.

After mitmproxy's test/mitmproxy/proxy/tutils.py `Playbook`: `>>` feeds an event, `<<` names
the plan expected next; the playbook replays the whole exchange when asserted.
"""

from __future__ import annotations

import base64
import dataclasses
import itertools
import json
import subprocess
import sys
import textwrap
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pytest

from cookieguard.config import CookieAttributes
from cookieguard.cookies import parse_cookie_header
from cookieguard.session.layouts import AmplifyLayout, Layout, NamedLayout, Session, SupabaseLayout
from cookieguard.session.layouts.named import CookieNames
from cookieguard.session.layouts.supabase import session_cookies
from cookieguard.session.plan import (
    Answer,
    Check,
    Due,
    Forward,
    Lifetime,
    Plan,
    Policy,
    Proof,
    Refresh,
    SessionCheck,
    Verdicts,
    plan_session,
    refreshed_user,
    session_check,
)
from cookieguard.session.result import RefreshResult
from cookieguard.tokens.claims import TokenCheck, TokenKind, TokenStatus, decode_claims
from cookieguard.tokens.providers.base import TokenSet
from cookieguard.tokens.providers.cognito import CognitoConfig
from cookieguard.tokens.providers.oidc import OidcConfig
from cookieguard.tokens.providers.supabase import SupabaseConfig
from cookieguard.vocabulary import DueReason, ForwardReason, OnRejected, Outcome
from tests.support.apps import amplify_cookies
from tests.support.proxy_process import ROOT

REFRESHED, JOINED, REUSED = Outcome.REFRESHED, Outcome.JOINED, Outcome.REUSED
REJECTED, FAILED, LIMITED = Outcome.REJECTED, Outcome.FAILED, Outcome.LIMITED

NOW = 1_800_000_000.0
CID = "3n4b5urk1ft4fl3mg5e62d9ado"
USER = "jane@example.com"
SUB = "0f1e-sub"
# The tokens here are Cognito's: its claims name the user, whatever the layout.
USER_CLAIMS = CognitoConfig.user_claims
REFRESH_TOKEN = "opaque-refresh-" + "r" * 40
SB_KEY = "sb-abcdefghijklmnop-auth-token"
LOGIN = "/login?next=here"
SSR_ATTRS = CookieAttributes(secure=False, max_age_s=34560000)


def jwt(**claims: Any) -> str:
    def part(data: dict[str, Any]) -> str:
        return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()

    return f"{part({'alg': 'RS256', 'kid': 'k1'})}.{part(claims)}.c2lnbmF0dXJl"


def access_token(exp: float, iat: float | None = None, *, sub: str = SUB, username: str = USER) -> str:
    issued = iat if iat is not None else exp - 3600
    return jwt(sub=sub, username=username, client_id=CID, token_use="access", exp=exp, iat=issued)


def id_token(exp: float = NOW + 3600, *, sub: str = SUB) -> str:
    return jwt(sub=sub, **{"cognito:username": USER}, aud=CID, token_use="id", exp=exp, iat=exp - 3600)


# ---------------------------------------------------------------------------------------------
# Sessions as each layout reads them
# ---------------------------------------------------------------------------------------------


def amplify(
    access: str | None, id_: str | None = None, refresh: str | None = REFRESH_TOKEN
) -> tuple[Layout, str]:
    cookies = amplify_cookies(CID, USER, access_token=access, id_token=id_, refresh_token=refresh)
    return AmplifyLayout(CID), "; ".join(f"{k}={v}" for k, v in cookies.items())


def named(
    access: str | None, id_: str | None = None, refresh: str | None = REFRESH_TOKEN
) -> tuple[Layout, str]:
    layout = NamedLayout(CookieNames(id_token="id_token"))
    pairs = [("_ga", "GA1.1.1"), ("access_token", access), ("id_token", id_), ("refresh_token", refresh)]
    return layout, "; ".join(f"{k}={v}" for k, v in pairs if v is not None)


def supabase(
    access: str | None, id_: str | None = None, refresh: str | None = REFRESH_TOKEN
) -> tuple[Layout, str]:
    payload: dict[str, Any] = {"token_type": "bearer", "user": {"id": SUB, "email": USER}}
    if access is not None:
        payload["access_token"] = access
        claims = decode_claims(access)
        if claims is not None and claims.exp is not None:
            payload["expires_at"] = int(claims.exp)
    if refresh is not None:
        payload["refresh_token"] = refresh
    written = session_cookies(SB_KEY, payload, [], SSR_ATTRS)
    return SupabaseLayout(SB_KEY), "; ".join(["_ga=GA1.1.1", *(f"{c.name}={c.value}" for c in written)])


LAYOUTS: dict[str, Callable[..., tuple[Layout, str]]] = {
    "amplify": amplify,
    "named": named,
    "supabase": supabase,
}


def valid(token: str) -> TokenCheck:
    return TokenCheck(TokenStatus.VALID, decode_claims(token, USER_CLAIMS), "ok")


def unknown(token: str) -> TokenCheck:
    return TokenCheck(TokenStatus.UNKNOWN, decode_claims(token, USER_CLAIMS), "jwks_unavailable")


INVALID = TokenCheck(TokenStatus.INVALID, reason="bad_signature")
OPAQUE = TokenCheck(TokenStatus.OPAQUE, reason="opaque")


def policy(layout: Layout, on_rejected: str = "clear", *, signature: bool = True) -> Policy:
    attrs = SSR_ATTRS if isinstance(layout, SupabaseLayout) else CookieAttributes()
    return Policy(
        layout=layout,
        before_expiry_s=300,
        on_rejected=OnRejected(on_rejected),
        login_url=LOGIN,
        attributes=attrs,
        signature_verified=signature,
        user_claims=USER_CLAIMS,
    )


# ---------------------------------------------------------------------------------------------
# The playbook
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Verdict:
    """Event: the caller gathered the verdict a `Check` asked for."""

    kind: TokenKind
    check: TokenCheck
    opaque_lifetime: Lifetime | None = None


@dataclass(frozen=True)
class Result:
    """Event: the planned refresh is done."""

    result: RefreshResult
    is_navigation: bool = False


@dataclass(frozen=True)
class Like:
    """An expected plan: its type, the fields named, and any further checks."""

    kind: type
    checks: tuple[Callable[[Any], bool], ...] = ()
    fields: dict[str, Any] = field(default_factory=dict)

    def matches(self, plan: Plan) -> bool:
        return (
            type(plan) is self.kind
            and all(getattr(plan, k) == v for k, v in self.fields.items())
            and all(check(plan) for check in self.checks)
        )


def like(plan_type: type, /, *checks: Callable[[Any], bool], **fields: Any) -> Like:
    return Like(plan_type, checks, fields)


class Playbook:
    """Feeds a session to the plan: `>> event` answers the last plan, `<< expected` is the next one."""

    def __init__(
        self, layout: Layout, header: str, pol: Policy, *, now: float = NOW, verdicts: Verdicts | None = None
    ) -> None:
        self.layout, self.header, self.policy, self.now = layout, header, pol, now
        self.session: Session | None = layout.read(parse_cookie_header(header))
        self.given = self.verdicts = verdicts or Verdicts()
        self.steps: list[Verdict | Result | Like] = []
        self.plans: list[Plan] = []

    def __rshift__(self, event: Verdict | Result) -> Playbook:
        self.steps.append(event)
        return self

    def __lshift__(self, expected: Like) -> Playbook:
        self.steps.append(expected)
        return self

    def __bool__(self) -> bool:
        result: Result | None = None
        self.verdicts, self.plans = self.given, []
        for step in self.steps:
            if isinstance(step, Verdict):
                self.verdicts = self.verdicts.with_verdict(step.kind, step.check, step.opaque_lifetime)
                continue
            if isinstance(step, Result):
                result = step
                continue
            plan = plan_session(
                self.session,
                self.verdicts,
                self.now,
                self.policy,
                cookie_header=self.header,
                result=result.result if result else None,
                is_navigation=result.is_navigation if result else False,
            )
            self.plans.append(plan)
            if not step.matches(plan):
                raise AssertionError(f"step {len(self.plans)}: expected {step}, planned {plan}")
        return True

    def report(self) -> SessionCheck:
        last = self.plans[-1]
        assert isinstance(last, Forward | Answer)
        report = session_check(self.session, self.verdicts, last, self.now, self.policy)
        assert isinstance(report, SessionCheck), f"the report asks for {report}"
        return report


def playbook(
    layout_name: str,
    access: str | None,
    *,
    id_: str | None = None,
    refresh: str | None = REFRESH_TOKEN,
    on_rejected: str = "clear",
    signature: bool = True,
    now: float = NOW,
) -> Playbook:
    layout, header = LAYOUTS[layout_name](access, id_, refresh)
    return Playbook(layout, header, policy(layout, on_rejected, signature=signature), now=now)


def carries(token: str) -> Callable[[Forward], bool]:
    """The outgoing Cookie header and the Set-Cookies hold this token (as the layout writes it)."""

    def check(plan: Forward) -> bool:
        assert plan.cookie_header is not None
        layout_session = _reread(plan.cookie_header)
        return layout_session is not None and layout_session.access_token == token and bool(plan.set_cookies)

    return check


_READERS: list[Layout] = [
    AmplifyLayout(CID),
    NamedLayout(CookieNames(id_token="id_token")),
    SupabaseLayout(SB_KEY),
]


def _reread(header: str) -> Session | None:
    for layout in _READERS:
        session = layout.read(parse_cookie_header(header))
        if session is not None:
            return session
    return None


def keeps_other_cookies(plan: Forward) -> bool:
    return plan.cookie_header is not None and "_ga=GA1.1." in plan.cookie_header


def without_auth_cookies(plan: Forward) -> bool:
    return plan.cookie_header is not None and _reread(plan.cookie_header) is None


def expires_every_auth_cookie(session: Session) -> Callable[[Forward | Answer], bool]:
    def check(plan: Forward | Answer) -> bool:
        return {c.name for c in plan.set_cookies} == set(session.cookie_names) and all(
            c.max_age_s == 0 and c.value == "" for c in plan.set_cookies
        )

    return check


def untouched(plan: Forward) -> bool:
    return plan.cookie_header is None and plan.set_cookies == ()


# ---------------------------------------------------------------------------------------------
# The matrix: on_rejected x outcome x layout (x navigation)
# ---------------------------------------------------------------------------------------------

FRESH_ACCESS = access_token(NOW + 3600, NOW)
WITH_TOKENS = {REFRESHED, JOINED, REUSED}
OUTCOMES = list(Outcome)
# `flag` only with a layout that carries it out (the authjs layout: tests/test_session_repair_authjs.py).
POLICIES = [policy for policy in OnRejected if policy is not OnRejected.FLAG]
MATRIX = list(itertools.product(POLICIES, OUTCOMES, sorted(LAYOUTS), [True, False]))


def result_for(outcome: str) -> RefreshResult:
    if outcome in WITH_TOKENS:
        return RefreshResult(
            outcome, TokenSet(FRESH_ACCESS, refresh_token="rotated-" + "x" * 40, expires_in_s=3600)
        )
    if outcome == REJECTED:
        return RefreshResult(outcome, error="NotAuthorizedException", idp_status=400)
    if outcome == LIMITED:
        return RefreshResult(outcome, error="unproven_per_address")
    return RefreshResult(outcome, error="timeout")


@pytest.mark.parametrize(("on_rejected", "outcome", "layout", "navigation"), MATRIX)
def test_matrix(on_rejected: str, outcome: str, layout: str, navigation: bool) -> None:
    expired = access_token(NOW - 60)
    book = playbook(layout, expired, on_rejected=on_rejected)
    session = book.session
    assert session is not None
    book << like(Check, kind="access") >> Verdict("access", valid(expired))
    book << like(Refresh, refresh_token=REFRESH_TOKEN, reason="expired", old_expires_at=NOW - 60)
    book >> Result(result_for(outcome), is_navigation=navigation)
    if outcome in WITH_TOKENS:
        book << like(Forward, carries(FRESH_ACCESS), keeps_other_cookies, reason=outcome, outcome=outcome)
    elif outcome != REJECTED or on_rejected == "pass":
        book << like(Forward, untouched, reason=outcome, outcome=outcome)
    elif on_rejected == "clear":
        book << like(
            Forward,
            without_auth_cookies,
            keeps_other_cookies,
            expires_every_auth_cookie(session),
            outcome=REJECTED,
        )
    elif navigation:
        book << like(Answer, expires_every_auth_cookie(session), status=302, location=LOGIN, outcome=REJECTED)
    else:
        book << like(Answer, expires_every_auth_cookie(session), status=401, location=None, outcome=REJECTED)
    assert book

    report = book.report()
    expected = {
        REFRESHED: (True, "refreshed"),
        JOINED: (True, "refreshed"),
        REUSED: (True, "refreshed"),
        FAILED: (True, "refresh_unavailable"),
        LIMITED: (True, "limited"),
        REJECTED: (False, "rejected"),
    }[outcome]
    assert (report.authenticated, report.reason) == expected
    assert report.user == USER
    if outcome in WITH_TOKENS:
        assert report.refreshed and report.expires_at == NOW + 3600
    elif outcome == REJECTED and on_rejected != "pass":
        assert len(report.set_cookies) == len(session.cookie_names) and report.expires_at is None
    else:
        assert report.set_cookies == [] and report.expires_at == NOW - 60


def test_matrix_size() -> None:
    assert len(MATRIX) == 108


# ---------------------------------------------------------------------------------------------
# Before the refresh: when, and charged to whom
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("layout", sorted(LAYOUTS))
def test_fresh_session_is_forwarded_unchanged(layout: str) -> None:
    token = access_token(NOW + 3000, NOW - 600)
    book = playbook(layout, token)
    assert (
        book
        << like(Check, kind="access")
        >> Verdict("access", valid(token))
        << like(Forward, untouched, reason="fresh")
    )
    report = book.report()
    assert (report.authenticated, report.reason, report.expires_at, report.user) == (
        True,
        "ok",
        NOW + 3000,
        USER,
    )


def test_window_is_half_a_short_lifetime() -> None:
    # A 5-minute token with before_expiry 5m: due only in its last 150 s, not on every request.
    token = access_token(NOW + 200, NOW - 100)
    assert playbook("named", token) >> Verdict("access", valid(token)) << like(Forward, reason="fresh")
    token = access_token(NOW + 100, NOW - 200)
    assert playbook("named", token) >> Verdict("access", valid(token)) << like(Refresh, reason="due")


@pytest.mark.parametrize(
    ("drift_ms", "expected"), [(0, Forward), (3_000_000, Refresh), (-10_000_000, Forward)]
)
def test_the_apps_own_clock_drift(drift_ms: int, expected: type) -> None:
    """Amplify's clockDrift (server - browser): expiry is judged on the server's clock."""
    token = access_token(NOW + 3000, NOW - 600)
    cookies = amplify_cookies(CID, USER, access_token=token, id_token=None, refresh_token=REFRESH_TOKEN)
    cookies[AmplifyLayout(CID).cookie_name(USER, "clockDrift")] = str(drift_ms)
    layout = AmplifyLayout(CID)
    book = Playbook(layout, "; ".join(f"{k}={v}" for k, v in cookies.items()), policy(layout))
    assert book.session is not None and book.session.clock_drift_ms == drift_ms
    assert book >> Verdict("access", valid(token)) << like(expected)


def test_fresh_tokens_carry_the_new_drift() -> None:
    book = playbook("amplify", access_token(NOW - 1))
    fresh = access_token(NOW + 3600 + 42, NOW + 42)  # the IdP's clock is 42 s ahead
    book >> Verdict("access", valid(access_token(NOW - 1))) << like(Refresh)
    assert (
        book
        >> Result(RefreshResult(REFRESHED, TokenSet(fresh)))
        << like(Forward, lambda plan: plan.fresh.clock_drift_ms == 42_000)
    )


@pytest.mark.parametrize("layout", sorted(LAYOUTS))
def test_absent_access_token_is_refreshed(layout: str) -> None:
    book = playbook(layout, None, id_=id_token() if layout != "supabase" else None)
    if layout == "supabase":  # no id token: nothing proves the session
        book << like(Refresh, reason="absent", proof=Proof(reason="no_token"))
    else:
        book << like(Check, kind="id") >> Verdict("id", valid(id_token()))
        book << like(Refresh, reason="absent", proof=Proof(SUB, USER))
    assert book
    assert book >> Result(result_for(FAILED)) << like(Forward, untouched)
    report = book.report()
    if layout == "supabase":  # nothing but a refresh token, and no refresh: it proved nothing
        assert (report.authenticated, report.reason) == (False, "unproven")
    else:
        assert (report.authenticated, report.reason) == (True, "refresh_unavailable")


@pytest.mark.parametrize("layout", sorted(LAYOUTS))
def test_invalid_token_is_no_session(layout: str) -> None:
    book = playbook(layout, access_token(NOW - 60))
    assert book >> Verdict("access", INVALID) << like(Forward, untouched, reason="invalid_token")
    report = book.report()
    assert (report.authenticated, report.reason, report.user) == (False, "invalid_token", None)


def test_no_session_and_no_refresh_token() -> None:
    layout = NamedLayout(CookieNames())
    book = Playbook(layout, "_ga=1; theme=dark", policy(layout))
    assert book << like(Forward, reason="no_session")
    assert book.report() == SessionCheck(False, reason="no_session")
    expired = access_token(NOW - 60)
    book = playbook("named", expired, refresh=None)
    assert book << like(Forward, untouched, reason="no_refresh_token")  # no verdict needed to say so
    book.given = book.verdicts = Verdicts(access=valid(expired))
    report = book.report()
    assert (report.authenticated, report.reason, report.expires_at) == (False, "expired", NOW - 60)


@pytest.mark.parametrize("layout", sorted(LAYOUTS))
def test_proven_by_the_access_token(layout: str) -> None:
    token = access_token(NOW - 60)
    book = playbook(layout, token, id_=id_token() if layout != "supabase" else None)
    assert book.session is not None
    # The refresh context is what the layout read for the provider: Cognito's username (the
    # cookies' LastAuthUser, for SECRET_HASH) with the amplify layout, nothing with the others.
    context = {"username": book.session.user} if layout == "amplify" else {}
    expected = like(Refresh, proof=Proof(SUB, USER), context=context)
    assert book >> Verdict("access", valid(token)) << expected


def test_proven_by_the_id_token_when_the_access_token_cannot_be() -> None:
    token = access_token(NOW - 60)
    book = playbook("amplify", token, id_=id_token())
    book >> Verdict("access", unknown(token)) << like(Check, kind="id")
    assert book >> Verdict("id", valid(id_token())) << like(Refresh, proof=Proof(SUB, USER))


def test_unproven_when_nothing_verifies() -> None:
    token = access_token(NOW - 60)
    book = playbook("amplify", token, id_=id_token())
    book >> Verdict("access", unknown(token)) << like(Check, kind="id")
    assert book >> Verdict("id", INVALID) << like(Refresh, proof=Proof(reason="bad_signature"))
    # The report names no user: no token of the session verifies.
    book >> Result(result_for(FAILED)) << like(Forward)
    assert book and book.report().user is None


def test_unproven_without_signature_checks_reports_the_cookies_user() -> None:
    token = access_token(NOW - 60, sub="someone-else", username="mallory")
    book = playbook("amplify", token, id_=id_token(), signature=False)
    book >> Verdict("access", TokenCheck(TokenStatus.VALID, decode_claims(token, USER_CLAIMS), "unverified"))
    assert book << like(Refresh, proof=Proof(reason="not_verified"), context={"username": USER})
    book >> Result(result_for(FAILED)) << like(Forward)
    assert book and book.report().user == USER


def test_a_token_of_another_user_reports_the_tokens_user() -> None:
    token = access_token(NOW + 3000, NOW - 600, sub="s2", username="mallory")
    book = playbook("amplify", token)
    assert book >> Verdict("access", valid(token)) << like(Forward, reason="fresh")
    assert book.report().user == "mallory"


# ---------------------------------------------------------------------------------------------
# Opaque access tokens (docs/providers/oidc.md "Any OIDC provider")
# ---------------------------------------------------------------------------------------------

OPAQUE_ACCESS = "opaque-access-" + "a" * 30


def test_opaque_token_never_seen_issued_is_left_alone() -> None:
    book = playbook("named", OPAQUE_ACCESS)
    assert book >> Verdict("access", OPAQUE) << like(Forward, untouched, reason="opaque_unseen")
    report = book.report()
    assert (report.authenticated, report.reason, report.expires_at) == (True, "ok", None)


@pytest.mark.parametrize(
    ("expires_at", "expected"), [(NOW + 3000, "fresh"), (NOW + 100, "due"), (NOW - 1, "expired")]
)
def test_opaque_token_seen_issued_has_its_expires_in(expires_at: float, expected: str) -> None:
    book = playbook("named", OPAQUE_ACCESS)
    book >> Verdict("access", OPAQUE, Lifetime(expires_at - 3600, expires_at))
    if expected == "fresh":
        assert book << like(Forward, reason="fresh")
    else:
        assert book << like(Refresh, reason=expected, old_expires_at=expires_at)


def test_fresh_opaque_token_lifetime_is_remembered() -> None:
    book = playbook("named", OPAQUE_ACCESS)
    book >> Verdict("access", OPAQUE, Lifetime(NOW - 3600, NOW - 1)) << like(Refresh)
    fresh = RefreshResult(REFRESHED, TokenSet("opaque-fresh-" + "f" * 30, expires_in_s=600))
    assert book >> Result(fresh) << like(Forward, opaque_lifetime=Lifetime(NOW, NOW + 600), reason=REFRESHED)
    report = book.report()
    assert (report.reason, report.expires_at) == ("refreshed", NOW + 600)


@pytest.mark.parametrize(
    ("user_claims", "user"),
    [(OidcConfig.user_claims, "bob"), (SupabaseConfig.user_claims, "bob@example.test"), ((), "u-7")],
    ids=["oidc", "supabase", "none"],
)
def test_the_fresh_tokens_name_the_user_by_the_providers_claims(
    user_claims: tuple[str, ...], user: str
) -> None:
    """After a refresh the report and the log line name the user the IdP's fresh tokens name,
    read with the provider's claims (`Policy.user_claims`): here an id token beside an opaque
    access token, with OIDC's claims, GoTrue's, and a Cognito-style `username` no one asked for."""
    book = playbook("named", OPAQUE_ACCESS)
    book.policy = dataclasses.replace(book.policy, user_claims=user_claims)
    book >> Verdict("access", OPAQUE, Lifetime(NOW - 3600, NOW - 1)) << like(Refresh)
    claims = {"preferred_username": "bob", "email": "bob@example.test", "username": "mallory"}
    fresh_id = jwt(sub="u-7", aud=CID, exp=NOW + 3600, iat=NOW, **claims)
    fresh = RefreshResult(
        REFRESHED, TokenSet("opaque-fresh-" + "f" * 30, id_token=fresh_id, expires_in_s=600)
    )
    assert book >> Result(fresh) << like(Forward, reason=REFRESHED)
    assert book.report().user == user
    refresh, forward = book.plans
    assert isinstance(refresh, Refresh) and refresh.proof.user is None and book.session is not None
    assert refreshed_user(refresh.proof, book.session, forward, user_claims) == user


def test_verdicts_given_up_front_need_no_check() -> None:
    token = access_token(NOW - 60)
    book = playbook("amplify", token)
    book.given = Verdicts(access=valid(token))
    assert book << like(Refresh)


def test_report_asks_for_the_id_verdict_only_when_the_access_token_proves_nothing() -> None:
    token = access_token(NOW + 3000, NOW - 600)
    book = playbook("amplify", token, id_=id_token())
    assert book >> Verdict("access", valid(token)) << like(Forward, reason="fresh")
    assert book.report().user == USER  # no id verdict was needed
    book = playbook("amplify", token, id_=id_token())
    assert book >> Verdict("access", unknown(token)) << like(Forward, reason="fresh")
    plan = book.plans[-1]
    assert isinstance(plan, Forward)
    assert session_check(book.session, book.verdicts, plan, NOW, book.policy) == Check("id")


# ---------------------------------------------------------------------------------------------
# The plan is import-pure, and carries its due window as data
# ---------------------------------------------------------------------------------------------

# Modules that do I/O (network, the store, the refresher, the verifier) or set up logging.
IO_MODULES = (
    "aiohttp", "redis", "socket", "ssl", "asyncio", "structlog", "prometheus_client",
    "cryptography", "jwt", "cookieguard.session.refresh", "cookieguard.session.repair",
    "cookieguard.store", "cookieguard.tokens.verifier", "cookieguard.tokens.providers",
    "cookieguard.logs", "cookieguard.metrics",
)  # fmt: skip

_IMPORT_BLOCKED = """
import importlib.abc, sys
BLOCKED = {blocked!r}
class Refuse(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if any(name == b or name.startswith(b + ".") for b in BLOCKED):
            raise ImportError(f"blocked: {{name}}")
        return None
for name in [m for m in sys.modules if any(m == b or m.startswith(b + ".") for b in BLOCKED)]:
    del sys.modules[name]
sys.meta_path.insert(0, Refuse())
import {module}
print("imported", {module}.__name__)
"""


def import_blocked(module: str) -> subprocess.CompletedProcess[str]:
    code = _IMPORT_BLOCKED.format(blocked=IO_MODULES, module=module)
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)], cwd=ROOT, capture_output=True, text=True, timeout=60
    )


def test_the_plan_imports_nothing_that_does_io() -> None:
    """The plan, its result types and the vocabulary import with every I/O module refused; the
    refusal is real: session repair, the plan's shell, does not import under it."""
    for module in ("cookieguard.session.plan", "cookieguard.session.result", "cookieguard.vocabulary"):
        proc = import_blocked(module)
        assert proc.returncode == 0 and f"imported {module}" in proc.stdout, proc.stderr
    shell = import_blocked("cookieguard.session.repair")
    assert shell.returncode != 0 and "blocked: " in shell.stderr


def test_the_plan_carries_the_due_window_and_time_left() -> None:
    """What `cookieguard explain` and the log print is the plan's own data, not a recomputation;
    a fresh session's window only when asked (Policy.keep_due): the proxy never reads it."""
    fresh = access_token(NOW + 3000, NOW - 600)
    book = playbook("named", fresh)
    book.policy = dataclasses.replace(book.policy, keep_due=True)
    assert (
        book
        >> Verdict("access", valid(fresh))
        << like(Forward, reason=ForwardReason.FRESH, due=Due(DueReason.FRESH, left_s=3000, window_s=300))
    )
    short = access_token(NOW + 100, NOW - 200)  # a 5-minute token: the window is half of it
    assert (
        playbook("named", short)
        >> Verdict("access", valid(short))
        << like(Refresh, reason=DueReason.DUE, due=Due(DueReason.DUE, left_s=100, window_s=150, capped=True))
    )


def test_expired_means_the_same_to_the_plan_and_the_session_endpoint() -> None:
    """One definition of expired, on the server's clock: a token past its `exp` by our clock but
    not by the server's (Amplify's clockDrift) is fresh to the plan, and the session endpoint
    says so too (it said `expired` while the proxy forwarded it as fresh)."""
    token = access_token(NOW - 60, NOW - 3660)
    cookies = amplify_cookies(CID, USER, access_token=token, id_token=None, refresh_token=REFRESH_TOKEN)
    cookies[AmplifyLayout(CID).cookie_name(USER, "clockDrift")] = str(-3_600_000)
    layout = AmplifyLayout(CID)
    keep_due = dataclasses.replace(policy(layout), keep_due=True)
    book = Playbook(layout, "; ".join(f"{k}={v}" for k, v in cookies.items()), keep_due)
    behind = Due(DueReason.FRESH, left_s=3540, window_s=300)
    assert book >> Verdict("access", valid(token)) << like(Forward, reason="fresh", due=behind)
    report = book.report()
    assert (report.authenticated, report.reason, report.expires_at) == (True, "ok", NOW - 60)


@pytest.mark.parametrize("keep_due", [False, True])
@pytest.mark.parametrize("left_s", [-10, 100, 301, 3000])
def test_the_fresh_shortcut_decides_as_due_does(keep_due: bool, left_s: float) -> None:
    """Without keep_due a fresh session skips the Due record; the decision is the same."""
    token = access_token(NOW + left_s, NOW - 3600)
    book = playbook("named", token)
    book.policy = dataclasses.replace(book.policy, keep_due=keep_due)
    expected = (
        like(Forward, reason="fresh")
        if left_s > 300
        else like(Refresh, due=Due(DueReason.EXPIRED if left_s <= 0 else DueReason.DUE, left_s, 300))
    )
    assert book >> Verdict("access", valid(token)) << expected
    if left_s > 300:
        assert (book.plans[-1].due is not None) == keep_due  # type: ignore[union-attr]
