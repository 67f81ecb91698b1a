"""Secrets and what reaches the browser (issue 8).

- The client secret and the store key never appear in `cookieguard check` output, in config
  errors, or in anything `cookieguard run` prints at debug level, also when IdP calls fail and
  when the IdP echoes what it was sent (moto puts a wrong SECRET_HASH in its error message).
- The cookies cookieguard writes get `Secure` by default, and `http_only`/`same_site` reach the
  browser as Set-Cookie attributes (SameSite=None always with Secure).
- `on_rejected: login` redirects only to the configured same-site path, whatever the request's
  query string (`return_to`, `next`, ...), Host or X-Forwarded-Host says.

The autouse fixture (tests/support/no_secrets.py) also scans every output for the registered
secrets and for anything shaped like a JWT; the explicit asserts here say which output was read.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import yaml
from cryptography.fernet import Fernet
from yarl import URL

from cookieguard.loader import ConfigError, parse_config
from cookieguard.ops.demo.emulator import CognitoEmulator, PoolInfo, secret_hash_for
from cookieguard.session.layouts import AmplifyLayout
from tests.support.apps import seen_by, start_buggy_app
from tests.support.cognito_idp import CognitoUser
from tests.support.no_secrets import KnownSecrets
from tests.support.proxy_process import CookieguardProcess, run_cli
from tests.test_faults import cookie_header, guard_config

Start = Callable[..., CookieguardProcess]


@pytest.fixture
def store_key(known_secrets: KnownSecrets) -> str:
    key = Fernet.generate_key().decode()
    known_secrets.add(key)
    return key


@pytest.fixture
def expired_user(
    cognito_idp: CognitoEmulator, make_cognito_user: Callable[..., CognitoUser], known_secrets: KnownSecrets
) -> Callable[[PoolInfo], CognitoUser]:
    def make(pool: PoolInfo) -> CognitoUser:
        cognito_idp.access_token_lifetime_s = -60
        try:
            user = make_cognito_user(pool)
        finally:
            cognito_idp.access_token_lifetime_s = 3600
        known_secrets.add(user.refresh_token, user.access_token, user.id_token)
        return user

    return make


# -- check, config errors --------------------------------------------------------------------

SECRET_CONFIG = """
listen: 127.0.0.1:0
upstream: http://127.0.0.1:3000
provider:
  kind: cognito
  user_pool_id: us-east-1_AbCdEf123
  client_id: 3n4b5urk1ft4fl3mg5e62d9ado
  client_secret: ${COGNITO_CLIENT_SECRET}
store:
  kind: redis
  url: redis://127.0.0.1:6379/0
  encryption_key: ${COOKIEGUARD_STORE_KEY}
