"""The YAML schema: defaults, durations, ${VAR} expansion, and errors that name the key path."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import pytest

from cookieguard.loader import ConfigError, config_path_from, load_config, parse_config
from cookieguard.schema import parse_duration
from tests.support.proxy_process import ROOT, run_cli

GOOD = """
listen: 127.0.0.1:9000
upstream: http://127.0.0.1:3000
provider:
  kind: cognito
  user_pool_id: us-east-1_AbCdEf123
  client_id: 3n4b5urk1ft4fl3mg5e62d9ado
  client_secret: ${SECRET:-}
  endpoint: http://127.0.0.1:5001
  timeout: 2s
refresh: {before_expiry: 5m, grace: 60s, on_rejected: login, login_url: /signin}
routes:
  - match: /_next/static/
    refresh: false
  - match: regex:^/api/v[0-9]+/
    upstream: http://127.0.0.1:4000
    timeout: 120s
  - match: /
"""


def problems(text: str, env: dict[str, str] | None = None) -> list[str]:
    with pytest.raises(ConfigError) as info:
        parse_config(textwrap.dedent(text), env=env or {})
    return info.value.problems


def test_full_example_loads_with_defaults_filled_in() -> None:
    cfg = parse_config(GOOD, env={})
    assert (cfg.listen_host, cfg.listen_port) == ("127.0.0.1", 9000)
    assert cfg.provider is not None and cfg.provider.region == "us-east-1"
    assert cfg.provider.client_secret is None
    assert cfg.provider.timeout_s == 2.0
    assert cfg.provider.issuer == "https://cognito-idp.us-east-1.amazonaws.com/us-east-1_AbCdEf123"
    assert cfg.refresh.before_expiry_s == 300 and cfg.refresh.on_rejected == "login"
    assert [r.match for r in cfg.routes] == ["/_next/static/", "regex:^/api/v[0-9]+/", "/"]
    assert cfg.routes[0].refresh is False and cfg.routes[0].upstream == "http://127.0.0.1:3000"
    assert cfg.routes[1].upstream == "http://127.0.0.1:4000" and cfg.routes[1].timeout_s == 120
    assert cfg.cookies.attributes.secure is True and cfg.cookies.attributes.same_site == "Lax"
    assert cfg.cookies.attributes.max_age_s == 31536000
    assert cfg.store.kind == "memory" and cfg.store.max_entries == 100_000
    assert cfg.admin_prefix == "/.cookieguard"


def test_the_shipped_example_configs_are_valid() -> None:
    for path in sorted((ROOT / "config").glob("*.yaml")):
        load_config(
            path, env={"COGNITO_CLIENT_SECRET": "x", "COOKIEGUARD_STORE_KEY": "", "SUPABASE_ANON_KEY": "x"}
        )


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("500ms", 0.5),
        ("30s", 30.0),
        ("5m", 300.0),
        ("1h", 3600.0),
        ("30d", 2592000.0),
        (15, 15.0),
        ("1.5s", 1.5),
    ],
)
def test_durations(text: object, expected: float) -> None:
    assert parse_duration(text) == expected


def test_env_expansion_with_defaults() -> None:
    text = "upstream: ${UP}\nlogging: {level: '${LEVEL:-warning}'}\n"
    cfg = parse_config(text, env={"UP": "http://app:3000"})
    assert cfg.upstream == "http://app:3000" and cfg.logging.level == "warning"
    assert problems(text, env={}) == ["upstream: environment variable UP is not set"]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("listen: 8080", "listen: must be host:port"),
        ("upstream: ftp://x", "upstream: not an http(s) URL"),
        (
            "upstream: http://a\nroutes: [{match: /, upstream: localhost:3000}]",
            "routes[0].upstream: not an http(s) URL",
        ),
        ("upstream: http://a\nroutes: [{match: api/}]", "routes[0].match: a path prefix must start with /"),
        ("upstream: http://a\nroutes: [{match: 'regex:(['}]", "routes[0].match: invalid regular expression"),
        ("upstream: http://a\nroutes: [{upstream: http://b}]", "routes[0].match: required"),
        ("routes: [{match: /}]", "routes[0].upstream: no upstream"),
        ("upstream: http://a\nroutes: []", "routes: must be a non-empty list"),
        (
            "upstream: http://a\nroutes: [{match: /, refresh: 'no'}]",
            "routes[0].refresh: must be true or false",
        ),
        ("upstream: http://a\nrefresh: {before_expiry: soon}", "refresh.before_expiry: not a duration"),
        (
            "upstream: http://a\nrefresh: {on_rejected: logout}",
            "refresh.on_rejected: must be one of clear, pass, login",
        ),
        (
            "upstream: http://a\nrefresh: {login_url: 'https://evil.example/'}",
            "refresh.login_url: must be a same-site",
        ),
        (
            "upstream: http://a\nrefresh: {login_url: '//evil.example/'}",
            "refresh.login_url: must be a same-site",
        ),
        ("upstream: http://a\nprovider: {kind: saml}", "provider.kind: must be one of cognito, oidc"),
        ("upstream: http://a\nprovider: {kind: cognito, client_id: x}", "provider.user_pool_id: required"),
        (
            "upstream: http://a\nprovider: {kind: cognito, client_id: x, user_pool_id: nope}",
            "provider.user_pool_id: not a Cognito",
        ),
        (
            "upstream: http://a\nprovider: {kind: cognito, client_id: x, user_pool_id: us-east-1_a, api: v2}",
            "provider.api: must be one of",
        ),
        (
            "upstream: http://a\nprovider: {kind: oidc, client_id: x}",
            "provider.token_endpoint: kind oidc needs token_endpoint or issuer",
        ),
        (
            "upstream: http://a\nprovider: {kind: oidc, client_id: x, issuer: http://i, client_auth: client_secret_post}",
            "provider.client_secret: required",
        ),
        (
            "upstream: http://a\nprovider: {kind: cognito, user_pool_id: us-east-1_a, client_id: x, issuer: http://i}",
            "provider.issuer: only valid for kind oidc",
        ),
        (
            "upstream: http://a\nprovider: {kind: cognito, user_pool_id: us-east-1_a, client_id: x, timeout: 0s}",
            "provider.timeout: must be greater than zero",
        ),
        (
            "upstream: http://a\ncookies: {layout: jwt}",
            "cookies.layout: must be one of amplify, authjs, named",
        ),
        (
            "upstream: http://a\ncookies: {layout: named, names: {access_token: 'a b'}}",
            "cookies.names.access_token: not a valid cookie name",
        ),
        (
            "upstream: http://a\ncookies: {names: {access_token: at}}",
            "cookies.names: only valid with layout named",
        ),
        (
            "upstream: http://a\ncookies: {attributes: {same_site: sometimes}}",
            "cookies.attributes.same_site: must be one of",
        ),
        (
            "upstream: http://a\ncookies: {attributes: {same_site: None, secure: false}}",
            "cookies.attributes.same_site: None requires secure",
        ),
        (
            "upstream: http://a\ncookies: {attributes: {path: 'x'}}",
            "cookies.attributes.path: must be an absolute path",
        ),
        ("upstream: http://a\nverify: {signature: maybe}", "verify.signature: must be true or false"),
        ("upstream: http://a\nstore: {kind: etcd}", "store.kind: must be one of memory, redis"),
        ("upstream: http://a\nstore: {url: http://redis}", "store.url: not a redis://"),
        ("upstream: http://a\nstore: {max_entries: -1}", "store.max_entries: must be a positive integer"),
        ("upstream: http://a\nlogging: {format: xml}", "logging.format: must be one of json, console"),
        ("upstream: http://a\ntimeouts: {drain: forever}", "timeouts.drain: not a duration"),
        ("upstream: http://a\nadmin_prefix: healthz", "admin_prefix: must be an absolute path"),
        ("upstream: http://a\nlisten_port: 80", "listen_port: unknown key"),
        (
            "upstream: http://a\nrefresh: {before_expiry: 5m, grace_period: 1m}",
            "refresh.grace_period: unknown key",
        ),
        ("upstream: http://a\nroutes: [{match: /, upstrem: http://b}]", "routes[0].upstrem: unknown key"),
        ("upstream: http://a\nrefresh: 5m", "refresh: must be a mapping"),
        ("- just\n- a list", "<root>: must be a mapping"),
        ("upstream: [unclosed", "<file>: invalid YAML at line"),
    ],
)
def test_every_bad_value_names_its_key_path(text: str, expected: str) -> None:
    found = problems(text)
    assert any(p.startswith(expected) for p in found), found


def test_an_invalid_store_key_is_reported_without_echoing_it() -> None:
    found = problems("upstream: http://a\nstore: {encryption_key: 'not-a-key-but-a-secret-value'}")
    assert found and found[0].startswith("store.encryption_key: key #1 is not a Fernet key")
    assert "not-a-key-but-a-secret-value" not in "\n".join(found)


def test_three_mistakes_are_reported_together() -> None:
    found = problems(
        """
        upstream: http://127.0.0.1:3000
        refresh: {before_expiry: soon}
        routes:
          - match: /api/
            upstream: nope
          - match: /
            refresh: yes please
        """
    )
    assert found == [
        "refresh.before_expiry: not a duration: 'soon' (use e.g. 500ms, 30s, 5m, 1h, 30d)",
        "routes[0].upstream: not an http(s) URL: 'nope'",
        "routes[1].refresh: must be true or false, got 'yes please'",
    ]


def test_config_path_precedence() -> None:
    assert config_path_from("a.yaml", env={"COOKIEGUARD_CONFIG": "b.yaml"}) == "a.yaml"
    assert config_path_from(None, env={"COOKIEGUARD_CONFIG": "b.yaml"}) == "b.yaml"
    assert config_path_from(None, env={}) == "config/cookieguard.yaml"


def test_cli_check_exits_2_with_every_problem_and_no_traceback(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        "upstream: http://a\nrefresh: {on_rejected: maybe}\nroutes: [{match: x}, {match: /, upstream: y}]\n"
    )
    result = run_cli("check", "--config", str(bad))
    assert result.returncode == 2
    assert "config error: refresh.on_rejected: must be one of clear, pass, login" in result.stderr
    assert "config error: routes[0].match: a path prefix must start with /" in result.stderr
    assert "config error: routes[1].upstream: not an http(s) URL: 'y'" in result.stderr
    assert "Traceback" not in result.stderr


def test_cli_run_with_a_bad_config_exits_2(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("upstream: http://a\nlisten: everywhere\n")
    result = run_cli("run", "--config", str(bad))
    assert result.returncode == 2
    assert "config error: listen: must be host:port" in result.stderr


def test_cli_missing_config_file_exits_2(tmp_path: Path) -> None:
    result = run_cli("check", "--config", str(tmp_path / "nope.yaml"))
    assert result.returncode == 2 and "cannot read" in result.stderr


def test_cli_check_prints_effective_routes_and_hides_the_secret(
    tmp_path: Path, known_secrets: object
) -> None:
    good = tmp_path / "good.yaml"
    good.write_text(GOOD)
    secret = "s3cr3t-client-secret-value"
    known_secrets.add(secret)  # type: ignore[attr-defined]
    result = run_cli("check", "--config", str(good), env={"SECRET": secret})
    assert result.returncode == 0, result.stderr
    assert "[0] /_next/static/" in result.stdout and "refresh: off" in result.stdout
    assert "[1] regex:^/api/v[0-9]+/" in result.stdout and "http://127.0.0.1:4000" in result.stdout
    assert "client_secret=set" in result.stdout
    assert secret not in result.stdout


def test_cli_check_uses_the_environment_variable_for_the_path(tmp_path: Path) -> None:
    good = tmp_path / "env.yaml"
    good.write_text("upstream: http://127.0.0.1:1234\n")
    result = run_cli("check", env={"COOKIEGUARD_CONFIG": str(good)})
    assert result.returncode == 0 and "http://127.0.0.1:1234" in result.stdout


def test_cli_version() -> None:
    result = run_cli("--version")
    assert result.returncode == 0 and result.stdout.startswith("cookieguard 0.")


def test_keygen_prints_a_key_the_config_accepts() -> None:
    key = run_cli("keygen").stdout.strip()
    assert len(key) == 44
    cfg = parse_config(f"upstream: http://a\nstore: {{kind: redis, encryption_key: '{key},{key}'}}\n", env={})
    assert cfg.store.encryption_keys == (key, key)


@pytest.mark.parametrize(
    "login_url", ["/\t/evil.example/", "/\\evil.example/", "/ /evil.example/", "/\n/evil", "/x\x7f"]
)
def test_login_url_rejects_what_browsers_would_turn_into_another_host(login_url: str) -> None:
    """Browsers strip tabs and newlines from URLs and read `\\` as `/`: `/\\t/evil` is `//evil`."""
    found = problems("upstream: http://a\nrefresh: {login_url: " + json.dumps(login_url) + "}\n")
    assert found and found[0].startswith("refresh.login_url: must be a same-site absolute path")


def test_limits_and_client_timeouts_have_the_documented_defaults() -> None:
    config = parse_config("upstream: http://a")
    assert config.limits.unproven_per_address == 5
    assert config.limits.unproven_per_second == 1.0
    assert config.limits.refresh_tokens_per_subject == 5
    assert config.limits.idp_calls_per_second == 50.0
    assert config.limits.max_connections == 10_000
    assert config.limits.trusted_proxies == ()
    assert (
        config.timeouts.client_header_s,
        config.timeouts.client_body_idle_s,
        config.timeouts.keepalive_s,
    ) == (
        10.0,
        30.0,
        75.0,
    )
    assert config.admin_listen == ("127.0.0.1", 9090)  # loopback: readyz and metrics stay private


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        (
            "limits: {trusted_proxies: [10.0.0.0/8, nope]}",
            "limits.trusted_proxies: not an IP address or CIDR range: 'nope'",
        ),
        ("limits: {max_connections: 0}", "limits.max_connections: must be a positive integer"),
        ("limits: {idp_calls_per_second: fast}", "limits.idp_calls_per_second: must be a positive number"),
        ("limits: {unproven_per_adress: 3}", "limits.unproven_per_adress: unknown key"),
        ("timeouts: {client_header: soon}", "timeouts.client_header: not a duration"),
        ("admin_listen: 9090", "admin_listen: must be host:port"),
        ("listen: 127.0.0.1:8080\nadmin_listen: 127.0.0.1:8080", "admin_listen: must differ from listen"),
        ("listen: 0.0.0.0:9090", "admin_listen: must differ from listen"),
    ],
)
def test_bad_limits_name_their_key(text: str, problem: str) -> None:
    with pytest.raises(ConfigError) as err:
        parse_config("upstream: http://a\n" + text)
    assert any(p.startswith(problem) for p in err.value.problems), err.value.problems


def test_limits_parse() -> None:
    config = parse_config(
        "upstream: http://a\nadmin_listen: 127.0.0.1:9090\n"
        "limits: {trusted_proxies: [10.0.0.0/8, '::1'], unproven_per_second: 0.5, upstream_connections: 64}"
    )
    assert [str(n) for n in config.limits.trusted_proxies] == ["10.0.0.0/8", "::1/128"]
    assert config.limits.unproven_per_second == 0.5
    assert config.limits.upstream_connections == 64
    assert config.admin_listen == ("127.0.0.1", 9090)
