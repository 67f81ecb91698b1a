"""Amazon Cognito user pools: turn a refresh token into fresh tokens (docs/behaviour.md §6).

Two APIs, chosen by `provider.api`:

- `get_tokens_from_refresh_token` (default): what Amplify >= 6.15.4 calls, and the only one that
  works when the app client rotates refresh tokens. The client secret, if any, is sent as is.
- `initiate_auth`: `REFRESH_TOKEN_AUTH`. A client secret is proven with SECRET_HASH, which needs
  the username (Cognito's own username for the user: the access token's `username` claim, which
  Amplify stores as `LastAuthUser`).

Outcomes follow what Cognito and Amplify treat as a dead session: only HTTP 400 with one of
`REJECTING_ERRORS` raises `RefreshRejected`; everything else raises `RefreshUnavailable`, so an
IdP outage, throttling or a misconfiguration never signs anybody out. One blind spot is Cognito's,
not ours: a wrong client secret is also answered with `NotAuthorizedException`, so it looks like a
dead session; `cookieguard check` cannot detect it without a live refresh token.

Nothing here logs, and no exception carries the IdP's error message: Cognito-compatible servers
echo request values in it (moto echoes a wrong SECRET_HASH). Exceptions carry the error code, the
HTTP status and Retry-After, and are raised `from None` so no chained exception carries the body.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, ClassVar

import aiohttp

from cookieguard.schema import Section, http_url, nonempty_string, one_of
from cookieguard.tokens.claims import Expectations, TokenKind
from cookieguard.tokens.providers.base import (
    NO_CONTEXT,
    ProviderConfig,
    RefreshRejected,
    RefreshUnavailable,
    TokenSet,
    idp_timeout,
    parse_retry_after,
)

# The refresh context (Session.refresh_context) the amplify layout reads from Amplify's cookies.
USERNAME = "username"  # LastAuthUser: Cognito's own username, for SECRET_HASH
DEVICE_KEY = "device_key"  # `<username>.deviceKey`: a remembered device

TARGET_PREFIX = "AWSCognitoIdentityProviderService."
CONTENT_TYPE = "application/x-amz-json-1.1"

# The errors after which Amplify clears its tokens (tokenOrchestrator): the session is over.
REJECTING_ERRORS = frozenset(
    {
        "NotAuthorizedException",
        "TokenRevokedException",
        "UserNotFoundException",
        "PasswordResetRequiredException",
        "UserNotConfirmedException",
        "RefreshTokenReuseException",
    }
)

_MAX_BODY_BYTES = 256 * 1024  # a token response is a few KiB; anything this big is not Cognito
_ERROR_CODE = re.compile(r"^[A-Za-z][A-Za-z0-9_.]{0,99}$")
_POOL_ID = re.compile(r"^([a-z]{2}(?:-[a-z]+)+-\d+)_[0-9A-Za-z]+$")
APIS = ("get_tokens_from_refresh_token", "initiate_auth")


@dataclass(frozen=True, kw_only=True)
class CognitoConfig(ProviderConfig):
    """`provider.kind: cognito`: an Amazon Cognito user pool and one of its app clients."""

    kind: ClassVar[str] = "cognito"
    yaml_keys: ClassVar[tuple[str, ...]] = ("user_pool_id", "api", "endpoint")
    audience_unused: ClassVar[str | None] = "Cognito tokens are checked against client_id"
    # Cognito's own username: `username` in access tokens, `cognito:username` in id tokens.
    user_claims: ClassVar[tuple[str, ...]] = ("username", "cognito:username")

    user_pool_id: str  # <region>_<id>, checked by the loader
    api: str = APIS[0]
    endpoint: str | None = None  # overrides the region's endpoint: an emulator, a VPC endpoint

    @classmethod
    def load(cls, s: Section, common: dict[str, Any]) -> CognitoConfig | None:
        pool_id = s.get("user_pool_id", nonempty_string, "")
        if not s.has("user_pool_id"):
            s.error("user_pool_id", "required for kind cognito (e.g. us-east-1_AbCdEf123)")
        elif pool_id and not _POOL_ID.match(pool_id):
            s.error("user_pool_id", f"not a Cognito user pool id (<region>_<id>): {pool_id!r}")
        api = s.get("api", one_of(*APIS), cls.api)
        endpoint = s.get("endpoint", http_url, None)
        return cls(user_pool_id=pool_id, api=api, endpoint=endpoint, **common)

    @property
    def region(self) -> str:
        return self.user_pool_id.partition("_")[0]

    @property
    def issuer(self) -> str:
        return f"https://cognito-idp.{self.region}.amazonaws.com/{self.user_pool_id}"

    @property
    def default_jwks_url(self) -> str:
        return self.jwks_url or f"{self.issuer}/.well-known/jwks.json"

    @property
    def refresh_endpoint(self) -> str:
        return self.endpoint or f"https://cognito-idp.{self.region}.amazonaws.com/"

    def expectations(self, token: TokenKind, *, audience: str | None) -> Expectations:
        if token == "access":
            # Cognito access tokens have no `aud`; they name their app client in `client_id`.
            return Expectations(issuers=(self.issuer,), token_use="access", client_id=self.client_id)
        return Expectations(issuers=(self.issuer,), token_use="id", audience=self.client_id)

    def make_provider(self, session: aiohttp.ClientSession) -> CognitoProvider:
        return CognitoProvider(self, session)


def secret_hash(client_secret: str, username: str, client_id: str) -> str:
    """Cognito's SECRET_HASH: base64(HMAC-SHA256(key=client secret, message=username + client id))."""
    digest = hmac.new(client_secret.encode(), (username + client_id).encode(), hashlib.sha256).digest()
    return base64.b64encode(digest).decode()