logging: {level: debug}
"""


def test_check_prints_neither_the_client_secret_nor_the_store_key(
    tmp_path: Path, store_key: str, known_secrets: KnownSecrets
) -> None:
    client_secret = "client-secret-" + Fernet.generate_key().decode()[:20]
    known_secrets.add(client_secret)
    config = tmp_path / "cookieguard.yaml"
    config.write_text(SECRET_CONFIG)
    env = {"COGNITO_CLIENT_SECRET": client_secret, "COOKIEGUARD_STORE_KEY": store_key}
    result = run_cli("check", "--config", str(config), env=env)
    assert result.returncode == 0, result.stderr
    output = result.stdout + result.stderr
    assert "client_secret=set" in output
    assert client_secret not in output and store_key not in output


def test_config_errors_name_the_key_but_never_echo_a_secret(
    tmp_path: Path, store_key: str, known_secrets: KnownSecrets
) -> None:
    client_secret = "client-secret-" + Fernet.generate_key().decode()[:20]
    not_a_key = "almost-a-key-" + Fernet.generate_key().decode()[:24]
    known_secrets.add(client_secret, not_a_key)
    # Three mistakes around the secrets: a bad upstream, a client secret of the wrong type, a key
    # list whose second key is not a Fernet key.
    broken = (
        SECRET_CONFIG.replace("upstream: http://127.0.0.1:3000", "upstream: nope")
        .replace("${COGNITO_CLIENT_SECRET}", '["${COGNITO_CLIENT_SECRET}"]')
        .replace("${COOKIEGUARD_STORE_KEY}", "${COOKIEGUARD_STORE_KEY},${NOT_A_KEY}")
    )
    config = tmp_path / "cookieguard.yaml"
    config.write_text(broken)
    env = {"COGNITO_CLIENT_SECRET": client_secret, "COOKIEGUARD_STORE_KEY": store_key, "NOT_A_KEY": not_a_key}
    for verb in ("check", "run"):
        result = run_cli(verb, "--config", str(config), env=env)
        output = result.stdout + result.stderr
        assert result.returncode == 2, output
        assert "upstream" in output and "store.encryption_key" in output and "client_secret" in output
        for secret in (client_secret, store_key, not_a_key):
            assert secret not in output
        assert "Traceback" not in output


def test_a_yaml_syntax_error_next_to_a_literal_secret_does_not_quote_the_line(
    tmp_path: Path, store_key: str
) -> None:
    # PyYAML's own messages quote the offending line; cookieguard reports the position only.
    config = tmp_path / "cookieguard.yaml"
    config.write_text(SECRET_CONFIG.replace("${COOKIEGUARD_STORE_KEY}", f"{store_key}: ["))
    result = run_cli("check", "--config", str(config))
    output = result.stdout + result.stderr
    assert result.returncode == 2 and "invalid YAML at line" in output
    assert store_key not in output


# -- cookieguard run at debug level, with failing IdP calls --------------------------------------


@pytest.mark.parametrize("api", ["get_tokens_from_refresh_token", "initiate_auth"])
async def test_run_at_debug_level_with_failing_idp_calls_never_logs_a_secret(
    aiohttp_server: Any,
    cookieguard_process: Start,
    cognito_idp: CognitoEmulator,
    make_cognito_pool: Callable[..., PoolInfo],
    expired_user: Callable[[PoolInfo], CognitoUser],
    store_key: str,
    known_secrets: KnownSecrets,
    api: str,
) -> None:
    pool = make_cognito_pool(with_secret=True)
    assert pool.client_secret
    known_secrets.add(pool.client_secret)
    users = [expired_user(pool) for _ in range(4)]
    for user in users:  # derived from the secret: as secret as the secret
        known_secrets.add(secret_hash_for(pool, user.username))
    cognito_idp.revoke(pool, users[2].refresh_token)  # NotAuthorizedException
    app = await start_buggy_app(aiohttp_server)
    env = {"COGNITO_CLIENT_SECRET": pool.client_secret, "COOKIEGUARD_STORE_KEY": store_key}
    config = guard_config(
        pool,
        str(app.make_url("")),
        provider={"api": api, "client_secret": "${COGNITO_CLIENT_SECRET}"},
        store={"kind": "memory", "encryption_key": "${COOKIEGUARD_STORE_KEY}"},
    )
    guard = cookieguard_process(config, env=env)

    # A 500, an error code, a rejection, then a refresh that works.
    cognito_idp.fail_next = [500, "InternalErrorException"]
    statuses = []
    async with aiohttp.ClientSession() as s:
        for user in users:
            async with s.get(f"{guard.url}/page", headers={"Cookie": cookie_header(user)}) as resp:
                statuses.append(resp.status)
                for line in resp.headers.getall("Set-Cookie", []):
                    known_secrets.add(line.split(";", 1)[0].partition("=")[2])
        for what in ("readyz", "metrics"):
            async with s.get(f"{guard.admin_url}/.cookieguard/{what}") as resp:
                assert resp.status == 200
    assert statuses == [200] * 4
    events = await asyncio.to_thread(
        guard.wait_for_event, "token_refresh", 10, lambda _: len(guard.events("token_refresh")) >= 4
    )
    outcomes = [(e["outcome"], e["error"]) for e in guard.events("token_refresh")]
    assert outcomes == [
        ("failed", "InternalErrorException"),
        ("failed", "InternalErrorException"),
        ("rejected", "NotAuthorizedException"),
        ("refreshed", None),
    ], events
    guard.stop()
    output = guard.output()
    for secret in (pool.client_secret, store_key, *(secret_hash_for(pool, u.username) for u in users)):
        assert secret not in output


async def test_a_wrong_secret_echoed_back_by_the_idp_is_not_logged(
    aiohttp_server: Any,
    cookieguard_process: Start,
    cognito_idp: CognitoEmulator,
    make_cognito_pool: Callable[..., PoolInfo],
    expired_user: Callable[[PoolInfo], CognitoUser],
    known_secrets: KnownSecrets,
) -> None:
    """moto answers a wrong SECRET_HASH with a message that contains it (PEERS.md)."""
    pool = make_cognito_pool(with_secret=True)
    user = expired_user(pool)
    wrong = "wrong-secret-" + Fernet.generate_key().decode()[:20]
    wrong_hash = secret_hash_for(PoolInfo(**{**pool.__dict__, "client_secret": wrong}), user.username)
    known_secrets.add(wrong, wrong_hash, pool.client_secret)
    app = await start_buggy_app(aiohttp_server)
    config = guard_config(
        pool, str(app.make_url("")), provider={"api": "initiate_auth", "client_secret": wrong}
    )
    guard = cookieguard_process(config)
    async with (
        aiohttp.ClientSession() as s,
        s.get(f"{guard.url}/page", headers={"Cookie": cookie_header(user)}) as resp,
    ):
        assert resp.status == 200
    event = await asyncio.to_thread(guard.wait_for_event, "token_refresh")
    assert (event["outcome"], event["error"]) == ("rejected", "NotAuthorizedException")
    guard.stop()
    assert wrong not in guard.output() and wrong_hash not in guard.output()


# -- what reaches the browser ---------------------------------------------------------------------


def attributes(set_cookie: str) -> dict[str, str]:
    """A Set-Cookie header's attributes as a browser reads them: lower-cased names -> values."""
    out = {}
    for part in set_cookie.split(";")[1:]:
        name, _, value = part.strip().partition("=")
        out[name.lower()] = value
    return out


