"""A local Cognito-compatible identity provider for tests and `cookieguard demo`.

It is moto's Cognito server (`ThreadedMotoServer`) on 127.0.0.1 and an ephemeral port, with what
moto 5.2.5 lacks added to it *in this process only*:

- `GetTokensFromRefreshToken` (moto has only `InitiateAuth REFRESH_TOKEN_AUTH`), honouring the app
  client's `RefreshTokenRotation` setting: a rotating client answers with a new refresh token and
  the old one stops working after `RetryGracePeriodSeconds` (`RefreshTokenReuseException`, as AWS
  documents for GetTokensFromRefreshToken). `REFRESH_TOKEN_AUTH` on a rotating client is refused
  with `InvalidParameterException` (Cognito refuses it too; the exact code is not verified
  against a live pool).
- `RevokeToken` (moto answers 500 "not implemented"), so Amplify's sign-out works against it.
- a configurable token lifetime: moto mints every token with `exp = iat + 3600`.
- counters, injected latency and injected failures on refresh calls, for tests.

These are patches of the *emulator* (moto's classes, while at least one emulator runs; the
originals are put back when the last one stops), never of cookieguard. moto keeps its state in
process-wide globals, so the patches are too; each request is routed back to the emulator whose
port it arrived on, and each token to the emulator that created its pool.

What moto's tokens look like (verified with moto 5.2.5): RS256 with `kid: dummy` (every pool signs
with the same static key), `iss = https://cognito-idp.<region>.amazonaws.com/<poolId>` (the real
AWS URL, not the emulator's), access tokens carry `client_id`, `username`, `token_use: access`,
`scope`, `origin_jti`; id tokens `aud`, `cognito:username`, `token_use: id`. The JWKS is served at
`<endpoint>/<poolId>/.well-known/jwks.json`. Refresh tokens are opaque UUIDs.

moto is the `demo` optional extra (`pip install 'cookieguard[demo]'`); it is imported only when an
emulator starts.
"""

from __future__ import annotations

import json
import logging
import random
import socket
import threading
import time
import urllib.error
import urllib.request
import uuid
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from cookieguard.tokens.providers.cognito import CognitoConfig

_TARGET_PREFIX = "AWSCognitoIdentityProviderService."
_REFRESH_FLOWS = ("REFRESH_TOKEN_AUTH", "REFRESH_TOKEN")
_MOTO_DEFAULT_LIFETIME_S = 3600  # CognitoIdpUserPool.create_jwt(expires_in=60 * 60)


class EmulatorUnavailable(RuntimeError):
    """moto is not installed."""


class EmulatorError(Exception):
    """The emulator answered an admin call with an error. Only the code: messages can echo secrets."""

    def __init__(self, code: str, status: int) -> None:
        super().__init__(f"{code} (HTTP {status})")
        self.code = code
        self.status = status


@dataclass(frozen=True)
class PoolInfo:
    """A user pool with one app client, as created by `CognitoEmulator.create_pool`."""

    user_pool_id: str
    client_id: str
    client_secret: str | None = field(repr=False)
    region: str
    endpoint: str
    rotate_refresh_tokens: bool = False

    @property
    def issuer(self) -> str:
        """The `iss` of the tokens: moto writes the real AWS URL, not the emulator's."""
        return f"https://cognito-idp.{self.region}.amazonaws.com/{self.user_pool_id}"

    @property
    def jwks_url(self) -> str:
        return f"{self.endpoint}/{self.user_pool_id}/.well-known/jwks.json"

    def provider_yaml(self, *, timeout: str = "5s") -> dict[str, Any]:
        """The `provider:` section of a cookieguard YAML config pointing at this pool."""
        section: dict[str, Any] = {
            "kind": "cognito",
            "user_pool_id": self.user_pool_id,
            "client_id": self.client_id,
            "endpoint": self.endpoint,
            "jwks_url": self.jwks_url,
            "timeout": timeout,
        }
        if self.client_secret:
            section["client_secret"] = self.client_secret
        return section

    def provider_config(
        self, *, api: str = "get_tokens_from_refresh_token", timeout_s: float = 5.0
    ) -> CognitoConfig:
        """A cookieguard provider configuration pointing at this pool on the emulator."""
        return CognitoConfig(
            client_id=self.client_id,
            client_secret=self.client_secret,
            timeout_s=timeout_s,
            jwks_url=self.jwks_url,
            user_pool_id=self.user_pool_id,
            api=api,
            endpoint=self.endpoint,
        )