def build_request(
    config: CognitoConfig, refresh_token: str, *, username: str | None, device_key: str | None
) -> tuple[str, dict[str, Any]]:
    """(X-Amz-Target, JSON body) of the refresh call for the configured API."""
    if config.api == "initiate_auth":
        parameters = {"REFRESH_TOKEN": refresh_token}
        if config.client_secret:
            if not username:
                # Without a username there is no SECRET_HASH and Cognito would answer
                # NotAuthorizedException, which reads as a dead session. It is our input that is
                # incomplete, not the session: keep it, and do not ask the IdP.
                raise RefreshUnavailable("missing_username")
            parameters["SECRET_HASH"] = secret_hash(config.client_secret, username, config.client_id)
        if device_key:
            parameters["DEVICE_KEY"] = device_key
        body: dict[str, Any] = {
            "AuthFlow": "REFRESH_TOKEN_AUTH",
            "ClientId": config.client_id,
            "AuthParameters": parameters,
        }
        return TARGET_PREFIX + "InitiateAuth", body
    body = {"ClientId": config.client_id, "RefreshToken": refresh_token}
    if config.client_secret:
        body["ClientSecret"] = config.client_secret
    if device_key:
        body["DeviceKey"] = device_key
    return TARGET_PREFIX + "GetTokensFromRefreshToken", body


def parse_error_code(headers: Mapping[str, str], body: Any) -> str | None:
    """The AWS JSON protocol error code: `x-amzn-ErrorType`, else the body's `__type`.

    Real Cognito may send `NotAuthorizedException:http://internal.amazon.com/...` or a shape id
    such as `com.amazonaws.cognito#NotAuthorizedException`: cut at `,`/`:` and keep what follows
    `#`, as AWS SDKs do. Anything that does not look like a code is dropped, so no odd header
    value ever reaches a log line.
    """
    raw = headers.get("x-amzn-ErrorType")
    if not raw and isinstance(body, dict):
        raw = body.get("__type") or body.get("code")
    if not isinstance(raw, str) or not raw:
        return None
    code = re.split(r"[,:]", raw, maxsplit=1)[0].strip()
    if "#" in code:
        code = code.rsplit("#", 1)[1]
    return code if _ERROR_CODE.match(code) else None


def classify_error(
    status: int, code: str | None, retry_after_s: float | None
) -> RefreshRejected | RefreshUnavailable:
    """Only a 400 with a session-ending code rejects; every other answer is IdP trouble."""
    if status == 400 and code in REJECTING_ERRORS:
        return RefreshRejected(code, status=status)
    return RefreshUnavailable(code or f"http_{status}", status=status, retry_after_s=retry_after_s)