@pytest.mark.parametrize(
    ("configured", "expected"),
    [
        ({}, {"secure": "", "samesite": "Lax", "path": "/", "max-age": "31536000"}),
        ({"http_only": True, "same_site": "Strict"}, {"secure": "", "httponly": "", "samesite": "Strict"}),
        ({"same_site": "None"}, {"secure": "", "samesite": "None"}),
    ],
    ids=["defaults", "httponly-strict", "samesite-none"],
)
async def test_written_cookies_carry_the_configured_attributes(
    aiohttp_server: Any,
    cookieguard_process: Start,
    cognito_idp: CognitoEmulator,
    cognito_pool: PoolInfo,
    expired_user: Callable[[PoolInfo], CognitoUser],
    known_secrets: KnownSecrets,
    configured: dict[str, Any],
    expected: dict[str, str],
) -> None:
    fresh, dead = expired_user(cognito_pool), expired_user(cognito_pool)
    cognito_idp.revoke(cognito_pool, dead.refresh_token)
    app = await start_buggy_app(aiohttp_server)
    config = guard_config(cognito_pool, str(app.make_url("")))
    if configured:
        config["cookies"] = {"attributes": configured}
    guard = cookieguard_process(config)
    written: dict[str, list[str]] = {}
    async with aiohttp.ClientSession() as s:
        for name, user in (("refreshed", fresh), ("cleared", dead)):
            async with s.get(f"{guard.url}/redirect", headers={"Cookie": cookie_header(user)}) as resp:
                written[name] = resp.headers.getall("Set-Cookie", [])
    for line in written["refreshed"]:
        known_secrets.add(line.split(";", 1)[0].partition("=")[2])
    layout = AmplifyLayout(cognito_pool.client_id)
    assert any(
        line.startswith(layout.cookie_name(fresh.username, "accessToken")) for line in written["refreshed"]
    )
    assert len(written["cleared"]) >= 3
    for line in written["refreshed"] + written["cleared"]:
        attrs = attributes(line)
        for name, value in expected.items():
            if name == "max-age" and line in written["cleared"]:
                assert attrs["max-age"] == "0"
                continue
            assert attrs.get(name) == value, (name, line.split(";", 1)[1])
        if "httponly" not in expected:
            assert "httponly" not in attrs  # Amplify's browser code must read them


def test_samesite_none_without_secure_is_refused() -> None:
    with pytest.raises(ConfigError) as caught:
        parse_config("upstream: http://a\ncookies: {attributes: {same_site: None, secure: false}}")
    assert "cookies.attributes.same_site: None requires secure" in str(caught.value)


# -- no open redirect --------------------------------------------------------------------------

