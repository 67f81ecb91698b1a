"""Verifying tokens: the I/O shell of token checks (docs/behaviour.md §2, §6).

`TokenVerifier` fetches the IdP's JWKS with the proxy's aiohttp session (PyJWT's `PyJWKClient`
uses blocking urllib and would stall the event loop), verifies signatures with PyJWT (or, for a
legacy Supabase project, HS256 with its configured JWT secret) and judges the claims with
cookieguard.tokens.claims.

`TokenVerifier.check` answers with a `TokenCheck` whose `status` is one of:

* `VALID`: signature, issuer, audience/client and token use check out. Expiry is *not* required to
  be in the future: deciding to refresh needs the claims of expired tokens too.
* `INVALID`: forged, malformed, or meant for another client or issuer. Do not trust it: treat the
  token as absent (refresh it if there is a refresh token, else there is no session).
* `OPAQUE`: an OIDC access token that is not a JWT, which is allowed. Its expiry is the
  `expires_in` of the token response that produced it, kept in the session.
* `UNKNOWN`: cannot be verified right now (the JWKS could not be fetched, or a key we have never
  seen may be one the IdP just rotated in while its JWKS endpoint is down). `claims` holds the
  *unverified* claims. The proxy must never sign a user out because of this: it may use the
  unverified expiry to decide whether to refresh (the refresh itself is judged by the IdP, so a
  forged expiry can at worst cause or skip one refresh), must not report the claims as a verified
  identity, and otherwise forwards the request unchanged. UNKNOWN is never cached, so the same token
  is verified as soon as the JWKS is back.

No token ever appears in a log line, an exception message or a repr from this module.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, Final

import aiohttp
import jwt
import structlog

from cookieguard.lru import LRU
from cookieguard.tokens.claims import (
    ASYMMETRIC_ALGORITHMS,
    MAX_TOKEN_CHARS,
    NOT_YET_VALID,
    ClaimsReader,
    Expectations,
    TokenCheck,
    TokenKind,
    TokenStatus,
    check_claims,
    claims_from,
    expectations_for,
    is_cacheable,
    token_key,
)

__all__ = ["JwksError", "TokenCheck", "TokenStatus", "TokenVerifier", "parse_jwks"]

if TYPE_CHECKING:
    from cookieguard.config import VerifyConfig
    from cookieguard.tokens.providers.base import ProviderConfig

RESULTS_CACHE_SIZE: Final = 10_000
# An unknown `kid` may mean the IdP rotated its keys; look again, but at most this often, so a
# stream of tokens with made-up `kid`s cannot make us hammer the IdP.
JWKS_REFETCH_INTERVAL_S: Final = 60.0
# After a failed fetch, try again sooner: until we have keys, every token is UNKNOWN.
JWKS_RETRY_AFTER_FAILURE_S: Final = 5.0
# Keys are re-read this often even without an unknown `kid`, so a key the IdP withdrew stops
# verifying new tokens. If that re-read fails, the keys we have keep working.
JWKS_MAX_AGE_S: Final = 3600.0
MAX_JWKS_BYTES: Final = 1 << 20


_OPAQUE: Final = TokenCheck(TokenStatus.OPAQUE, reason="opaque")
_NOT_A_JWT: Final = TokenCheck(TokenStatus.INVALID, reason="not_a_jwt")
# Verdicts that can change without the token changing, so they are not cached.
_UNCACHED_REASONS: Final = frozenset({"unknown_kid", NOT_YET_VALID})


class JwksError(ValueError):
    """The JWKS endpoint answered, but not with a usable key set."""


class _JwksUnavailable(Exception):
    """No key can be had for this token right now (internal: becomes TokenStatus.UNKNOWN)."""


# ---------------------------------------------------------------------------------------------
# The I/O shell: JWKS and signatures
# ---------------------------------------------------------------------------------------------


class TokenVerifier:
    """Verifies access and id tokens for one provider, caching keys and verdicts.

    One per proxy, sharing the proxy's IdP `ClientSession`. Not thread-safe: it lives on one event
    loop, like the rest of the proxy.
    """

    def __init__(
        self,
        provider: ProviderConfig,
        verify: VerifyConfig,
        session: aiohttp.ClientSession,
        *,
        claims: ClaimsReader | None = None,
        jwks_url: str | None = None,
        resolve_jwks_url: Callable[[], Awaitable[str | None]] | None = None,
        clock: Callable[[], float] = time.time,
        cache_size: int = RESULTS_CACHE_SIZE,
        refetch_interval_s: float = JWKS_REFETCH_INTERVAL_S,
        retry_after_failure_s: float = JWKS_RETRY_AFTER_FAILURE_S,
        max_age_s: float = JWKS_MAX_AGE_S,
    ) -> None:
        self.provider = provider
        self.verify = verify
        self._session = session
        # The proxy's reader when given (one memo per process, made at start-up), else its own;
        # either reads the user from this provider's claims.
        if claims is not None and claims.user_claims != provider.user_claims:
            raise ValueError("the claims reader must read the provider's user_claims")
        self._claims = claims if claims is not None else ClaimsReader(user_claims=provider.user_claims)
        self._clock = clock
        self._refetch_interval_s = refetch_interval_s
        self._retry_after_failure_s = retry_after_failure_s
        self._max_age_s = max_age_s
        # Known from the configuration, or asked of the IdP (OIDC discovery) when the keys are
        # first needed: an IdP down at start-up must not stop the proxy, so until the URL is
        # known every token is UNKNOWN, and the next attempt waits `retry_after_failure_s`.
        self.jwks_url = jwks_url or provider.default_jwks_url
        self._resolve_jwks_url = resolve_jwks_url
        self._expect: dict[TokenKind, Expectations] = {
            "access": expectations_for(provider, verify, "access"),
            "id": expectations_for(provider, verify, "id"),
        }
        self._results: dict[TokenKind, LRU[bytes, TokenCheck]] = {
            "access": LRU(cache_size),
            "id": LRU(cache_size),
        }
        # Claim checks are ours (check_claims, with the injected clock); PyJWT checks the signature.
        self._jwt = jwt.PyJWT(
            options={
                "verify_exp": False,
                "verify_nbf": False,
                "verify_iat": False,
                "verify_aud": False,
                "verify_iss": False,
                "verify_sub": False,
                "verify_jti": False,
            }
        )
        # JWKS state
        self._keys_by_kid: dict[str, jwt.PyJWK] = {}
        self._keys: tuple[jwt.PyJWK, ...] = ()
        self._keys_fetched_at: float | None = None  # last successful fetch
        self._last_attempt_at: float | None = None
        self._last_attempt_failed = False
        self._fetch_task: asyncio.Task[None] | None = None
        # Counters, for tests and metrics.
        self.jwks_fetches = 0
        self.signature_checks = 0

    def __repr__(self) -> str:
        return f"TokenVerifier(kind={self.provider.kind!r}, jwks_url={self.jwks_url!r})"

    def peek(self, token: str, kind: TokenKind) -> TokenCheck | None:
        """The cached verdict for this token, if any, without awaiting: the hot path's fast lane."""
        if len(token) > MAX_TOKEN_CHARS:
            return None
        return self._cached(token_key(token), kind)

    def peek_key(self, key: bytes, kind: TokenKind) -> TokenCheck | None:
        """`peek` by the token's `token_key`, for a caller that keeps the key with the token."""
        return self._results[kind].get(key)

    def _cached(self, key: bytes, kind: TokenKind) -> TokenCheck | None:
        return self._results[kind].get(key)

    async def check(self, token: str, *, kind: TokenKind) -> TokenCheck:
        """Judge one token. Never raises for anything the token or the IdP can do."""
        key = token_key(token) if len(token) <= MAX_TOKEN_CHARS else None
        hit = self._cached(key, kind) if key is not None else None
        if hit is not None:
            return hit
        result = await self._judge(token, kind)
        if (
            key is not None
            and result.status is not TokenStatus.UNKNOWN
            and result.reason not in _UNCACHED_REASONS
            # A verdict without claims is a few bytes whatever the token: kept, so a forged token
            # costs one signature check. One with claims is kept only when they may be.
            and (result.claims is None or is_cacheable(token, result.claims))
        ):
            self._results[kind].put(key, result)
        return result

    async def _judge(self, token: str, kind: TokenKind) -> TokenCheck:
        claims = self._claims.read(token)
        if claims is None:
            # RFC 6749 access tokens are opaque strings unless the IdP says otherwise; Cognito's
            # are always JWTs, and id tokens are JWTs by definition (OIDC Core 2).
            opaque_allowed = kind == "access" and self.provider.opaque_access_tokens
            return _OPAQUE if opaque_allowed else _NOT_A_JWT
        if not self.verify.signature:
            return TokenCheck(TokenStatus.VALID, claims, "unverified")
        hmac_key = self.provider.hmac_key
        if hmac_key is not None:
            # A legacy Supabase project's shared JWT secret: HS256 with it, and nothing else.
            if claims.alg != "HS256":
                return TokenCheck(TokenStatus.INVALID, reason="alg_not_allowed")
            return self._verified(token, hmac_key, "HS256", kind)
        if claims.alg not in ASYMMETRIC_ALGORITHMS:
            # Decided before any key lookup: a forged `alg` must not cost a JWKS fetch.
            return TokenCheck(TokenStatus.INVALID, reason="alg_not_allowed")
        try:
            key = await self._key_for(claims.kid, claims.alg)
        except _JwksUnavailable:
            return TokenCheck(TokenStatus.UNKNOWN, claims, "jwks_unavailable")
        if key is None:
            return TokenCheck(TokenStatus.INVALID, reason="unknown_kid")
        return self._verified(token, key, key.algorithm_name, kind)

    def _verified(self, token: str, key: jwt.PyJWK | str, algorithm: str, kind: TokenKind) -> TokenCheck:
        """The signature checked with `key` for `algorithm` alone, then the claims."""
        self.signature_checks += 1
        try:
            decoded = self._jwt.decode_complete(token, key=key, algorithms=[algorithm])
        except jwt.InvalidSignatureError:
            return TokenCheck(TokenStatus.INVALID, reason="bad_signature")
        except jwt.InvalidAlgorithmError:
            return TokenCheck(TokenStatus.INVALID, reason="alg_not_allowed")
        except (jwt.PyJWTError, ValueError, TypeError, OverflowError):
            return TokenCheck(TokenStatus.INVALID, reason="malformed")
        # Judge the payload PyJWT verified, not our own decoding of the same bytes.
        verified = claims_from(decoded["payload"], decoded["header"], self.provider.user_claims)
        problem = check_claims(verified, self._expect[kind], self._clock())
        if problem is not None:
            return TokenCheck(TokenStatus.INVALID, reason=problem)
        return TokenCheck(TokenStatus.VALID, verified)

    # -- keys ------------------------------------------------------------------------------------

    def _find_key(self, kid: str | None, alg: str | None) -> jwt.PyJWK | None:
        if kid is not None:
            return self._keys_by_kid.get(kid)
        # No `kid` (some small IdPs): acceptable only when exactly one key could have signed it.
        candidates = [k for k in self._keys if k.algorithm_name == alg]
        return candidates[0] if len(candidates) == 1 else None

    def _is_stale(self, now: float) -> bool:
        return self._keys_fetched_at is None or now - self._keys_fetched_at >= self._max_age_s

    def _may_fetch(self, now: float) -> bool:
        if self._last_attempt_at is None:
            return True
        wait = self._retry_after_failure_s if self._last_attempt_failed else self._refetch_interval_s
        return now - self._last_attempt_at >= wait

    async def _key_for(self, kid: str | None, alg: str | None) -> jwt.PyJWK | None:
        """The key for this `kid`, None if the IdP has no such key, or raise _JwksUnavailable."""
        key = self._find_key(kid, alg)
        if key is not None and not self._is_stale(self._clock()):
            return key
        await self._refresh_keys()
        # Look again: this fetch, or one another request started, may have brought the key.
        key = self._find_key(kid, alg)
        if key is not None:
            return key  # possibly from an old key set, if the re-read failed: better than nothing
        if self._last_attempt_failed:
            # We could not ask the IdP; a key we have not seen may be one it just rotated in.
            raise _JwksUnavailable
        return None

    async def _refresh_keys(self) -> None:
        """Fetch the JWKS unless rate-limited; concurrent callers share one fetch."""
        if self._fetch_task is None or self._fetch_task.done():
            now = self._clock()
            if not self._may_fetch(now):
                return
            self._last_attempt_at = now
            self._fetch_task = asyncio.create_task(self._fetch_jwks())
        task = self._fetch_task
        # Shielded: a browser hanging up must not cancel the fetch everyone else is waiting for.
        await asyncio.shield(task)
        if self._fetch_task is task:
            self._fetch_task = None

    async def _fetch_jwks(self) -> None:
        status: int | None = None
        try:
            if self.jwks_url is None and self._resolve_jwks_url is not None:
                self.jwks_url = await self._resolve_jwks_url()
            if self.jwks_url is None:
                raise JwksError("no JWKS URL (set provider.jwks_url or provider.issuer)")
            self.jwks_fetches += 1
            timeout = aiohttp.ClientTimeout(total=self.provider.timeout_s)
            async with self._session.get(self.jwks_url, timeout=timeout) as response:
                status = response.status
                if status != 200:
                    raise JwksError(f"HTTP {status}")
                body = bytearray()
                async for chunk in response.content.iter_chunked(65536):
                    body += chunk
                    if len(body) > MAX_JWKS_BYTES:
                        raise JwksError("too large")
            keys = parse_jwks(json.loads(body))
        except Exception as exc:
            # Whatever went wrong (network, TLS, HTTP, JSON, keys), the IdP's keys are unavailable:
            # that must show up as UNKNOWN, never as a signed-out user or a 500.
            self._last_attempt_failed = True
            code = getattr(exc, "code", None)  # RefreshUnavailable from OIDC discovery: its code
            error = (
                str(exc)
                if isinstance(exc, JwksError)
                else code
                if isinstance(code, str)
                else type(exc).__name__
            )
            structlog.get_logger("cookieguard").warning(
                "jwks_fetch", outcome="failed", url=self.jwks_url, status=status, error=error
            )
            return
        self._keys = keys
        self._keys_by_kid = {k.key_id: k for k in keys if k.key_id is not None}
        self._keys_fetched_at = self._clock()
        self._last_attempt_failed = False
        structlog.get_logger("cookieguard").info(
            "jwks_fetch", outcome="fetched", url=self.jwks_url, keys=len(keys)
        )

    async def close(self) -> None:
        """Cancel a JWKS fetch still running (on shutdown)."""
        task, self._fetch_task = self._fetch_task, None
        if task is not None and not task.done():
            task.cancel()
            await asyncio.wait([task])


def parse_jwks(document: Any) -> tuple[jwt.PyJWK, ...]:
    """The signature keys of a JWKS document; raises JwksError when there is none we may use."""
    if not isinstance(document, dict) or not isinstance(document.get("keys"), list):
        raise JwksError("not a JWKS document")
    usable = [
        k
        for k in document["keys"]
        # Symmetric keys have no business in a public key set, and encryption keys sign nothing.
        if isinstance(k, dict) and k.get("kty") != "oct" and k.get("use", "sig") == "sig"
    ]
    try:
        key_set = jwt.PyJWKSet(usable)  # skips keys it cannot use (unknown kty, bad numbers)
    except jwt.PyJWTError:
        raise JwksError("no usable keys") from None
    keys = tuple(k for k in key_set.keys if k.algorithm_name in ASYMMETRIC_ALGORITHMS)
    if not keys:
        raise JwksError("no usable keys")
    return keys