@dataclass(frozen=True)
class RefreshCall:
    """What one refresh request carried (never the token or the secret themselves)."""

    api: str  # GetTokensFromRefreshToken | InitiateAuth
    client_id: str | None
    device_key: str | None
    sent_secret: bool  # ClientSecret (GetTokensFromRefreshToken) or SECRET_HASH (InitiateAuth)
    # When it arrived (time.monotonic()): what the IdP's own per-second quota would count.
    at: float = field(default_factory=time.monotonic)


class CognitoEmulator:
    """moto's Cognito server with refresh-token extras; a context manager, or start()/stop().

    Test knobs, all safe to change while it runs (reset() puts them back):
    `access_token_lifetime_s` (lifetime of newly minted access and id tokens), `delay_s` (latency
    added to every refresh call), `fail_next` (one entry is consumed per refresh call: an int is an
    HTTP status answered with a gateway-like body, JSON for 500 and 429, HTML otherwise; a str is a
    Cognito error code answered as HTTP 400), `fail_ratio` (when `fail_next` is empty, that share
    of refresh calls, drawn from an RNG seeded with `fail_seed`, is answered with `fail_with`),
    `retry_after_s` (sent as Retry-After with injected failures); `injected_failures` counts them.
    A refresh call is `GetTokensFromRefreshToken` or `InitiateAuth` with a refresh flow.
    """

    def __init__(
        self,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        access_token_lifetime_s: int = _MOTO_DEFAULT_LIFETIME_S,
        rotate_refresh_tokens: bool = False,
        retry_grace_period_s: int = 0,
        region: str = "us-east-1",
    ) -> None:
        self.host = host
        self.port = port
        self.region = region
        self.rotate_refresh_tokens = rotate_refresh_tokens
        self.retry_grace_period_s = retry_grace_period_s
        self._default_lifetime_s = access_token_lifetime_s
        self.access_token_lifetime_s = access_token_lifetime_s
        self.delay_s = 0.0
        self.clock_offset_s = 0.0  # tokens are minted as if the clock were this far ahead
        self.fail_next: list[int | str] = []
        self.fail_ratio = 0.0
        self.fail_with: int | str = 500
        self.fail_seed = 0
        self._rng = random.Random(self.fail_seed)
        self.injected_failures = 0
        self.retry_after_s: float | None = None
        self._lock = threading.Lock()
        self._calls_changed = threading.Condition(self._lock)
        self._calls: list[RefreshCall] = []
        self._pool_ids: set[str] = set()
        self._server: Any = None

    # -- lifecycle ---------------------------------------------------------------------------

    def start(self) -> CognitoEmulator:
        if self._server is not None:
            return self
        try:
            from moto.server import ThreadedMotoServer
        except ImportError as exc:
            raise EmulatorUnavailable(
                "the Cognito emulator needs moto: pip install 'cookieguard[demo]'"
            ) from exc
        if self.port:
            _check_port_free(self.host, self.port)  # moto's server thread would hang, not raise
        _hooks.install()
        try:
            server = ThreadedMotoServer(ip_address=self.host, port=self.port, verbose=False)
            server.start()
        except BaseException:
            _hooks.uninstall()
            raise
        self._server = server
        self.port = server.get_host_and_port()[1]
        _hooks.register(self)
        return self

    def stop(self) -> None:
        server, self._server = self._server, None
        if server is None:
            return
        _hooks.unregister(self)
        try:
            server.stop()
        finally:
            _hooks.uninstall()

    def __enter__(self) -> CognitoEmulator:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    @property
    def endpoint(self) -> str:
        if self._server is None:
            raise RuntimeError("the emulator is not running: call start() first")
        return f"http://{self.host}:{self.port}"

    # -- pools, users, tokens ----------------------------------------------------------------

    def create_pool(
        self,
        *,
        with_secret: bool = False,
        rotate_refresh_tokens: bool | None = None,
        retry_grace_period_s: int | None = None,
        name: str | None = None,
    ) -> PoolInfo:
        """A user pool with one app client allowing USER_PASSWORD_AUTH and refresh."""
        rotate = self.rotate_refresh_tokens if rotate_refresh_tokens is None else rotate_refresh_tokens
        grace = self.retry_grace_period_s if retry_grace_period_s is None else retry_grace_period_s
        pool = self.call_api("CreateUserPool", {"PoolName": name or f"cookieguard-{uuid.uuid4().hex[:8]}"})
        pool_id = pool["UserPool"]["Id"]
        with self._lock:
            self._pool_ids.add(pool_id)
        client_request: dict[str, Any] = {
            "UserPoolId": pool_id,
            "ClientName": "app",
            "GenerateSecret": with_secret,
            "ExplicitAuthFlows": ["ALLOW_USER_PASSWORD_AUTH", "ALLOW_REFRESH_TOKEN_AUTH"],
        }
        if rotate:
            client_request["RefreshTokenRotation"] = {"Feature": "ENABLED", "RetryGracePeriodSeconds": grace}
        client = self.call_api("CreateUserPoolClient", client_request)["UserPoolClient"]
        return PoolInfo(
            user_pool_id=pool_id,
            client_id=client["ClientId"],
            client_secret=client.get("ClientSecret"),
            region=pool_id.split("_", 1)[0],
            endpoint=self.endpoint,
            rotate_refresh_tokens=rotate,
        )

    def create_user(self, pool: PoolInfo, username: str, password: str, email: str | None = None) -> None:
        """A confirmed user with a permanent password (no NEW_PASSWORD_REQUIRED challenge)."""
        attributes = [{"Name": "email", "Value": email}, {"Name": "email_verified", "Value": "true"}]
        self.call_api(
            "AdminCreateUser",
            {
                "UserPoolId": pool.user_pool_id,
                "Username": username,
                "MessageAction": "SUPPRESS",
                "UserAttributes": attributes if email else [],
            },
        )
        self.call_api(
            "AdminSetUserPassword",
            {"UserPoolId": pool.user_pool_id, "Username": username, "Password": password, "Permanent": True},
        )

    def sign_in(self, pool: PoolInfo, username: str, password: str) -> dict[str, Any]:
        """InitiateAuth USER_PASSWORD_AUTH; returns the AuthenticationResult (with RefreshToken)."""
        parameters = {"USERNAME": username, "PASSWORD": password}
        if pool.client_secret:
            parameters["SECRET_HASH"] = secret_hash_for(pool, username)
        answer = self.call_api(
            "InitiateAuth",
            {"ClientId": pool.client_id, "AuthFlow": "USER_PASSWORD_AUTH", "AuthParameters": parameters},
        )
        result: dict[str, Any] = answer["AuthenticationResult"]
        return result

    def revoke(self, pool: PoolInfo, refresh_token: str) -> None:
        """RevokeToken: later refreshes with this refresh token get NotAuthorizedException."""
        request = {"ClientId": pool.client_id, "Token": refresh_token}
        if pool.client_secret:
            request["ClientSecret"] = pool.client_secret
        self.call_api("RevokeToken", request)

    def call_api(self, operation: str, request: dict[str, Any]) -> dict[str, Any]:
        """One Cognito API call over HTTP, as any SDK would make it. Raises EmulatorError."""
        http_request = urllib.request.Request(
            self.endpoint + "/",
            data=json.dumps(request).encode(),
            method="POST",
            headers={
                "Content-Type": "application/x-amz-json-1.1",
                "X-Amz-Target": _TARGET_PREFIX + operation,
                # moto takes the region (which becomes the pool id's prefix) from the SigV4
                # credential scope; it does not check the signature.
                "Authorization": (
                    "AWS4-HMAC-SHA256 "
                    f"Credential=cookieguard/20260101/{self.region}/cognito-idp/aws4_request, "
                    "SignedHeaders=host, Signature=0"
                ),
            },
        )
        try:
            with urllib.request.urlopen(http_request, timeout=10) as response:
                body = response.read()
        except urllib.error.HTTPError as exc:
            code = exc.headers.get("x-amzn-ErrorType") or "UnknownError"
            raise EmulatorError(code.split(":", 1)[0], exc.code) from None
        answer: dict[str, Any] = json.loads(body) if body else {}
        return answer

    # -- observation and injection -----------------------------------------------------------

    @property
    def refresh_calls(self) -> int:
        with self._lock:
            return len(self._calls)

    @property
    def refresh_log(self) -> list[RefreshCall]:
        with self._lock:
            return list(self._calls)

    @property
    def refresh_calls_by_api(self) -> dict[str, int]:
        with self._lock:
            return dict(Counter(call.api for call in self._calls))

    def wait_for_refresh_calls(self, count: int, timeout_s: float = 5.0) -> bool:
        """Block until at least `count` refresh calls arrived (or the timeout passed)."""
        with self._calls_changed:
            return self._calls_changed.wait_for(lambda: len(self._calls) >= count, timeout=timeout_s)

    def reset(self) -> None:
        """Forget counted calls and injections; pools, users and tokens stay."""
        with self._lock:
            self._calls.clear()
            self.fail_next.clear()
            self.fail_ratio, self.fail_with, self.injected_failures = 0.0, 500, 0
            self._rng.seed(self.fail_seed)
            self.delay_s = 0.0
            self.clock_offset_s = 0.0
            self.retry_after_s = None
            self.access_token_lifetime_s = self._default_lifetime_s

    # -- called from moto's server threads ---------------------------------------------------

    def _owns_pool(self, pool_id: str) -> bool:
        return pool_id in self._pool_ids

    def _before_refresh(self, call: RefreshCall) -> Any:
        """Count the call, add latency, and answer an injected failure if one is queued."""
        with self._calls_changed:
            self._calls.append(call)
            self._calls_changed.notify_all()
            failure = self.fail_next.pop(0) if self.fail_next else None
            if failure is None and self.fail_ratio > 0 and self._rng.random() < self.fail_ratio:
                failure = self.fail_with
            self.injected_failures += failure is not None
            delay_s, retry_after_s = self.delay_s, self.retry_after_s
        if delay_s > 0:
            time.sleep(delay_s)  # a server thread per request: this delays only this call
        if failure is None:
            return None
        return _injected_failure(failure, retry_after_s)


