"""Reading JWT claims: the pure part of token checks (docs/behaviour.md §1, §2).

`decode_claims` decodes a JWT's header and payload *without* verifying anything and never
raises. A `ClaimsReader` memoises it per token, because the proxy sees the same few thousand
tokens over and over and the fast path must cost one lookup, not base64 + JSON; one is made at
start-up and handed to whoever reads claims (the proxy, the verifier), never shared through the
module. Which claims name the user is the provider's to say (`ProviderConfig.user_claims`): the
reader and the verifier are given that chain, and nothing here names an IdP's claims.
`check_claims` judges verified claims against what the configured client expects; signatures are
cookieguard.tokens.verifier's job.

No token ever appears in a log line, an exception message or a repr from this module.
"""

from __future__ import annotations

import base64
import binascii
import enum
import hashlib
import json
import math
import sys
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final, Literal

from cookieguard.lru import LRU, MISSING

if TYPE_CHECKING:
    from cookieguard.config import VerifyConfig
    from cookieguard.tokens.providers.base import ProviderConfig

TokenKind = Literal["access", "id"]

# Tokens travel in cookies, and aiohttp refuses header fields over 8 KiB, so anything larger is
# not a token we could have been sent; refusing it early also bounds what the caches can pin.
MAX_TOKEN_CHARS: Final = 16_384
CLAIMS_CACHE_SIZE: Final = 10_000
# What the caches hold at most per token (docs/security.md "Threat model": made-up tokens cannot grow the
# process). A browser keeps at most ~4 KB per cookie, and real tokens are far below this: Cognito
# access tokens ~1 KB, id tokens ~1-3 KB with groups; larger ones are decoded, not remembered.
MAX_CACHED_TOKEN_CHARS: Final = 8_192
# The strings a cached Claims holds (sub, user, iss, aud...) in all: ~300 for a Cognito token
# (OIDC Core 5.7 caps `sub` at 255 ASCII characters; Cognito's user names are at most 128).
MAX_CACHED_CLAIM_CHARS: Final = 2_048

# Tolerated clock difference with the IdP for `nbf`/`iat`. Generous on purpose: rejecting a token
# the IdP has just issued, because our clock is behind, would sign the user out.
CLOCK_LEEWAY_S: Final = 300.0

# Only public-key algorithms. `none` and HS* are never accepted from a JWKS: an HS256 token
# "signed" with the IdP's public key as HMAC secret is the classic algorithm-confusion forgery.
# The one HS256 path is a configured shared secret (`provider.hmac_key`: a legacy Supabase
# project's JWT secret), and then it is the only algorithm and no JWKS is used.
ASYMMETRIC_ALGORITHMS: Final = frozenset(
    {"RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "ES256K", "EdDSA"}
)


@dataclass(frozen=True, slots=True)
class Claims:
    """The claims cookieguard looks at, from a JWT's payload and header. Holds no token."""

    exp: float | None = None
    iat: float | None = None
    nbf: float | None = None
    sub: str | None = None
    user: str | None = None  # the first of the provider's `user_claims` the token carries
    client_id: str | None = None  # Cognito access tokens name their client here, not in `aud`
    aud: tuple[str, ...] = ()  # always a tuple: `"x"` and `["x"]` mean the same (RFC 7519 4.1.3)
    azp: str | None = None
    iss: str | None = None
    token_use: str | None = None  # Cognito: "access" | "id"
    # From the JOSE header:
    alg: str | None = None
    kid: str | None = None
    typ: str | None = None  # e.g. "at+jwt" for RFC 9068 access tokens


def decode_claims(token: str, user_claims: tuple[str, ...] = ()) -> Claims | None:
    """Decode a JWT's header and payload without verifying it; None for anything not a JWT.

    Never raises: cookies are attacker-controlled, and a bad one must mean "no session", not 500.
    Uncached; the proxy reads through a `ClaimsReader`. `user_claims`: see `claims_from`.
    """
    if not isinstance(token, str) or len(token) > MAX_TOKEN_CHARS:
        return None
    parts = token.split(".")
    if len(parts) != 3:  # a JWS in compact form; 5 parts is a JWE, which we cannot read
        return None
    header = _decode_json_segment(parts[0])
    payload = _decode_json_segment(parts[1]) if header is not None else None
    if payload is None or header is None:
        return None
    return claims_from(payload, header, user_claims)


def _decode_json_segment(segment: str) -> dict[str, Any] | None:
    try:
        raw = base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4))
        value = json.loads(raw)
    except (ValueError, binascii.Error, RecursionError):
        # ValueError covers non-ASCII text, bad UTF-8, bad JSON and absurdly long integers.
        return None
    return value if isinstance(value, dict) else None


