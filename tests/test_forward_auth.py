"""The forward-auth endpoint (docs/forward-auth/) in process: what it reads of the ingress's
question, what it answers, and its configuration. Refreshes go to moto's Cognito server. The
real ingresses in front of it are tests/test_forward_auth_ingresses.py."""

from __future__ import annotations

import io
import json
import secrets
from pathlib import Path
from typing import Any

import pytest
import yaml

from cookieguard.app import build_admin_app, build_app
from cookieguard.edge.admin import ADMIN_KEY
from cookieguard.edge.forward_auth import Original, original_request
from cookieguard.loader import ConfigError, parse_config
from cookieguard.ops.demo.emulator import CognitoEmulator, PoolInfo
from cookieguard.session.layouts import AmplifyLayout
from tests.support.cognito_idp import (
    CognitoUser,
    amplify_cookie_header,
    cognito_guard_config,
    made_up_session,
)
from tests.support.no_secrets import KnownSecrets
from tests.support.proxy_process import run_cli

ENDPOINT = "/.cookieguard/forward-auth"


@pytest.mark.parametrize(
    ("ingress", "headers", "method", "tail", "expected"),
    [
        # Each ingress overwrites only its own family; the other one is the client's to forge.
        ("traefik", {"X-Forwarded-Uri": "/a?b=1", "X-Forwarded-Method": "POST", "X-Original-URI": "/static/x"},
         "GET", "", ("POST", "/a", "/a?b=1")),
        ("nginx", {"X-Original-URI": "/a%20b?q", "X-Original-Method": "PUT", "X-Forwarded-Uri": "/static/x"},
         "GET", "", ("PUT", "/a b", "/a%20b?q")),
        ("nginx", {"X-Original-URI": "/static/../dashboard"}, "GET", "", ("GET", "/dashboard", "/dashboard")),
        ("envoy", {"X-Forwarded-Uri": "/static/x"}, "DELETE", "/api/items?x=1", ("DELETE", "/api/items", "/api/items?x=1")),
        ("envoy", {}, "GET", "", ("GET", "/", "/")),
    ],
)  # fmt: skip
def test_the_original_request_comes_from_the_ingresss_own_headers(
    ingress: str, headers: dict[str, str], method: str, tail: str, expected: tuple[str, str, str]
) -> None:
    original = original_request(ingress, headers, method, tail)
    assert isinstance(original, Original)
    assert (original.method, original.target.path, original.target.forward) == expected


@pytest.mark.parametrize(
    ("ingress", "headers", "problem"),
    [
        ("traefik", {"X-Original-URI": "/a"}, "no X-Forwarded-Uri header"),
        ("nginx", {"X-Forwarded-Uri": "/a"}, "no X-Original-URI header"),
        ("nginx", {"X-Original-URI": "/a/..%2f..%2fadmin"}, "cannot be routed"),
    ],
)
def test_an_unreadable_question_says_why(ingress: str, headers: dict[str, str], problem: str) -> None:
    answer = original_request(ingress, headers, "GET", "")
    assert isinstance(answer, str) and problem in answer


def guard_config(pool: PoolInfo, **overrides: Any) -> Any:
    overrides.setdefault("forward_auth", {"enabled": True, "ingress": "nginx"})
    config = cognito_guard_config(pool, "http://127.0.0.1:9", timeout="5s", **overrides)
    del config["upstream"]
    return parse_config(yaml.safe_dump(config), env={})


async def test_a_dead_session_with_on_rejected_login_is_answered_401_with_the_clearing_cookies(
    aiohttp_client: Any, cognito_idp: CognitoEmulator, expiring_user: CognitoUser
) -> None:
    cognito_idp.revoke(expiring_user.pool, expiring_user.refresh_token)
    config = guard_config(expiring_user.pool, refresh={"on_rejected": "login", "login_url": "/signin"})
    client = await aiohttp_client(build_app(config))
    # A navigation: still 401, never a redirect (nginx's auth_request turns a 3xx into a 500).
    headers = {"Cookie": amplify_cookie_header(expiring_user), "X-Original-URI": "/dashboard",
               "Sec-Fetch-Mode": "navigate", "Accept": "text/html"}  # fmt: skip
    async with client.get(ENDPOINT, headers=headers, allow_redirects=False) as resp:
        assert resp.status == 401 and "Location" not in resp.headers
        set_cookies = resp.headers.getall("Set-Cookie")
        numbered = [resp.headers[f"X-Cookieguard-Set-Cookie-{i}"] for i in range(len(set_cookies))]
        assert f"X-Cookieguard-Set-Cookie-{len(set_cookies)}" not in resp.headers
    refresh_name = AmplifyLayout(expiring_user.pool.client_id).cookie_name(
        expiring_user.username, "refreshToken"
    )
    assert any(line.startswith(f"{refresh_name}=;") and "Max-Age=0" in line for line in set_cookies)
    assert numbered == set_cookies
    assert cognito_idp.refresh_calls == 1