def secret_hash_for(pool: PoolInfo, username: str) -> str:
    """SECRET_HASH for a pool's client (only for building test requests; see providers.cognito)."""
    from cookieguard.tokens.providers.cognito import secret_hash

    if pool.client_secret is None:
        raise ValueError("this pool's app client has no secret")
    return secret_hash(pool.client_secret, username, pool.client_id)


def _check_port_free(host: str, port: int) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        try:
            probe.bind((host, port))
        except OSError as exc:
            raise OSError(
                exc.errno, f"cannot start the Cognito emulator on {host}:{port}: {exc.strerror}"
            ) from None


def _injected_failure(failure: int | str, retry_after_s: float | None) -> tuple[str, dict[str, Any]]:
    """A response in moto's (body, headers-with-status) form."""
    headers: dict[str, Any] = {}
    if retry_after_s is not None:
        headers["Retry-After"] = str(int(retry_after_s))
    if isinstance(failure, str):
        body = json.dumps({"__type": failure, "message": "injected by the emulator"})
        headers.update(
            {"status": 400, "Content-Type": "application/x-amz-json-1.1", "x-amzn-ErrorType": failure}
        )
        return body, headers
    if failure in (500, 429):
        code = "InternalErrorException" if failure == 500 else "TooManyRequestsException"
        body = json.dumps({"__type": code, "message": "injected by the emulator"})
        headers.update(
            {"status": failure, "Content-Type": "application/x-amz-json-1.1", "x-amzn-ErrorType": code}
        )
        return body, headers
    # What a load balancer in front of the IdP answers: an HTML page, no AWS error type.
    body = f"<html><body><h1>{failure} Service Unavailable</h1></body></html>"
    headers.update({"status": failure, "Content-Type": "text/html"})
    return body, headers


