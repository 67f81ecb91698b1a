"""A client for Supabase Auth's (GoTrue's) refresh-token grant.

`POST {url}/auth/v1/token?grant_type=refresh_token` with the JSON body `{"refresh_token"}` and,
as supabase-js's auth client sends them, the headers `apikey: <key>` and
`Authorization: Bearer <key>` (the anon or publishable key) and
`X-Supabase-Api-Version: 2024-01-01`. GoTrue rotates the refresh token on every refresh.

Rules that shape this module (docs/providers/supabase.md says the same):

- A refresh is sent exactly once and redirects are not followed: GoTrue forgives the reuse of
  the *parent* of the active token, but reusing an older one after the reuse interval (10 s by
  default) revokes the whole session, so a blind retry can sign the user out.
- The error code decides, never the message. GoTrue names it in the `x-sb-error-code` header and
  in the body: `{"code": <code>, "message"}` when the request carries the 2024-01-01 API version
  (we send it), `{"code": <status>, "error_code", "msg"}` otherwise. GoTrue releases from before
  error codes (2024) answered `{"error": "invalid_grant", "error_description": "Invalid Refresh
  Token: ..."}`; `invalid_grant` is read from `error`, so no message is ever matched.
- The session is over (`RefreshRejected`) only for the codes that say so about the refresh
  token or its session (`SESSION_OVER_CODES`, from supabase/auth `internal/api/apierrors` and
  `internal/tokens/service.go`). `validation_failed` is among them: for this grant it means the
  token is malformed or "Not Issued By This Server", and no retry will change that.
- Everything else is `RefreshUnavailable`, keeping the user signed in: 5xx, 429 (with its
  Retry-After), 409 `conflict` (GoTrue gave up waiting on a locked session row), 401 from the API
  gateway (a wrong or missing `apikey`: the operator's mistake, not the user's), timeouts,
  connection errors and answers that are not a token response.
- The body's message never reaches an exception or a log: it can echo what was sent.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, ClassVar
from urllib.parse import urlsplit

import aiohttp

from cookieguard.schema import Section, http_url, nonempty_string, string
from cookieguard.tokens.claims import Expectations, TokenKind
from cookieguard.tokens.providers import base

# supabase/auth internal/api/apierrors/errorcode.go: the refresh token or its session is gone.
SESSION_OVER_CODES = frozenset(
    {
        "refresh_token_not_found",
        "refresh_token_already_used",
        "session_not_found",
        "session_expired",
        "user_not_found",
        "user_banned",
        "validation_failed",
        "invalid_grant",  # GoTrue before error codes: {"error": "invalid_grant", ...}
    }
)
API_VERSION = "2024-01-01"
# Token responses are a few kB (JWT plus the user object); anything far larger is not one.
MAX_RESPONSE_BYTES = 1024 * 1024
_ERROR_CODE = re.compile(r"[A-Za-z0-9_.\-]{1,64}")


# GoTrue's default `aud` (GOTRUE_JWT_AUD); `verify.audience` overrides it.
AUDIENCE = "authenticated"
# Supabase generates legacy JWT secrets of 40 characters and refuses shorter than 32; an HMAC key
# shorter than the hash (RFC 7518 3.2) is also what PyJWT warns about.
MIN_JWT_SECRET_CHARS = 32


@dataclass(frozen=True, kw_only=True)
class SupabaseConfig(base.ProviderConfig):
    """`provider.kind: supabase`: a Supabase project's Auth (GoTrue), named by its URL.

    There is no client id or secret: the project is its URL and the app is its anon (publishable)
    key, sent as `apikey`. `client_id` holds the project ref (`<ref>.supabase.co`) for the places
    that print one. Access tokens are verified against the project's JWKS (asymmetric keys), or,
    with `jwt_secret` (legacy projects), with HS256 and that secret only: never both, so a token
    "signed" with a public key as HMAC secret cannot pass (algorithm confusion).
    """

    kind: ClassVar[str] = "supabase"
    yaml_keys: ClassVar[tuple[str, ...]] = ("url", "anon_key", "jwt_secret")
    uses_client: ClassVar[bool] = False
    # GoTrue names its user by `email` only (empty when the user has none: then `sub`).
    user_claims: ClassVar[tuple[str, ...]] = ("email",)

    url: str
    anon_key: str = field(repr=False)
    jwt_secret: str | None = field(default=None, repr=False)

    @classmethod
    def load(cls, s: Section, common: dict[str, Any]) -> SupabaseConfig | None:
        url = s.get("url", http_url, "").rstrip("/")
        if not s.has("url"):
            s.error("url", "required for kind supabase (the project URL, e.g. https://<ref>.supabase.co)")
        elif url and urlsplit(url).query:
            s.error("url", "the project URL has no query string")
        # Never echoed: the messages of these parsers do not quote the value.
        anon_key = s.get("anon_key", nonempty_string, "")
        if not s.has("anon_key"):
            s.error("anon_key", "required for kind supabase (the project's anon or publishable key)")
        jwt_secret = s.get("jwt_secret", string, "") or None
        if jwt_secret is not None and len(jwt_secret) < MIN_JWT_SECRET_CHARS:
            s.error(
                "jwt_secret",
                f"too short for a Supabase JWT secret (at least {MIN_JWT_SECRET_CHARS} characters)",
            )
        if jwt_secret is not None and common.get("jwks_url"):
            s.error(
                "jwt_secret",
                "not with jwks_url: a legacy project signs with its JWT secret (HS256), a current one "
                "with the keys of its JWKS; configure one of them",
            )
        ref = (urlsplit(url).hostname or "").split(".")[0]
        return cls(url=url, anon_key=anon_key, jwt_secret=jwt_secret, client_id=ref, **common)

    @property
    def issuer(self) -> str:
        return f"{self.url}/auth/v1"

    @property
    def hmac_key(self) -> str | None:
        return self.jwt_secret

    @property
    def default_jwks_url(self) -> str | None:
        if self.jwt_secret:
            return None  # HS256 only: no public key may verify these tokens
        return self.jwks_url or f"{self.issuer}/.well-known/jwks.json"

    @property
    def refresh_endpoint(self) -> str:
        return f"{self.issuer}/token?grant_type=refresh_token"

    def expectations(self, token: TokenKind, *, audience: str | None) -> Expectations:
        # Supabase has access tokens only (no id token); `sub` is the user's id.
        return Expectations(issuers=(self.issuer,), audience=audience or AUDIENCE)

    def make_provider(self, session: aiohttp.ClientSession) -> SupabaseProvider:
        return SupabaseProvider(
            self.url, self.anon_key, timeout_s=self.timeout_s, session=session, jwks_url=self.default_jwks_url
        )


class SupabaseProvider:
    """Refreshes Supabase sessions at `{url}/auth/v1/token`."""

    def __init__(
        self,
        url: str,
        anon_key: str,
        *,
        timeout_s: float,
        session: aiohttp.ClientSession,
        jwks_url: str | None = None,
    ) -> None:
        if not anon_key:
            raise ValueError("SupabaseProvider needs the project's anon or publishable key")
        self._token_url = url.rstrip("/") + "/auth/v1/token?grant_type=refresh_token"
        self._headers = {
            "apikey": anon_key,
            "Authorization": f"Bearer {anon_key}",
            "X-Supabase-Api-Version": API_VERSION,
            "Accept": "application/json",
        }
        self._timeout = base.idp_timeout(timeout_s)
        self._session = session
        self._jwks_url = jwks_url

    @property
    def token_url(self) -> str:
        return self._token_url

    async def resolve_jwks_url(self) -> str | None:
        """Known from the configuration (None for a legacy HS256 project: no keys to fetch)."""
        return self._jwks_url

    async def refresh(
        self, refresh_token: str, context: Mapping[str, str] = base.NO_CONTEXT
    ) -> base.TokenSet:
        """One refresh (no refresh context)."""
        with base.transport_errors():
            async with self._session.post(
                self._token_url,
                json={"refresh_token": refresh_token},
                headers=self._headers,
                timeout=self._timeout,
                allow_redirects=False,
                raise_for_status=False,
            ) as response:
                status = response.status
                retry_after_s = base.parse_retry_after(response.headers.get("Retry-After"), datetime.now(UTC))
                header_code = response.headers.get("x-sb-error-code")
                body = await response.content.read(MAX_RESPONSE_BYTES + 1)
        if len(body) > MAX_RESPONSE_BYTES:
            raise base.RefreshUnavailable("bad_response", status=status)
        return _token_set(status, body, header_code, refresh_token, retry_after_s)


def _token_set(
    status: int, body: bytes, header_code: str | None, old_refresh_token: str, retry_after_s: float | None
) -> base.TokenSet:
    payload = base.json_object(body)
    if status == 200:
        access_token = payload.get("access_token") if payload else None
        new_refresh_token = payload.get("refresh_token") if payload else None
        if payload is None or not isinstance(access_token, str) or not access_token:
            raise base.RefreshUnavailable("bad_response", status=status)
        rotated = isinstance(new_refresh_token, str) and new_refresh_token not in ("", old_refresh_token)
        user = payload.get("user")
        return base.TokenSet(
            access_token=access_token,
            refresh_token=new_refresh_token if rotated else None,
            expires_in_s=base.expires_in_s(payload.get("expires_in")),
            # @supabase/ssr saves the session GoTrue answers, `user` included: the cookie's
            # `user_metadata` would otherwise stay stale until the browser client writes.
            extra_fields={"user": user} if isinstance(user, dict) else {},
        )
    if status == 429 or status >= 500:
        raise base.RefreshUnavailable(f"http_{status}", status=status, retry_after_s=retry_after_s)
    code = _error_code(header_code, payload)
    if code in SESSION_OVER_CODES and status in (400, 401, 403, 404):
        raise base.RefreshRejected(code, status=status)
    if status == 401 and code is None and payload is not None and "message" in payload:
        # The API gateway's key check ({"message", "hint"}): the configured key is wrong.
        code = "invalid_api_key"
    raise base.RefreshUnavailable(code or f"http_{status}", status=status, retry_after_s=retry_after_s)


def _error_code(header_code: str | None, payload: dict[str, Any] | None) -> str | None:
    candidates: list[object] = [header_code]
    if payload is not None:
        # error_code: the pre-2024 body; code: the 2024-01-01 body (an int status in the other
        # shape, skipped); error: OAuth-style answers and GoTrue from before error codes.
        candidates += [payload.get("error_code"), payload.get("code"), payload.get("error")]
    for candidate in candidates:
        if isinstance(candidate, str) and _ERROR_CODE.fullmatch(candidate):
            return candidate
    return None