async def test_a_refreshed_answer_carries_each_cookie_twice_and_the_fresh_cookie_header(
    aiohttp_client: Any,
    cognito_idp: CognitoEmulator,
    expiring_user: CognitoUser,
    known_secrets: KnownSecrets,
    no_secrets_in_logs: io.StringIO,
) -> None:
    """Its `token_refresh` and `access` lines quote no token, cookie value or query (the leak
    check runs over them: the refresh token and a secret in the original URI's query are
    registered)."""
    code = secrets.token_urlsafe(24)
    known_secrets.add(expiring_user.refresh_token, code)
    config = guard_config(expiring_user.pool, logging={"level": "debug", "access_log": True})
    client = await aiohttp_client(build_app(config))
    header = amplify_cookie_header(expiring_user)
    original = {"Cookie": header, "X-Original-URI": f"/page?code={code}"}
    async with client.get(ENDPOINT, headers=original) as resp:
        assert resp.status == 200 and resp.headers["Cache-Control"] == "no-store"
        set_cookies = resp.headers.getall("Set-Cookie")
        assert [resp.headers[f"X-Cookieguard-Set-Cookie-{i}"] for i in range(len(set_cookies))] == set_cookies
        upstream_cookie = resp.headers["Cookie"]
    assert len(set_cookies) >= 4 and upstream_cookie != header
    assert upstream_cookie.startswith("_ga=GA1.1.123456789.1700000000; ")  # the app's own cookies stay
    # metrics answer on the admin listener only (loopback by default)
    admin = await aiohttp_client(build_admin_app(client.server.app[ADMIN_KEY], config))
    async with admin.get("/.cookieguard/metrics") as resp:
        metrics = await resp.text()
    assert 'cookieguard_requests_total{route="/",status="200"} 1.0' in metrics
    events = [json.loads(line) for line in no_secrets_in_logs.getvalue().splitlines()]
    assert [e["path"] for e in events if e.get("event") == "access"] == ["/page"]
    assert [e["outcome"] for e in events if e.get("event") == "token_refresh"] == ["refreshed"]


async def test_without_a_provider_the_answer_repeats_the_cookie_header(aiohttp_client: Any) -> None:
    config = parse_config("forward_auth: {enabled: true}\nroutes: [{match: /}]\n", env={})
    client = await aiohttp_client(build_app(config))
    cookie = "a=1;b=2 ; c"
    async with client.post(f"{ENDPOINT}", headers={"Cookie": cookie, "X-Forwarded-Uri": "/x"}) as resp:
        assert resp.status == 200 and resp.headers["Cookie"] == cookie and "Set-Cookie" not in resp.headers
    async with client.get(f"{ENDPOINT}", headers={"X-Forwarded-Uri": "/x"}) as resp:
        assert resp.status == 200 and "Cookie" not in resp.headers
    async with client.get(f"{ENDPOINT}", headers={"X-Original-URI": "/x"}) as resp:
        assert resp.status == 400 and "X-Forwarded-Uri" in await resp.text()


async def test_the_endpoint_is_off_by_default(aiohttp_client: Any) -> None:
    client = await aiohttp_client(build_app(parse_config("upstream: http://127.0.0.1:9\n", env={})))
    async with client.get(ENDPOINT, headers={"X-Forwarded-Uri": "/x"}) as resp:
        assert resp.status == 404


@pytest.mark.parametrize("trusted", [True, False])
async def test_the_abuse_limits_budget_the_address_the_trusted_ingress_forwards(
    aiohttp_client: Any, cognito_idp: CognitoEmulator, cognito_pool: PoolInfo, trusted: bool
) -> None:
    limits: dict[str, Any] = {"unproven_per_second": 100}
    if trusted:
        limits["trusted_proxies"] = ["127.0.0.0/8"]
    client = await aiohttp_client(build_app(guard_config(cognito_pool, limits=limits)))

    async def made_up(forwarded_for: str) -> None:
        headers = {"Cookie": made_up_session(cognito_pool), "X-Original-URI": "/rsc",
                   "X-Forwarded-For": forwarded_for}  # fmt: skip
        async with client.get(ENDPOINT, headers=headers) as resp:
            assert resp.status == 200

    for _ in range(10):
        await made_up("203.0.113.7")
    assert cognito_idp.refresh_calls == 5
    await made_up("198.51.100.9")  # another client behind the ingress has its own budget
    assert cognito_idp.refresh_calls == (6 if trusted else 5)


def test_forward_auth_configuration() -> None:
    config = parse_config("forward_auth: {enabled: true, ingress: envoy}\nroutes: [{match: /api/}]\n", env={})
    assert config.forward_auth.enabled and config.forward_auth.ingress == "envoy"
    assert config.routes[0].upstream == ""  # the ingress forwards: no upstream needed
    with pytest.raises(ConfigError) as raised:
        parse_config("forward_auth: {enabled: true, ingress: haproxy, mode: x}\n", env={})
    assert raised.value.problems == [
        "forward_auth.ingress: must be one of traefik, nginx, envoy, got 'haproxy'",
        "forward_auth.mode: unknown key",
    ]
    with pytest.raises(ConfigError) as raised:
        parse_config("routes: [{match: /}]\n", env={})  # proxy mode still needs an upstream
    assert any(p.startswith("routes[0].upstream") for p in raised.value.problems)


@pytest.mark.parametrize("trusted", [True, False])
def test_check_warns_when_forward_auth_cannot_see_the_client(tmp_path: Path, trusted: bool) -> None:
    path = tmp_path / "cookieguard.yaml"
    limits = "limits: {trusted_proxies: [10.0.0.0/8]}\n" if trusted else ""
    path.write_text("forward_auth: {enabled: true, ingress: nginx}\n" + limits)
    result = run_cli("check", "--config", str(path))
    assert result.returncode == 0, result.stderr
    assert "forward-auth: on, for nginx" in result.stdout
    assert ("limits.trusted_proxies is empty" in result.stdout) is not trusted