# ---------------------------------------------------------------------------------------------
# The patches of moto, installed while at least one emulator runs
# ---------------------------------------------------------------------------------------------


class _Hooks:
    """Reference-counted patches of moto's Cognito classes and the emulators they report to."""

    _MISSING = object()

    def __init__(self) -> None:
        self._lock = threading.RLock()
        self._installed = 0
        self._saved: list[tuple[Any, str, Any]] = []
        self._emulators: dict[int, CognitoEmulator] = {}
        # refresh token -> (monotonic time it was rotated out, its moto record); see rotation.
        self.rotated_out: dict[str, tuple[float, tuple[str, str, str]]] = {}
        self.rotation_lock = threading.Lock()
        self._werkzeug_level = logging.NOTSET

    def register(self, emulator: CognitoEmulator) -> None:
        with self._lock:
            self._emulators[emulator.port] = emulator

    def unregister(self, emulator: CognitoEmulator) -> None:
        with self._lock:
            if self._emulators.get(emulator.port) is emulator:
                del self._emulators[emulator.port]

    def emulator_for_request(self, response: Any) -> CognitoEmulator | None:
        try:
            port = int(response.normalized_request.environ.get("SERVER_PORT", 0))
        except (AttributeError, TypeError, ValueError):
            return None
        with self._lock:
            return self._emulators.get(port)

    def emulator_for_pool(self, pool_id: str) -> CognitoEmulator | None:
        with self._lock:
            for emulator in self._emulators.values():
                if emulator._owns_pool(pool_id):
                    return emulator
        return None

    def install(self) -> None:
        with self._lock:
            self._installed += 1
            if self._installed > 1:
                return
            from moto.cognitoidp.models import CognitoIdpUserPool
            from moto.cognitoidp.responses import CognitoIdpResponse

            self._patch(CognitoIdpUserPool, "create_jwt", _make_create_jwt(CognitoIdpUserPool.create_jwt))
            self._patch(
                CognitoIdpResponse, "initiate_auth", _make_initiate_auth(CognitoIdpResponse.initiate_auth)
            )
            self._patch(CognitoIdpResponse, "get_tokens_from_refresh_token", _get_tokens_from_refresh_token)
            self._patch(CognitoIdpResponse, "revoke_token", _revoke_token)
            # werkzeug prints a line per request unless its logger has a level; keep it quiet
            # unless the host application configured it.
            werkzeug_logger = logging.getLogger("werkzeug")
            self._werkzeug_level = werkzeug_logger.level
            if werkzeug_logger.level == logging.NOTSET:
                werkzeug_logger.setLevel(logging.WARNING)

    def uninstall(self) -> None:
        with self._lock:
            self._installed -= 1
            if self._installed > 0:
                return
            for owner, name, original in reversed(self._saved):
                if original is self._MISSING:
                    delattr(owner, name)
                else:
                    setattr(owner, name, original)
            self._saved.clear()
            self.rotated_out.clear()
            logging.getLogger("werkzeug").setLevel(self._werkzeug_level)

    def _patch(self, owner: Any, name: str, replacement: Any) -> None:
        self._saved.append((owner, name, owner.__dict__.get(name, self._MISSING)))
        setattr(owner, name, replacement)


