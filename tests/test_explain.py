"""`cookieguard explain`: reads a pasted Cookie header offline and says what the proxy would do,
never printing a token (the autouse no-secret fixture checks every line the CLI printed)."""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Callable
from datetime import UTC
from pathlib import Path
from typing import Any

import pytest
import yaml

from cookieguard.config import CookieAttributes
from cookieguard.loader import parse_config
from cookieguard.ops.demo.emulator import CognitoEmulator, PoolInfo
from cookieguard.ops.explain import cookie_header_from, explain
from cookieguard.session.layouts import LAYOUTS
from cookieguard.session.layouts.supabase import session_cookies
from cookieguard.tokens.claims import session_id
from tests.support.apps import amplify_cookies
from tests.support.cognito_idp import CognitoUser
from tests.support.no_secrets import KnownSecrets
from tests.support.proxy_process import run_cli

NOW = 1_800_000_000
CID = "3n4b5urk1ft4fl3mg5e62d9ado"
POOL = "us-east-1_AbCdEf123"
ISS = f"https://cognito-idp.us-east-1.amazonaws.com/{POOL}"


def jwt(**claims: Any) -> str:
    def part(data: dict[str, Any]) -> str:
        return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()

    return f"{part({'alg': 'RS256', 'kid': 'k1'})}.{part(claims)}.c2lnbmF0dXJlLW5vdC1jaGVja2Vk"


def access(exp: float, iat: float | None = None, **extra: Any) -> str:
    claims = {"sub": "0f1e-sub", "username": "jane@example.com", "client_id": CID, "token_use": "access"}
    claims |= {"iss": ISS, "exp": exp, "iat": iat if iat is not None else exp - 3600, **extra}
    return jwt(**claims)


def header(**tokens: str | None) -> str:
    values: dict[str, str | None] = {
        "access_token": None,
        "id_token": None,
        "refresh_token": "opaque-refresh-" + "r" * 40,
    }
    values.update(tokens)
    cookies = amplify_cookies(CID, "jane@example.com", **values)
    return "; ".join(f"{k}={v}" for k, v in cookies.items())


def config(text: str = "") -> Any:
    base = f"""
upstream: http://127.0.0.1:3000
provider: {{kind: cognito, user_pool_id: {POOL}, client_id: {CID}}}
"""
    return parse_config(base + text, env={})


def run(cookie: str, cfg: Any = None, **kw: Any) -> str:
    return "\n".join(explain(cookie, cfg or config(), now_s=NOW, tz=UTC, **kw))


@pytest.fixture(autouse=True)
def _tokens_are_secrets(known_secrets: KnownSecrets) -> None:
    known_secrets.add("opaque-refresh-" + "r" * 40)


def test_expired_token_is_refreshed() -> None:
    out = run(header(access_token=access(NOW - 7200)))
    assert "user: jane@example.com" in out
    assert "expires  2027-01-15 06:00:00 UTC (expired 2 h ago)" in out
    assert "issued   2027-01-15 05:00:00 UTC (issued 3 h ago)" in out
    assert "verdict: REFRESH: the access token expired 2 h ago" in out
    assert "sub=0f1e-sub user=jane@example.com client_id=" + CID in out  # Cognito's `username`
    assert "offline (no IdP call, no signature check" in out
    assert f"session {session_id('opaque-refresh-' + 'r' * 40)}" in out


def test_within_before_expiry_is_refreshed() -> None:
    out = run(header(access_token=access(NOW + 240)))
    assert "(expires in 4 min)" in out
    assert "verdict: REFRESH: the access token expires in 4 min, within the 5 min refresh window" in out


def test_short_lived_tokens_use_half_their_lifetime() -> None:
    out = run(header(access_token=access(NOW + 240, iat=NOW - 60)))  # a 5-minute token
    assert "verdict: FORWARD" in out and "2 min refresh window (half the token's lifetime)" in out


def test_a_fresh_token_is_forwarded() -> None:
    out = run(header(access_token=access(NOW + 3000)))
    assert "verdict: FORWARD: the access token is fresh: it expires in 50 min" in out
    assert "refresh due in 45 min" in out


def test_no_refresh_token() -> None:
    out = run(header(access_token=access(NOW - 60), refresh_token=None))
    assert "refresh token: absent" in out
    assert "verdict: FORWARD: no refresh token, and the access token has expired" in out


def test_absent_access_token_with_refresh_token() -> None:
    out = run(header())
    assert "access token: absent" in out and "verdict: REFRESH: no access token" in out
    assert "missing: accessToken, idToken" in out


def test_not_a_jwt() -> None:
    out = run(header(access_token="not-a-jwt-at-all-but-long"))
    assert "not a JWT (no claims to read)" in out
    assert "verdict: FORWARD: the access token is not a JWT" in out


