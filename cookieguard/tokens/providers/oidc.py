"""A generic OpenID Connect / OAuth 2.0 client for the refresh-token grant (RFC 6749 section 6).

One job: turn a refresh token into a `TokenSet`, or into one of the two exceptions of
`providers.base`, which are chosen from the parsed IdP answer, never from its message.

Rules that shape this module:

- A refresh is sent exactly once. Providers with rotation and reuse detection (oidc-provider,
  Auth0, Okta, Keycloak) revoke the whole grant when a rotated-out refresh token is presented
  again, so a "harmless" retry after a timeout can sign the user out. Redirects are not followed
  either: a 307/308 would re-send the refresh token, to a place nobody configured.
- Only `invalid_grant` (RFC 6749 5.2: the refresh token is invalid, expired or revoked) ends a
  session. `invalid_client`, `unauthorized_client`, `invalid_request` and friends describe the
  proxy's own configuration (a typo in the client secret, a wrong auth method): treating them as
  "session dead" would sign out every user at once because of an operator's mistake, and the
  sessions would still be valid once the config is fixed. They are `RefreshUnavailable`, with the
  IdP's error code so the logs say what to fix.
- The IdP's `error_description` and body text never reach an exception: they can echo secrets.
"""

from __future__ import annotations

import asyncio
import base64
import re
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, ClassVar
from urllib.parse import quote_plus, urlsplit

import aiohttp

from cookieguard.schema import Section, http_url, one_of
from cookieguard.tokens.claims import Expectations, TokenKind
from cookieguard.tokens.providers.base import (
    NO_CONTEXT,
    ProviderConfig,
    RefreshRejected,
    RefreshUnavailable,
    TokenSet,
    expires_in_s,
    idp_timeout,
    json_object,
    parse_retry_after,
    transport_errors,
)

# Token responses are a few kB of JWTs; anything far larger is not a token response.
MAX_RESPONSE_BYTES = 1024 * 1024
# After a failed discovery, refreshes fail fast for this long instead of each asking the IdP.
DISCOVERY_RETRY_S = 5.0
# RFC 6749 5.2 limits error codes to printable ASCII; we are stricter so a hostile or broken IdP
# cannot put arbitrary text into our logs through the code.
_ERROR_CODE = re.compile(r"[A-Za-z0-9_.\-]{1,64}")
CLIENT_AUTH_METHODS = ("client_secret_basic", "client_secret_post", "none")


@dataclass(frozen=True, kw_only=True)
class OidcConfig(ProviderConfig):
    """`provider.kind: oidc`: any OpenID Connect / OAuth 2.0 IdP with the refresh-token grant."""

    kind: ClassVar[str] = "oidc"
    yaml_keys: ClassVar[tuple[str, ...]] = ("issuer", "token_endpoint", "client_auth")
    opaque_access_tokens: ClassVar[bool] = True
    # OIDC Core 5.1's standard claims: Keycloak, Okta and oidc-provider (with the profile scope)
    # issue `preferred_username`; Auth0 and Google only `email`.
    user_claims: ClassVar[tuple[str, ...]] = ("preferred_username", "email")

    issuer: str | None = None  # discovery finds token_endpoint and jwks_uri from it
    token_endpoint: str | None = None
    client_auth: str = CLIENT_AUTH_METHODS[0]  # "none" when there is no client secret

    @classmethod
    def load(cls, s: Section, common: dict[str, Any]) -> OidcConfig | None:
        issuer = s.get("issuer", http_url, None)
        token_endpoint = s.get("token_endpoint", http_url, None)
        secret = common.get("client_secret")
        client_auth = s.get(
            "client_auth", one_of(*CLIENT_AUTH_METHODS), cls.client_auth if secret else "none"
        )
        if not issuer and not token_endpoint and not (s.has("issuer") or s.has("token_endpoint")):
            s.error("token_endpoint", "kind oidc needs token_endpoint or issuer")
        if client_auth != "none" and not secret:
            s.error("client_secret", f"required with client_auth {client_auth}")
        return cls(issuer=issuer, token_endpoint=token_endpoint, client_auth=client_auth, **common)

    @property
    def refresh_endpoint(self) -> str:
        return self.token_endpoint or f"{self.issuer} (discovery)"

    def expectations(self, token: TokenKind, *, audience: str | None) -> Expectations:
        # With only `token_endpoint` configured we do not know the issuer, so `iss` cannot be
        # checked; the JWKS (which the operator pointed us at) still has to have signed the token.
        issuers: tuple[str, ...] | None = None
        if self.issuer:
            # The config loader drops a trailing "/" from a bare-host URL, but issuers such as
            # Auth0's end in "/", and `iss` must match the issuer string exactly (OIDC Discovery 4.3).
            bare = self.issuer.rstrip("/")
            issuers = (bare, bare + "/")
        if token == "access":
            # Access tokens are meant for an API, not for us: their `aud` is the API's, if anything.
            return Expectations(issuers=issuers, audience=audience)
        return Expectations(issuers=issuers, audience=self.client_id, authorized_party=self.client_id)

    def make_provider(self, session: aiohttp.ClientSession) -> OidcProvider:
        return OidcProvider(self, session)