_hooks = _Hooks()


def _make_create_jwt(original: Any) -> Any:
    def create_jwt(
        pool: Any,
        client_id: str,
        username: str,
        token_use: str,
        expires_in: int | None = None,
        extra_data: dict[str, Any] | None = None,
    ) -> Any:
        emulator = _hooks.emulator_for_pool(pool.id)
        if expires_in is None:
            expires_in = emulator.access_token_lifetime_s if emulator else _MOTO_DEFAULT_LIFETIME_S
        offset = emulator.clock_offset_s if emulator else 0.0
        if not offset:
            return original(pool, client_id, username, token_use, expires_in, extra_data)
        # Mint under a shifted clock: moto reads `time.time()` of its models module for iat/exp.
        import moto.cognitoidp.models as models

        with _SHIFT_LOCK:
            real_time = getattr(models, "time")  # noqa: B009 - moto does not re-export it
            setattr(models, "time", _ShiftedTime(real_time.time, offset))  # noqa: B010
            try:
                return original(pool, client_id, username, token_use, expires_in, extra_data)
            finally:
                setattr(models, "time", real_time)  # noqa: B010

    return create_jwt


_SHIFT_LOCK = threading.Lock()


class _ShiftedTime:
    """Stands in for the `time` module inside moto's models while a token is minted."""

    def __init__(self, real: Any, offset_s: float) -> None:
        self._real = real
        self._offset_s = offset_s

    def time(self) -> float:
        return float(self._real()) + self._offset_s


def _before_refresh(response: Any, call: RefreshCall) -> Any:
    """The injected failure to answer this refresh with, or None: go on (also when no emulator
    of ours serves the request). Counts the call and adds the configured latency."""
    emulator = _hooks.emulator_for_request(response)
    return None if emulator is None else emulator._before_refresh(call)


def _make_initiate_auth(original: Any) -> Any:
    def initiate_auth(response: Any) -> Any:
        if response._get_param("AuthFlow") not in _REFRESH_FLOWS:
            return original(response)
        parameters = response._get_param("AuthParameters") or {}
        client_id = response._get_param("ClientId")
        call = RefreshCall(
            api="InitiateAuth",
            client_id=client_id,
            device_key=parameters.get("DEVICE_KEY"),
            sent_secret="SECRET_HASH" in parameters,
        )
        injected = _before_refresh(response, call)
        if injected is not None:
            return injected
        found = _find_client(client_id)
        if found is not None and _rotation(found[1])[0]:
            from moto.cognitoidp.exceptions import InvalidParameterException

            raise InvalidParameterException(
                "Refresh token rotation is enabled for this client: use GetTokensFromRefreshToken"
            )
        return original(response)

    return initiate_auth


