"""A real OpenID Provider for the tests: panva's oidc-provider (tests/oidc_provider/server.js).

`oidc_idp` (session-scoped) starts one node process on an ephemeral port and yields an `OidcIdp`:
its issuer and token endpoint, the three test clients (one per `client_auth`), and the
server's test-only routes: `mint()` a refresh token without a browser, `stats()` of the token
endpoint, `reset()` the counters, `fault()` to make the next token requests fail.

Rotation is always on there and reuse detection revokes the whole grant, so a test that
spends a refresh token twice signs that session out: mint a fresh session per test.
`start_oidc_idp()` starts a private instance (e.g. with a different access-token TTL).
"""

from __future__ import annotations

import contextlib
import json
import os
import queue
import shutil
import subprocess
import tempfile
import threading
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import pytest

from cookieguard.tokens.providers.oidc import OidcConfig

SERVER_DIR = Path(__file__).resolve().parent.parent / "oidc_provider"
READY_TIMEOUT_S = 20.0
NPM_CI_TIMEOUT_S = 300.0


@dataclass(frozen=True)
class OidcClient:
    client_id: str
    client_secret: str | None = field(repr=False)
    client_auth: str  # client_secret_basic | client_secret_post | none


@dataclass
class OidcIdp:
    issuer: str
    port: int
    token_endpoint: str
    api_resource: str
    access_token_ttl_s: int
    clients: dict[str, OidcClient]  # by client_auth

    @property
    def jwks_url(self) -> str:
        return f"{self.issuer}/jwks"

    def client(self, client_auth: str = "client_secret_basic") -> OidcClient:
        return self.clients[client_auth]

    def provider_config(self, client_auth: str = "client_secret_basic", **overrides: Any) -> OidcConfig:
        """An OidcConfig for this IdP with an explicit token endpoint (pass issuer=... instead
        and token_endpoint=None to exercise discovery)."""
        client = self.client(client_auth)
        config = OidcConfig(
            client_id=client.client_id,
            client_secret=client.client_secret,
            client_auth=client_auth,
            token_endpoint=self.token_endpoint,
            jwks_url=self.jwks_url,
            timeout_s=5.0,
        )
        return replace(config, **overrides)

    def mint(
        self,
        account_id: str = "alice",
        *,
        client_auth: str = "client_secret_basic",
        resource: bool = False,
        preferred_username: str | None = None,
    ) -> dict[str, Any]:
        """A new session: {refresh_token, access_token, id_token, expires_in, grant_id}.

        `resource=True` binds the grant to the API resource, so its access tokens are JWTs
        (`typ: at+jwt`, `aud` = api_resource); otherwise they are opaque. With
        `preferred_username` the grant has the `profile` scope: its id tokens carry that claim
        beside `email` (`<account_id>@example.test`), as Keycloak's do.
        """
        body = {
            "account_id": account_id,
            "client_id": self.client(client_auth).client_id,
            "resource": resource,
        }
        return self._call("POST", "/test/mint", {**body, "preferred_username": preferred_username})

    def stats(self) -> dict[str, Any]:
        """Token endpoint counters since the last reset: token_requests, refresh_requests,
        refresh_success, invalid_grant, grants_revoked, errors{code: n}, faults_injected."""
        return self._call("GET", "/test/stats")

    def reset(self) -> None:
        """Zero the counters and clear any pending fault (sessions stay valid)."""
        self._call("POST", "/test/reset", {})

    def fault(self, status: int = 503, *, delay_ms: int = 0, times: int = 1, body: str | None = None) -> None:
        """The next `times` token requests answer `status` after `delay_ms`, without reaching
        the provider (so no refresh token is spent)."""
        spec: dict[str, Any] = {"status": status, "delay_ms": delay_ms, "times": times}
        if body is not None:
            spec["body"] = body
        self._call("POST", "/test/fault", spec)

    def _call(self, method: str, path: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(
            self.issuer + path, data=data, method=method, headers={"Content-Type": "application/json"}
        )
        with urllib.request.urlopen(request, timeout=10) as response:
            result: dict[str, Any] = json.loads(response.read())
            return result


def _ensure_node_modules() -> None:
    if (SERVER_DIR / "node_modules" / "oidc-provider").is_dir():
        return
    npm = shutil.which("npm")
    if npm is None:
        pytest.fail("npm not found on PATH: it is needed to install tests/oidc_provider (npm ci)")
    result = subprocess.run(
        [npm, "ci", "--no-audit", "--no-fund", "--loglevel=error"],
        cwd=SERVER_DIR,
        capture_output=True,
        text=True,
        timeout=NPM_CI_TIMEOUT_S,
        check=False,
    )
    if result.returncode != 0:
        pytest.fail(f"npm ci in {SERVER_DIR} failed ({result.returncode}):\n{result.stderr[-2000:]}")


@contextlib.contextmanager
def start_oidc_idp(
    *, access_token_ttl_s: int = 60, port: int = 0, login_client: dict[str, Any] | None = None
) -> Iterator[OidcIdp]:
    """Run server.js on `port` (0: an ephemeral one) until the block ends. `login_client`
    ({client_id, client_secret, redirect_uris}) adds a client that a browser signs in with (the
    authorization code flow; the server signs in `login_hint` without a page)."""
    node = shutil.which("node")
    if node is None:
        pytest.fail("node not found on PATH: Node 20 is part of this machine and runs the test IdP")
    _ensure_node_modules()
    env = {**os.environ, "OIDC_ACCESS_TOKEN_TTL": str(access_token_ttl_s)}
    if login_client is not None:
        env["OIDC_LOGIN_CLIENT"] = json.dumps(login_client)
    # stderr goes to a file: a pipe nobody reads could fill up and stall the server.
    with tempfile.TemporaryFile() as stderr:
        process = subprocess.Popen(
            [node, "server.js", str(port)], cwd=SERVER_DIR, env=env, stdout=subprocess.PIPE, stderr=stderr
        )
        try:
            ready = _wait_ready(process, stderr)
            yield OidcIdp(
                issuer=ready["issuer"],
                port=ready["port"],
                token_endpoint=ready["token_endpoint"],
                api_resource=ready["api_resource"],
                access_token_ttl_s=ready["access_token_ttl"],
                clients={
                    c["token_endpoint_auth_method"]: OidcClient(
                        c["client_id"], c["client_secret"], c["token_endpoint_auth_method"]
                    )
                    for c in ready["clients"]
                },
            )
        finally:
            _stop(process)


def _wait_ready(process: subprocess.Popen[bytes], stderr: Any) -> dict[str, Any]:
    lines: queue.Queue[bytes] = queue.Queue()

    def pump() -> None:
        # Keeps draining stdout for the life of the process, so it can never block on a full pipe.
        assert process.stdout is not None
        with contextlib.suppress(ValueError, OSError):  # the pipe is closed by _stop()
            for line in process.stdout:
                lines.put(line)
        lines.put(b"")

    threading.Thread(target=pump, name="oidc-idp-stdout", daemon=True).start()
    deadline = time.monotonic() + READY_TIMEOUT_S
    while True:
        remaining = deadline - time.monotonic()
        try:
            line = lines.get(timeout=max(remaining, 0.01))
        except queue.Empty:
            line = None
        if line:
            with contextlib.suppress(ValueError):
                message = json.loads(line)
                if isinstance(message, dict) and message.get("ready"):
                    return message
            continue
        # EOF (the process died) or the deadline passed
        _stop(process)
        stderr.seek(0)
        tail = stderr.read()[-3000:].decode(errors="replace")
        why = "exited" if line == b"" else f"was not ready within {READY_TIMEOUT_S:.0f}s"
        pytest.fail(f"test OIDC provider {why} (status {process.returncode}); stderr:\n{tail}")


def _stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=5)
    if process.stdout is not None:
        process.stdout.close()


@pytest.fixture(scope="session")
def oidc_idp() -> Iterator[OidcIdp]:
    with start_oidc_idp() as idp:
        yield idp