def test_a_token_for_another_client_is_no_session() -> None:
    out = run(header(access_token=access(NOW - 60, client_id="someone-else")))
    assert "verdict: FORWARD: the access token fails the claim checks (wrong_client)" in out
    assert "FORWARD" in run(header(access_token=access(NOW - 60, iss="https://evil.example")))


def test_no_auth_cookies() -> None:
    out = run("_ga=GA1.1.1; theme=dark")
    assert "cookies in the header: 2" in out and "verdict: FORWARD: no session" in out


def test_named_layout() -> None:
    cfg = parse_config(
        """
upstream: http://127.0.0.1:3000
provider: {kind: oidc, token_endpoint: http://idp.example/token, client_id: app}
cookies: {layout: named, names: {access_token: at, refresh_token: rt}}
""",
        env={},
    )
    names = {"username": "mallory", "preferred_username": "bob", "email": "bob@example.test"}
    out = run(f"at={jwt(sub='u1', exp=NOW - 5, iat=NOW - 305, **names)}; rt=opaque-refresh-{'r' * 40}", cfg)
    assert "  at  (" in out and "  rt  (" in out
    assert "access token: JWT, " in out and "sub=u1 user=bob" in out  # OIDC's claims, not Cognito's
    assert "verdict: REFRESH: the access token expired 5 s ago" in out


def test_client_id_from_the_cookie_names_when_the_config_has_none() -> None:
    cfg = parse_config("upstream: http://127.0.0.1:3000\n", env={})
    out = run(header(access_token=access(NOW - 60)), cfg)
    assert f"client id: {CID} (from the cookie names" in out and "verdict: REFRESH" in out
    assert "sub=0f1e-sub user=jane@example.com" in out  # no provider: any kind's claims name the user


@pytest.mark.parametrize(
    "pasted",
    [
        "a=1; b=2",
        "Cookie: a=1; b=2",
        "cookie:a=1; b=2\n",
        "  Cookie: a=1;\n b=2  \n",
    ],
)
def test_pasted_headers(pasted: str) -> None:
    assert cookie_header_from(pasted) in ("a=1; b=2", "a=1; b=2")


# ---------------------------------------------------------------------------------------------
# The CLI, with real tokens from moto's Cognito
# ---------------------------------------------------------------------------------------------


def write_config(tmp_path: Path, pool: PoolInfo) -> str:
    path = tmp_path / "cookieguard.yaml"
    path.write_text(
        yaml.safe_dump(
            {
                "upstream": "http://127.0.0.1:3000",
                "provider": {
                    "kind": "cognito",
                    "user_pool_id": pool.user_pool_id,
                    "client_id": pool.client_id,
                },
            }
        )
    )
    return str(path)


def user_header(user: CognitoUser) -> str:
    cookies = amplify_cookies(
        user.pool.client_id,
        user.username,
        access_token=user.access_token,
        id_token=user.id_token,
        refresh_token=user.refresh_token,
    )
    return "; ".join(f"{k}={v}" for k, v in cookies.items())


@pytest.fixture
def signed_in(
    cognito_idp: CognitoEmulator,
    cognito_pool: PoolInfo,
    make_cognito_user: Callable[..., CognitoUser],
    known_secrets: KnownSecrets,
) -> Callable[[int], CognitoUser]:
    def make(lifetime_s: int) -> CognitoUser:
        cognito_idp.access_token_lifetime_s = lifetime_s
        user = make_cognito_user(cognito_pool)
        cognito_idp.access_token_lifetime_s = 3600
        known_secrets.add(user.access_token, user.id_token, user.refresh_token)
        return user

    return make


def test_cli_reads_stdin_and_prints_no_token(tmp_path: Path, signed_in: Callable[[int], CognitoUser]) -> None:
    user = signed_in(-7200)
    path = write_config(tmp_path, user.pool)
    proc = run_cli("explain", "--config", path, input_text="Cookie: " + user_header(user) + "\n")
    assert proc.returncode == 0, proc.stderr
    assert f"user: {user.username}" in proc.stdout
    assert "(expired 2 h ago)" in proc.stdout
    assert "verdict: REFRESH: the access token expired 2 h ago" in proc.stdout
    assert "token_use=access" in proc.stdout and f"client_id={user.pool.client_id}" in proc.stdout
    assert "note: the proxy also verifies the signature" in proc.stdout


def test_cli_argument_and_fresh_session(tmp_path: Path, signed_in: Callable[[int], CognitoUser]) -> None:
    user = signed_in(3600)
    proc = run_cli("explain", "--config", write_config(tmp_path, user.pool), user_header(user))
    assert proc.returncode == 0
    assert "(expires in 59 min)" in proc.stdout or "(expires in 1 h)" in proc.stdout
    assert "verdict: FORWARD: the access token is fresh" in proc.stdout