def _get_tokens_from_refresh_token(response: Any) -> Any:
    """What Cognito's GetTokensFromRefreshToken answers, from moto's own token machinery."""
    from moto.cognitoidp.exceptions import NotAuthorizedError, ResourceNotFoundError
    from moto.core.exceptions import JsonRESTError
    from moto.core.responses import ActionResult

    client_id = response._get_param("ClientId")
    refresh_token = response._get_param("RefreshToken")
    client_secret = response._get_param("ClientSecret")
    call = RefreshCall(
        api="GetTokensFromRefreshToken",
        client_id=client_id,
        device_key=response._get_param("DeviceKey"),
        sent_secret=client_secret is not None,
    )
    injected = _before_refresh(response, call)
    if injected is not None:
        return injected

    found = _find_client(client_id)
    if found is None:
        raise ResourceNotFoundError(client_id)
    pool, client = found
    if client.generate_secret and client_secret != client.secret:
        raise NotAuthorizedError("Client secret is invalid")  # do not echo it, unlike moto
    if not isinstance(refresh_token, str) or not refresh_token:
        from moto.cognitoidp.exceptions import InvalidParameterException

        raise InvalidParameterException("Missing required parameter RefreshToken")
    rotating, grace_s = _rotation(client)

    with _hooks.rotation_lock:
        record = pool.refresh_tokens.get(refresh_token)
        if record is None and rotating and refresh_token in _hooks.rotated_out:
            rotated_at, old_record = _hooks.rotated_out[refresh_token]
            if time.monotonic() - rotated_at > grace_s:
                raise JsonRESTError(
                    "RefreshTokenReuseException", "This refresh token has already been rotated out"
                )
            # Within RetryGracePeriodSeconds the old token still works (even if its successor
            # was revoked meanwhile: the emulator does not track token families).
            record = old_record
        if record is None or record[0] != client.id or not record[1]:
            raise NotAuthorizedError("Invalid Refresh Token")
        _, username, origin_jti = record
        new_refresh_token = None
        if rotating:
            new_refresh_token, origin_jti = pool.create_refresh_token(client.id, username)
            if refresh_token in pool.refresh_tokens:
                del pool.refresh_tokens[refresh_token]
                _hooks.rotated_out[refresh_token] = (time.monotonic(), record)

    access_token, expires_in = pool.create_access_token(client.id, username, origin_jti=origin_jti)
    id_token, _ = pool.create_id_token(client.id, username, origin_jti=origin_jti)
    result: dict[str, Any] = {
        "AccessToken": access_token,
        "IdToken": id_token,
        "ExpiresIn": expires_in,
        "TokenType": "Bearer",
    }
    if new_refresh_token is not None:
        result["RefreshToken"] = new_refresh_token
    return ActionResult({"AuthenticationResult": result})


def _revoke_token(response: Any) -> Any:
    """RevokeToken: revoke a refresh token (RFC 7009: an unknown token is not an error)."""
    from moto.cognitoidp.exceptions import NotAuthorizedError, ResourceNotFoundError
    from moto.core.responses import EmptyResult

    client_id = response._get_param("ClientId")
    token = response._get_param("Token")
    found = _find_client(client_id)
    if found is None:
        raise ResourceNotFoundError(client_id)
    pool, client = found
    if client.generate_secret and response._get_param("ClientSecret") != client.secret:
        raise NotAuthorizedError("Client secret is invalid")
    record = pool.refresh_tokens.get(token)
    if record is not None:
        if record[0] != client.id:
            raise NotAuthorizedError("Token does not belong to this client")
        pool.refresh_tokens[token] = None  # how moto itself marks signed-out tokens
    return EmptyResult()


def _find_client(client_id: Any) -> tuple[Any, Any] | None:
    """(pool, app client) for a client id, searching every account and region as moto does."""
    from moto.cognitoidp.models import cognitoidp_backends

    if not isinstance(client_id, str):
        return None
    for account in list(cognitoidp_backends.values()):
        for backend in list(account.values()):
            for pool in list(backend.user_pools.values()):
                client = pool.clients.get(client_id)
                if client is not None:
                    return pool, client
    return None


def _rotation(client: Any) -> tuple[bool, float]:
    setting = client.extended_config.get("RefreshTokenRotation") or {}
    return setting.get("Feature") == "ENABLED", float(setting.get("RetryGracePeriodSeconds") or 0)