HOSTILE_REQUESTS = [
    ("/page?return_to=https://evil.example/", {}),
    ("/page?next=//evil.example/", {}),
    ("/page?redirect_uri=https%3A%2F%2Fevil.example&returnTo=%2F%2Fevil.example", {}),
    ("/page?login_url=https://evil.example/", {}),
    ("/page", {"Host": "evil.example"}),
    ("/page", {"X-Forwarded-Host": "evil.example", "X-Forwarded-Proto": "https"}),
    ("//evil.example/page", {}),
    ("/%2F%2Fevil.example", {"Referer": "https://evil.example/"}),
]


async def test_login_redirect_goes_only_to_the_configured_path(
    aiohttp_server: Any,
    cookieguard_process: Start,
    cognito_idp: CognitoEmulator,
    cognito_pool: PoolInfo,
    expired_user: Callable[[PoolInfo], CognitoUser],
) -> None:
    user = expired_user(cognito_pool)
    cognito_idp.revoke(cognito_pool, user.refresh_token)
    app = await start_buggy_app(aiohttp_server)
    config = guard_config(
        cognito_pool, str(app.make_url("")), refresh={"on_rejected": "login", "login_url": "/signin"}
    )
    guard = cookieguard_process(config)
    locations = []
    async with aiohttp.ClientSession() as s:
        for path, extra in HOSTILE_REQUESTS:
            headers = {
                "Cookie": cookie_header(user),
                "Accept": "text/html",
                "Sec-Fetch-Mode": "navigate",
                **extra,
            }
            url = URL(guard.url + path, encoded=True)
            async with s.get(url, headers=headers, allow_redirects=False) as resp:
                locations.append((resp.status, resp.headers.get("Location")))
    assert locations == [(302, "/signin")] * len(HOSTILE_REQUESTS)
    assert seen_by(app) == []
    assert cognito_idp.refresh_calls == 1  # the verdict was remembered


@pytest.mark.parametrize(
    "login_url",
    [
        "https://evil.example/",
        "//evil.example/",
        "/\\evil.example",
        "javascript:alert(1)",
        "evil.example/login",
    ],
)
def test_login_url_must_be_a_same_site_path(login_url: str) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_config(yaml.safe_dump({"upstream": "http://a", "refresh": {"login_url": login_url}}))
    assert "refresh.login_url: must be a same-site" in str(caught.value)


SUPABASE_CONFIG = """
listen: 127.0.0.1:0
upstream: http://127.0.0.1:3000
provider:
  kind: supabase
  url: https://abcdefghijklmnop.supabase.co
  anon_key: ${SUPABASE_ANON_KEY}
  jwt_secret: ${SUPABASE_JWT_SECRET}
cookies: {layout: supabase}
logging: {level: debug}
"""


def test_check_and_config_errors_never_print_the_supabase_apikey_or_jwt_secret(
    tmp_path: Path, known_secrets: KnownSecrets
) -> None:
    anon_key = "sb_publishable_" + Fernet.generate_key().decode()[:30]
    jwt_secret = "jwt-secret-" + Fernet.generate_key().decode()
    known_secrets.add(anon_key, jwt_secret)
    env = {"SUPABASE_ANON_KEY": anon_key, "SUPABASE_JWT_SECRET": jwt_secret}
    config = tmp_path / "cookieguard.yaml"
    config.write_text(SUPABASE_CONFIG)
    result = run_cli("check", "--config", str(config), env=env)
    assert result.returncode == 0, result.stderr
    assert "provider: supabase" in result.stdout
    # Mistakes around both secrets: the key as a list, the secret too short, and next to a JWKS URL.
    config.write_text(
        SUPABASE_CONFIG.replace("${SUPABASE_ANON_KEY}", '["${SUPABASE_ANON_KEY}"]').replace(
            "  jwt_secret:", "  jwks_url: https://abcdefghijklmnop.supabase.co/keys\n  jwt_secret:"
        )
    )
    for verb in ("check", "run"):
        result = run_cli(verb, "--config", str(config), env=env)
        output = result.stdout + result.stderr
        assert result.returncode == 2, output
        assert "provider.anon_key" in output and "provider.jwt_secret" in output
        assert "Traceback" not in output
    short = jwt_secret[:20]
    known_secrets.add(short)
    config.write_text(SUPABASE_CONFIG)
    result = run_cli("check", "--config", str(config), env={**env, "SUPABASE_JWT_SECRET": short})
    assert result.returncode == 2 and "provider.jwt_secret: too short" in result.stderr