def test_cli_default_config_path_and_env(tmp_path: Path, signed_in: Callable[[int], CognitoUser]) -> None:
    user = signed_in(-60)
    path = write_config(tmp_path, user.pool)
    proc = run_cli("explain", "-", input_text=user_header(user), env={"COOKIEGUARD_CONFIG": path})
    assert proc.returncode == 0 and f"config: {path}" in proc.stdout


def test_cli_errors(tmp_path: Path) -> None:
    empty = run_cli("explain", "--config", "config/cookieguard.yaml", input_text="\n")
    assert empty.returncode == 2 and "no Cookie header" in empty.stderr
    bad = tmp_path / "bad.yaml"
    bad.write_text("upstream: nope\n")
    broken = run_cli("explain", "--config", str(bad), "a=1")
    assert broken.returncode == 2 and "config error: upstream" in broken.stderr


def test_cli_runs_fast_and_offline(tmp_path: Path) -> None:
    # The provider endpoint points nowhere: explain must not call it (no IdP, no JWKS).
    path = tmp_path / "c.yaml"
    path.write_text(
        f"upstream: http://127.0.0.1:3000\nprovider: {{kind: cognito, user_pool_id: {POOL}, client_id: {CID},"
        " endpoint: http://192.0.2.1:9, jwks_url: http://192.0.2.1:9/jwks.json}\n"
    )
    started = time.monotonic()
    proc = run_cli("explain", "--config", str(path), header(access_token=access(time.time() - 60)))
    assert proc.returncode == 0 and "verdict: REFRESH" in proc.stdout
    assert time.monotonic() - started < 10


def test_explain_says_whether_the_session_is_proven() -> None:
    """Offline, a well-formed token of this client is "unknown" (the signature is not checked);
    a session with only a refresh token, or tokens of another client, is not proven."""
    good = run(header(access_token=access(NOW - 60)))
    assert "proven: unknown (the access token names this client and subject 0f1e-sub" in good
    bare = run(header())
    assert "proven: no (no access or id token beside the refresh token: budgeted per address)" in bare
    foreign = run(header(access_token=access(NOW - 60, client_id="another-client")))
    assert "proven: no (access token: wrong_client: budgeted per address)" in foreign
    unverified = run(header(access_token=access(NOW - 60)), config("verify: {signature: false}\n"))
    assert "proven: no (verify.signature is false: every refresh is budgeted as unproven)" in unverified


def test_supabase_layout() -> None:
    url = "https://abcdefghijklmnop.supabase.co"
    cfg = parse_config(
        f"upstream: http://127.0.0.1:3000\nprovider: {{kind: supabase, url: '{url}', anon_key: k}}\n"
        "cookies: {layout: supabase}\n",
        env={},
    )
    claims = {
        "iss": f"{url}/auth/v1",
        "aud": "authenticated",
        "sub": "u-1",
        "email": "jane@example.com",
        "exp": NOW + 120,
        "iat": NOW - 3480,
    }
    session = {
        "access_token": jwt(**claims),
        "refresh_token": "opaque-refresh-" + "r" * 40,
        "expires_at": NOW + 120,
        "expires_in": 3600,
        "token_type": "bearer",
        "user": {"id": "u-1", "email": "jane@example.com", "user_metadata": {"bio": "x" * 5000}},
    }
    attrs = CookieAttributes(**LAYOUTS["supabase"].attribute_defaults)
    cookies = session_cookies("sb-abcdefghijklmnop-auth-token", session, [], attrs)
    out = run("; ".join(f"{c.name}={c.value}" for c in cookies), cfg)
    assert "client id" not in out  # Supabase has none
    assert "user: jane@example.com" in out
    assert "  sb-abcdefghijklmnop-auth-token.0  (3180 chars)" in out and "auth-token.1  (" in out
    assert "session JSON fields: expires_at, expires_in, token_type, user" in out
    assert "expires_at 2027-01-15 08:02:00 UTC (expires in 2 min)" in out
    assert "sub=u-1 user=jane@example.com aud=authenticated" in out  # GoTrue's `email`
    assert "verdict: REFRESH: the access token expires in 2 min, within the 5 min refresh window" in out
    wrong = jwt(**(claims | {"aud": "anon"}))
    out = run(
        "; ".join(
            f"{c.name}={c.value}"
            for c in session_cookies(
                "sb-abcdefghijklmnop-auth-token", session | {"access_token": wrong}, [], attrs
            )
        ),
        cfg,
    )
    assert "fails the claim checks (wrong_audience)" in out