def claims_from(payload: dict[str, Any], header: dict[str, Any], user_claims: tuple[str, ...] = ()) -> Claims:
    """Pick the claims we use out of a decoded payload and header, ignoring ill-typed values.

    `user` is the first of `user_claims` (the provider's) whose value is a string.
    """
    user = None
    for name in user_claims:
        user = _string(payload.get(name))
        if user is not None:
            break
    aud = payload.get("aud")
    if isinstance(aud, str):
        auds: tuple[str, ...] = (_shared(aud) or aud,)
    elif isinstance(aud, list):
        auds = tuple(_shared(a) or a for a in aud if isinstance(a, str))
    else:
        auds = ()
    return Claims(
        exp=_number(payload.get("exp")),
        iat=_number(payload.get("iat")),
        nbf=_number(payload.get("nbf")),
        sub=_string(payload.get("sub")),
        user=user,
        client_id=_shared(payload.get("client_id")),
        aud=auds,
        azp=_shared(payload.get("azp")),
        iss=_shared(payload.get("iss")),
        token_use=_shared(payload.get("token_use")),
        alg=_shared(header.get("alg")),
        kid=_shared(header.get("kid")),
        typ=_shared(header.get("typ")),
    )


def _string(value: Any) -> str | None:
    return value if isinstance(value, str) else None


def _shared(value: Any) -> str | None:
    # Issuer, client, token use, algorithm, key id: the same few values in every token, held
    # once instead of once per cached token.
    return sys.intern(value) if isinstance(value, str) and len(value) <= 512 else _string(value)


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    try:
        number = float(value)
    except OverflowError:  # an int too large for a float
        return None
    return number if math.isfinite(number) else None


def token_key(token: str) -> bytes:
    """What the token caches are keyed by: a 128-bit BLAKE2b digest of the token, not the token.

    A cached token string would pin ~1 KB per entry (~10 MB per 10,000 tokens); the digest is 16
    bytes and costs ~2 µs per lookup. At 128 bits, two different tokens never share a key.
    """
    return hashlib.blake2b(token.encode("utf-8", "surrogatepass"), digest_size=16).digest()


def is_cacheable(token: str, claims: Claims | None) -> bool:
    """Whether what was derived from this token may be remembered: only tokens whose algorithm
    could pass verification (an `alg: none` token is refused on every request, so remembering it
    buys nothing and lets anyone fill the cache), of a bounded size with bounded claims."""
    if len(token) > MAX_CACHED_TOKEN_CHARS:
        return False
    if claims is None:
        return True  # not a JWT: nothing but the key is held
    if claims.alg not in ASYMMETRIC_ALGORITHMS:
        return False
    strings = (
        claims.sub,
        claims.user,
        claims.client_id,
        claims.azp,
        claims.iss,
        claims.token_use,
        claims.kid,
        claims.typ,
        *claims.aud,
    )
    return sum(len(value) for value in strings if value) <= MAX_CACHED_CLAIM_CHARS