class OidcProvider:
    """Refreshes tokens at an OIDC token endpoint, configured or discovered from the issuer."""

    def __init__(
        self,
        config: OidcConfig,
        session: aiohttp.ClientSession,
        *,
        discovery_retry_s: float = DISCOVERY_RETRY_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if not config.token_endpoint and not config.issuer:
            raise ValueError("OidcProvider needs token_endpoint or issuer")
        self._config = config
        self._session = session
        self._timeout = idp_timeout(config.timeout_s)
        self._token_endpoint = config.token_endpoint
        self._jwks_url = config.jwks_url
        self._discovered = False
        self._discovery_lock = asyncio.Lock()
        self._discovery_retry_s = discovery_retry_s
        self._discovery_failed_at: float | None = None
        self._discovery_error = "discovery_failed"
        self._clock = clock

    @property
    def token_endpoint(self) -> str | None:
        """The configured or discovered token endpoint (None until discovery ran)."""
        return self._token_endpoint

    @property
    def jwks_url(self) -> str | None:
        """The configured `jwks_url`, else the discovered `jwks_uri` (None until discovery ran)."""
        return self._jwks_url

    @property
    def needs_discovery(self) -> bool:
        return (
            not self._discovered
            and self._config.issuer is not None
            and (self._token_endpoint is None or self._jwks_url is None)
        )

    async def resolve_jwks_url(self) -> str | None:
        """`jwks_url`, running discovery first if only the issuer can tell it."""
        if self._jwks_url is None and self.needs_discovery:
            await self.discover()
        return self._jwks_url

    async def discover(self) -> None:
        """Read `<issuer>/.well-known/openid-configuration` once and keep the endpoints.

        Raises RefreshUnavailable (`discovery_<code>`) on failure. A failure is remembered for
        `discovery_retry_s` only, so an IdP that was down at start-up is found once it is back.
        """
        if not self.needs_discovery:
            return
        async with self._discovery_lock:
            # Someone else may have finished (or failed) discovery while we waited for the lock.
            if not self.needs_discovery:
                return
            if self._discovery_failed_at is not None:
                wait_s = self._discovery_failed_at + self._discovery_retry_s - self._clock()
                if wait_s > 0:
                    raise RefreshUnavailable(self._discovery_error, retry_after_s=wait_s)
            try:
                metadata = await self._fetch_metadata()
            except RefreshUnavailable as exc:
                self._discovery_failed_at = self._clock()
                self._discovery_error = exc.code
                raise
            self._discovery_failed_at = None
            if self._token_endpoint is None:
                self._token_endpoint = metadata["token_endpoint"]
            if self._jwks_url is None:
                self._jwks_url = metadata.get("jwks_uri")
            self._discovered = True

    async def refresh(self, refresh_token: str, context: Mapping[str, str] = NO_CONTEXT) -> TokenSet:
        """One `grant_type=refresh_token` request (no refresh context)."""
        if self._token_endpoint is None:
            await self.discover()
        assert self._token_endpoint is not None  # discover() sets it or raises
        form = {"grant_type": "refresh_token", "refresh_token": refresh_token}
        headers = {"Accept": "application/json"}
        self._authenticate(form, headers)
        with transport_errors():
            async with self._session.post(
                self._token_endpoint,
                data=form,
                headers=headers,
                timeout=self._timeout,
                allow_redirects=False,
                raise_for_status=False,  # the status is classified below, whatever the session says
            ) as response:
                status = response.status
                retry_after_s = parse_retry_after(response.headers.get("Retry-After"), datetime.now(UTC))
                body = await _read_limited(response)
        return _token_set(status, body, refresh_token, retry_after_s)

    def _authenticate(self, form: dict[str, str], headers: dict[str, str]) -> None:
        client_id = self._config.client_id
        secret = self._config.client_secret or ""
        match self._config.client_auth:
            case "client_secret_basic":
                # RFC 6749 2.3.1: id and secret are form-urlencoded *before* base64. IdPs that
                # follow it (oidc-provider does) reject or mis-read secrets with `:`, `%`, `+`.
                pair = f"{quote_plus(client_id)}:{quote_plus(secret)}"
                headers["Authorization"] = "Basic " + base64.b64encode(pair.encode()).decode("ascii")
            case "client_secret_post":
                form["client_id"] = client_id
                form["client_secret"] = secret
            case _:  # "none": a public client identifies itself, it cannot authenticate
                form["client_id"] = client_id

    async def _fetch_metadata(self) -> Mapping[str, Any]:
        issuer = self._config.issuer
        assert issuer is not None
        # OpenID Connect Discovery 1.0 section 4: drop a trailing "/" before appending.
        url = issuer.rstrip("/") + "/.well-known/openid-configuration"
        with transport_errors("discovery_"):
            async with self._session.get(
                url, headers={"Accept": "application/json"}, timeout=self._timeout, raise_for_status=False
            ) as response:
                status = response.status
                body = await _read_limited(response)
        if status != 200:
            raise RefreshUnavailable(f"discovery_http_{status}", status=status)
        metadata = None if body is None else json_object(body)
        if metadata is None or not _is_http_url(metadata.get("token_endpoint")):
            raise RefreshUnavailable("discovery_bad_response", status=status)
        jwks_uri = metadata.get("jwks_uri")
        if jwks_uri is not None and not _is_http_url(jwks_uri):
            raise RefreshUnavailable("discovery_bad_response", status=status)
        # Discovery 4.3: the document must name the issuer we asked. Compared without a trailing
        # "/" because providers disagree on it (Auth0 has one) and operators copy either form.
        advertised = metadata.get("issuer")
        if not isinstance(advertised, str) or advertised.rstrip("/") != issuer.rstrip("/"):
            raise RefreshUnavailable("discovery_issuer_mismatch", status=status)
        return metadata


def _token_set(
    status: int, body: bytes | None, old_refresh_token: str, retry_after_s: float | None
) -> TokenSet:
    """Classify a token endpoint answer (RFC 6749 5.1 success, 5.2 error)."""
    if body is None:
        raise RefreshUnavailable("bad_response", status=status)
    if status == 200:
        payload = json_object(body)
        access_token = payload.get("access_token") if payload else None
        if payload is None or not isinstance(access_token, str) or not access_token:
            raise RefreshUnavailable("bad_response", status=status)
        id_token = payload.get("id_token")
        new_refresh_token = payload.get("refresh_token")
        # Only a different value is a rotation; IdPs without rotation may echo the old one.
        rotated = isinstance(new_refresh_token, str) and new_refresh_token not in ("", old_refresh_token)
        return TokenSet(
            access_token=access_token,
            id_token=id_token if isinstance(id_token, str) and id_token else None,
            refresh_token=new_refresh_token if rotated else None,
            expires_in_s=_expires_in_s(payload.get("expires_in")),
        )
    error = _error_code(body)
    if error == "invalid_grant" and status in (400, 401):
        raise RefreshRejected("invalid_grant", status=status)
    if status == 429 or status >= 500:
        raise RefreshUnavailable(f"http_{status}", status=status, retry_after_s=retry_after_s)
    # Any other refusal is about the client, not the session (see the module docstring).
    raise RefreshUnavailable(error or f"http_{status}", status=status, retry_after_s=retry_after_s)


async def _read_limited(response: aiohttp.ClientResponse) -> bytes | None:
    """The body, or None when it is larger than any token response could be."""
    body = await response.content.read(MAX_RESPONSE_BYTES + 1)
    return None if len(body) > MAX_RESPONSE_BYTES else body


def _error_code(body: bytes) -> str | None:
    payload = json_object(body)
    error = payload.get("error") if payload else None
    if isinstance(error, str) and _ERROR_CODE.fullmatch(error):
        return error
    return None


def _expires_in_s(value: object) -> int | None:
    # Some IdPs (Azure AD v1) send expires_in as a string; a value we cannot read is treated as
    # absent, so the caller falls back to the token's own `exp`.
    if isinstance(value, str) and value.strip().isdigit():
        return int(value.strip())
    return expires_in_s(value)


def _is_http_url(value: object) -> bool:
    if not isinstance(value, str):
        return False
    parts = urlsplit(value)
    return parts.scheme in ("http", "https") and bool(parts.netloc)
