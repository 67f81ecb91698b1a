"""The vocabulary (cookieguard.vocabulary) is StrEnums so that nothing a user reads changes: a
member renders exactly as its string in a JSON or console log line, a metric label, the session
endpoint's JSON and a config value read back."""

from __future__ import annotations

import json
from enum import StrEnum

import pytest
import structlog

from cookieguard.edge.admin import session_report
from cookieguard.loader import parse_config
from cookieguard.logs import redact
from cookieguard.metrics import Metrics
from cookieguard.session.plan import SessionCheck
from cookieguard.vocabulary import CheckReason, DueReason, ForwardReason, OnRejected, Outcome

VOCABULARIES: list[type[StrEnum]] = [Outcome, ForwardReason, DueReason, OnRejected, CheckReason]
MEMBERS = [member for vocabulary in VOCABULARIES for member in vocabulary]


@pytest.mark.parametrize("member", MEMBERS, ids=str)
def test_a_member_renders_as_its_string_in_log_lines(member: StrEnum) -> None:
    renderers = [structlog.processors.JSONRenderer(), structlog.dev.ConsoleRenderer(colors=False)]
    for render in renderers:
        lines = [
            render(None, "info", redact(None, "info", {"event": "token_refresh", "outcome": value}))
            for value in (member, member.value)
        ]
        assert lines[0] == lines[1]
        assert type(member.value) is str and member.value in str(lines[0])


def test_outcome_labels_are_the_plain_strings() -> None:
    metrics = Metrics()
    metrics.refresh_total.labels(outcome=Outcome.LIMITED).inc()
    text = metrics.render().decode()
    assert 'cookieguard_refresh_total{outcome="limited"} 1.0' in text
    assert "Outcome" not in text


def test_the_session_report_serialises_the_plain_reason() -> None:
    check = SessionCheck(True, "jane", None, reason=CheckReason.REFRESH_UNAVAILABLE)
    assert json.dumps(session_report(check, 0)) == json.dumps(
        {
            "authenticated": True,
            "user": "jane",
            "expires_at": None,
            "expires_in": None,
            "refreshed": False,
            "reason": "refresh_unavailable",
        }
    )


def test_on_rejected_is_read_into_the_vocabulary() -> None:
    config = parse_config("upstream: http://127.0.0.1:9\nrefresh: {on_rejected: login}\n", env={})
    assert config.refresh.on_rejected is OnRejected.LOGIN


def test_forward_reasons_are_the_plan_reasons_and_every_outcome() -> None:
    """After a refresh a forwarded request's reason is its outcome, word for word."""
    assert {o.value for o in Outcome} <= {r.value for r in ForwardReason}
    assert {ForwardReason(outcome) for outcome in Outcome} == {r for r in ForwardReason if r in set(Outcome)}