class ClaimsReader:
    """`decode_claims`, memoised per token: an `LRU` of `size` entries keyed by `token_key`.

    This is the fast path's one JWT decode. It holds only what `decode_claims` derives from the
    string itself (no clock, no keys), so one reader can serve the proxy and the verifier; only
    tokens `is_cacheable` allows are remembered. `user_claims` is the provider's chain
    (`ProviderConfig.user_claims`): one reader serves one provider, so it is not in the key.
    """

    __slots__ = ("_memo", "user_claims")

    def __init__(self, size: int = CLAIMS_CACHE_SIZE, *, user_claims: tuple[str, ...] = ()) -> None:
        self._memo: LRU[bytes, Claims | None] = LRU(size)
        self.user_claims = user_claims

    def __len__(self) -> int:
        return len(self._memo)

    def read(self, token: str) -> Claims | None:
        if not isinstance(token, str) or len(token) > MAX_TOKEN_CHARS:
            return None  # also keeps huge strings out of the memo
        key = token_key(token)
        claims = self._memo.get(key, MISSING)
        if claims is MISSING:
            claims = decode_claims(token, self.user_claims)
            if is_cacheable(token, claims):
                self._memo.put(key, claims)
        return claims


def session_id(refresh_token: str) -> str:
    """The `session` log field (docs/operations.md "Logs"): names a session without revealing its token."""
    return hashlib.sha256(refresh_token.encode("utf-8", "surrogatepass")).hexdigest()[:12]


def clock_drift_ms(claims: Claims, now_s: float) -> int:
    """Amplify's `clockDrift` cookie: `iat*1000 - now_ms`; 0 when the token has no `iat`."""
    if claims.iat is None:
        return 0
    return round(claims.iat * 1000 - now_s * 1000)


NOT_YET_VALID: Final = "not_yet_valid"


@dataclass(frozen=True, slots=True)
class Expectations:
    """What a verified token must say to be ours. Built once per (provider, kind)."""

    issuers: tuple[str, ...] | None  # None: not checked
    token_use: str | None = None  # Cognito
    client_id: str | None = None  # Cognito access tokens: the `client_id` claim
    audience: str | None = None  # `aud` must contain it
    authorized_party: str | None = None  # `azp`, when present, must equal it (OIDC Core 3.1.3.7)


def expectations_for(provider: ProviderConfig, verify: VerifyConfig, kind: TokenKind) -> Expectations:
    """The checks for one kind of token: the provider kind's, with the configured audience."""
    return provider.expectations(kind, audience=verify.audience)


def check_claims(
    claims: Claims, expect: Expectations, now_s: float, leeway_s: float = CLOCK_LEEWAY_S
) -> str | None:
    """The reason verified claims are not acceptable, or None when they are. Expiry may be past."""
    if expect.issuers is not None and claims.iss not in expect.issuers:
        return "wrong_issuer"
    if expect.token_use is not None and claims.token_use != expect.token_use:
        return "wrong_token_use"
    if expect.client_id is not None and claims.client_id != expect.client_id:
        return "wrong_client"
    if expect.audience is not None and expect.audience not in claims.aud:
        return "wrong_audience"
    if expect.authorized_party is not None and claims.azp not in (None, expect.authorized_party):
        return "wrong_audience"
    if claims.exp is None:
        return "no_exp"  # without an expiry there is nothing to base a refresh decision on
    if (claims.nbf is not None and claims.nbf > now_s + leeway_s) or (
        claims.iat is not None and claims.iat > now_s + leeway_s
    ):
        return NOT_YET_VALID
    return None


# ---------------------------------------------------------------------------------------------
# Verdicts: plain data the verifier produces and the plan (cookieguard.session.plan) reads
# ---------------------------------------------------------------------------------------------


class TokenStatus(enum.Enum):
    VALID = "valid"
    INVALID = "invalid"
    OPAQUE = "opaque"
    UNKNOWN = "unknown"


@dataclass(frozen=True, slots=True)
class TokenCheck:
    """The verdict on one token. See the module docstring for what the proxy does with each.

    `claims`: verified for VALID (or merely decoded when `verify.signature` is off), unverified for
    UNKNOWN, None otherwise. `reason` is a short code for logs and metrics, never token content:
    ok, unverified, opaque, not_a_jwt, alg_not_allowed, unknown_kid, jwks_unavailable,
    bad_signature, malformed, wrong_issuer, wrong_token_use, wrong_client, wrong_audience, no_exp,
    not_yet_valid.
    """

    status: TokenStatus
    claims: Claims | None = None
    reason: str = "ok"

    @property
    def is_valid(self) -> bool:
        return self.status is TokenStatus.VALID
