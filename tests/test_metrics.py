"""Metrics through `cookieguard run` against moto's Cognito: after known traffic the scraped
counters are exactly that traffic, and no label carries a user, a session or a token."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any
from urllib.parse import unquote

import aiohttp
from prometheus_client.parser import text_string_to_metric_families

from cookieguard.metrics import Metrics
from cookieguard.ops.demo.emulator import CognitoEmulator, PoolInfo
from cookieguard.tokens.claims import session_id
from tests.support.apps import amplify_cookies, seen_by, set_cookie_values, start_buggy_app
from tests.support.cognito_idp import CognitoUser
from tests.support.no_secrets import KnownSecrets, find_leaks
from tests.support.proxy_process import CookieguardProcess

Start = Callable[..., CookieguardProcess]
# ours; process/platform collectors add their own
LABELS = {"outcome", "route", "status", "le", "reason", "limit", "caught"}


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def value(scraped: dict[tuple[str, tuple[tuple[str, str], ...]], float], name: str, **labels: str) -> float:
    return scraped.get((name, tuple(sorted(labels.items()))), 0.0)


async def test_counters_equal_the_traffic_and_labels_carry_no_user_or_token(
    aiohttp_server: Any,
    cookieguard_process: Start,
    cognito_idp: CognitoEmulator,
    cognito_pool: PoolInfo,
    make_cognito_user: Callable[..., CognitoUser],
    known_secrets: KnownSecrets,
) -> None:
    cognito_idp.access_token_lifetime_s = -60  # expired: every request with these cookies is due
    users = [make_cognito_user(cognito_pool, f"metrics-{n}@example.com") for n in range(3)]
    cognito_idp.access_token_lifetime_s = 3600
    for user in users:
        known_secrets.add(user.access_token, user.id_token, user.refresh_token)
    cognito_idp.revoke(cognito_pool, users[2].refresh_token)  # the third session is dead

    app = await start_buggy_app(aiohttp_server)
    guard = cookieguard_process(
        {
            "upstream": str(app.make_url("")),
            "provider": {
                "kind": "cognito",
                "user_pool_id": cognito_pool.user_pool_id,
                "client_id": cognito_pool.client_id,
                "endpoint": cognito_pool.endpoint,
                "jwks_url": cognito_pool.jwks_url,
            },
            "routes": [{"match": "/static/", "refresh": False}, {"match": "/api/"}, {"match": "/"}],
        }
    )

    def cookie(user: CognitoUser) -> str:
        cookies = amplify_cookies(
            cognito_pool.client_id,
            user.username,
            access_token=user.access_token,
            id_token=user.id_token,
            refresh_token=user.refresh_token,
        )
        return "; ".join(f"{k}={v}" for k, v in cookies.items())

    async with aiohttp.ClientSession() as s:
        # 5 requests on /api/: 2 refreshes, 1 rejected, 2 without a session.
        for n, headers in enumerate(
            [{"Cookie": cookie(users[0])}, {"Cookie": cookie(users[1])}, {"Cookie": cookie(users[2])}, {}, {}]
        ):
            async with s.get(f"{guard.url}/api/item/{n}", headers=headers) as resp:
                assert resp.status == 200
                known_secrets.add(
                    *(
                        unquote(v)
                        for k, v in set_cookie_values(resp.headers.getall("Set-Cookie", [])).items()
                        if k.endswith("Token")
                    )
                )
        async with s.get(f"{guard.admin_url}/.cookieguard/metrics") as resp:
            assert resp.status == 200 and resp.headers["Content-Type"] == Metrics.content_type
            text = await resp.text()
    assert len(seen_by(app)) == 5 and cognito_idp.refresh_calls == 3

    scraped = samples(text)
    assert value(scraped, "cookieguard_refresh_total", outcome="refreshed") == 2
    assert value(scraped, "cookieguard_refresh_total", outcome="rejected") == 1
    for outcome in ("joined", "reused", "failed"):
        assert (("cookieguard_refresh_total", (("outcome", outcome),))) in scraped  # present, at zero
        assert value(scraped, "cookieguard_refresh_total", outcome=outcome) == 0
    requests = {k: v for k, v in scraped.items() if k[0] == "cookieguard_requests_total"}
    assert requests == {("cookieguard_requests_total", (("route", "/api/"), ("status", "200"))): 5}
    assert value(scraped, "cookieguard_refresh_duration_seconds_count") == 2  # IdP calls that refreshed
    assert value(scraped, "cookieguard_upstream_duration_seconds_count") == 5
    assert value(scraped, "cookieguard_upstream_duration_seconds_bucket", le="+Inf") == 5
    assert value(scraped, "cookieguard_idp_calls_in_flight") == 0
    assert value(scraped, "cookieguard_sessions_in_flight") == 0
    # Process metrics, from this process.
    assert value(scraped, "process_resident_memory_bytes") > 0
    assert ("process_cpu_seconds_total", ()) in scraped
    assert any(name == "python_info" for name, _ in scraped)

    # No label names a user, a session or a token; the whole exposition holds none of them.
    forbidden = {u.username for u in users} | {session_id(u.refresh_token) for u in users}
    for (name, labels), _ in scraped.items():
        if name.startswith("cookieguard_"):
            assert {k for k, _ in labels} <= LABELS, name
        for _, label_value in labels:
            assert label_value not in forbidden and len(label_value) < 64, (name, label_value)
    assert not any(f in text for f in forbidden)
    assert not find_leaks(text, known_secrets.values)


async def test_each_app_instance_has_its_own_registry() -> None:
    a, b = Metrics(), Metrics()
    a.refresh_total.labels(outcome="refreshed").inc()
    assert value(samples(b.render().decode()), "cookieguard_refresh_total", outcome="refreshed") == 0
    assert value(samples(a.render().decode()), "cookieguard_refresh_total", outcome="refreshed") == 1


def test_idp_calls_in_flight_and_its_deprecated_alias_move_together() -> None:
    metrics = Metrics()
    metrics.idp_call(True)
    metrics.idp_call(True)
    metrics.idp_call(False)
    scraped = samples(metrics.render().decode())
    assert value(scraped, "cookieguard_idp_calls_in_flight") == 1
    assert value(scraped, "cookieguard_sessions_in_flight") == 1