def parse_token_set(body: Any, sent_refresh_token: str) -> TokenSet:
    """The AuthenticationResult of a successful refresh, or RefreshUnavailable('bad_response')."""
    result = body.get("AuthenticationResult") if isinstance(body, dict) else None
    if not isinstance(result, dict):
        raise RefreshUnavailable("bad_response", status=200)
    access_token = result.get("AccessToken")
    if not isinstance(access_token, str) or not access_token:
        raise RefreshUnavailable("bad_response", status=200)
    id_token = result.get("IdToken")
    refresh_token = result.get("RefreshToken")
    expires_in = result.get("ExpiresIn")
    return TokenSet(
        access_token=access_token,
        id_token=id_token if isinstance(id_token, str) and id_token else None,
        # Rotation only when Cognito hands out a different token: echoing the one we sent back
        # is not a rotation.
        refresh_token=(
            refresh_token
            if isinstance(refresh_token, str) and refresh_token and refresh_token != sent_refresh_token
            else None
        ),
        expires_in_s=expires_in if isinstance(expires_in, int) and not isinstance(expires_in, bool) else None,
    )


class CognitoProvider:
    """Refreshes Cognito user pool tokens over one shared aiohttp session."""

    def __init__(self, config: CognitoConfig, session: aiohttp.ClientSession) -> None:
        self._config = config
        self._session = session
        self._url = config.refresh_endpoint
        self._timeout = idp_timeout(config.timeout_s)

    async def resolve_jwks_url(self) -> str:
        return self._config.default_jwks_url

    async def refresh(self, refresh_token: str, context: Mapping[str, str] = NO_CONTEXT) -> TokenSet:
        """One refresh. `context` is what the amplify layout read: the user's `username` (for
        SECRET_HASH) and `device_key` (for a remembered device), each when present."""
        target, body = build_request(
            self._config, refresh_token, username=context.get(USERNAME), device_key=context.get(DEVICE_KEY)
        )
        status, headers, payload = await self._post(target, body)
        if 200 <= status < 300:
            return parse_token_set(payload, refresh_token)
        retry_after_s = parse_retry_after(headers.get("Retry-After"), datetime.now(UTC))
        raise classify_error(status, parse_error_code(headers, payload), retry_after_s)

    async def _post(self, target: str, body: dict[str, Any]) -> tuple[int, Mapping[str, str], Any]:
        """(status, headers, decoded JSON or None). Transport failures raise RefreshUnavailable."""
        headers = {"Content-Type": CONTENT_TYPE, "X-Amz-Target": target, "Cache-Control": "no-store"}
        data = json.dumps(body, separators=(",", ":")).encode()
        try:
            async with self._session.post(
                self._url, data=data, headers=headers, timeout=self._timeout
            ) as response:
                raw = await _read_limited(response)
                status, response_headers = response.status, response.headers
        except TimeoutError:
            raise RefreshUnavailable("timeout") from None
        except (aiohttp.ClientSSLError, aiohttp.ServerFingerprintMismatch):
            raise RefreshUnavailable("tls_error") from None
        except aiohttp.ClientConnectionError:
            raise RefreshUnavailable("connection_error") from None
        except (aiohttp.ClientPayloadError, aiohttp.ClientResponseError):
            raise RefreshUnavailable("bad_response") from None
        except aiohttp.ClientError:
            raise RefreshUnavailable("client_error") from None
        try:
            payload = json.loads(raw) if raw else None
        except ValueError:  # not JSON: an HTML error page from a load balancer, or garbage
            payload = None
        if payload is None and 200 <= status < 300:
            raise RefreshUnavailable("bad_response", status=status)
        return status, response_headers, payload


async def _read_limited(response: aiohttp.ClientResponse) -> bytes | None:
    """The body, or None when it is larger than any Cognito answer can be."""
    if (response.content_length or 0) > _MAX_BODY_BYTES:
        return None
    chunks: list[bytes] = []
    size = 0
    async for chunk in response.content.iter_chunked(64 * 1024):
        size += len(chunk)
        if size > _MAX_BODY_BYTES:
            return None
        chunks.append(chunk)
    return b"".join(chunks)
