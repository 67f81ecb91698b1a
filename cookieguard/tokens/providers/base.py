"""What every identity provider client returns and raises.

Two exceptions, named by what the caller must do (docs/behaviour.md §3):
`RefreshRejected` means the session is dead (clear it, or send the user to sign in);
`RefreshUnavailable` means the IdP could not answer (forward unchanged, back off, never sign out).
"""

from __future__ import annotations

import json
import math
from abc import ABC, abstractmethod
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, ClassVar, Protocol

import aiohttp

from cookieguard.schema import Section, nonempty_string, positive_duration, string
from cookieguard.schema import http_url as _http_url

if TYPE_CHECKING:
    from typing import Self

    from cookieguard.tokens.claims import Expectations, TokenKind

# How long a call may queue for one of the IdP client's pooled connections during a refresh
# storm. `provider.timeout` bounds the call itself (connecting, and each wait for the IdP's
# answer), not the queue: aiohttp's `total` would count the queue too, and a storm of 1,000
# expired sessions would then fail refreshes that never reached the IdP.
IDP_QUEUE_S = 30.0


def idp_timeout(timeout_s: float) -> aiohttp.ClientTimeout:
    return aiohttp.ClientTimeout(
        total=None, connect=timeout_s + IDP_QUEUE_S, sock_connect=timeout_s, sock_read=timeout_s
    )


@dataclass(frozen=True)
class TokenSet:
    """The IdP's answer to a refresh. `refresh_token` is set only when the IdP rotated it."""

    access_token: str = field(repr=False)
    id_token: str | None = field(default=None, repr=False)
    refresh_token: str | None = field(default=None, repr=False)
    expires_in_s: int | None = None
    # Fields of the token response beside the tokens that a layout stores with them (Supabase's
    # `user`, which @supabase/ssr saves from every answer). JSON values; empty for most IdPs.
    extra_fields: Mapping[str, Any] = field(default_factory=dict, repr=False)

    @property
    def rotated(self) -> bool:
        return self.refresh_token is not None


class RefreshError(Exception):
    """Base class. `code` is the IdP's error code (never its message: messages can echo secrets)."""

    def __init__(self, code: str, *, status: int | None = None) -> None:
        super().__init__(code)
        self.code = code
        self.status = status


class RefreshRejected(RefreshError):
    """The IdP refused the refresh token: the session is over."""


class RefreshUnavailable(RefreshError):
    """The IdP could not be asked or answered badly: try again later, keep the session."""

    def __init__(self, code: str, *, status: int | None = None, retry_after_s: float | None = None) -> None:
        super().__init__(code, status=status)
        self.retry_after_s = retry_after_s


@contextmanager
def transport_errors(prefix: str = "") -> Iterator[None]:
    """Turns a failed HTTP exchange with the IdP into `RefreshUnavailable`: `<prefix>timeout`,
    `<prefix>connection_error` or `<prefix>bad_response` (the session is kept; no message kept)."""
    try:
        yield
    except TimeoutError:
        raise RefreshUnavailable(prefix + "timeout") from None
    except aiohttp.ClientConnectionError:
        raise RefreshUnavailable(prefix + "connection_error") from None
    except aiohttp.ClientError:
        raise RefreshUnavailable(prefix + "bad_response") from None


# What a layout read beside the refresh token that its provider needs to refresh it (what the
# amplify layout reads for the Cognito provider, say). Opaque to everything between the two;
# empty for most kinds.
NO_CONTEXT: Mapping[str, str] = MappingProxyType({})


class Provider(Protocol):
    """A client for one IdP's refresh endpoint. It knows nothing of requests or cookies;
    `context` is what the session's layout read for it (`Session.refresh_context`)."""

    async def refresh(self, refresh_token: str, context: Mapping[str, str] = NO_CONTEXT) -> TokenSet: ...

    async def resolve_jwks_url(self) -> str | None:
        """Where the IdP publishes its signing keys; may ask the IdP (OIDC discovery), so it is
        awaited when the keys are first needed, never at start-up. Raises RefreshUnavailable
        while the IdP cannot tell."""
        ...


# ---------------------------------------------------------------------------------------------
# Provider kinds: one record class per kind, registered in providers/__init__.py
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class ProviderConfig(ABC):
    """The `provider:` section, as one kind reads it. Each kind subclasses this in its own module
    with its own fields, its YAML loader and what cookieguard must know about its tokens; the
    fields here are the ones every kind has. Defaults are the field defaults, written once."""

    kind: ClassVar[str]  # the `provider.kind` value; the key of providers.KINDS
    yaml_keys: ClassVar[tuple[str, ...]]  # the kind's own keys, beside the common ones
    # RFC 6749 access tokens may be opaque strings; some IdPs (Cognito) always issue JWTs.
    opaque_access_tokens: ClassVar[bool] = False
    # Why `verify.audience` means nothing for this kind (None: it is checked on access tokens).
    audience_unused: ClassVar[str | None] = None
    # Whether `client_id` and `client_secret` are keys of this kind (Supabase has neither: the
    # project is named by its URL and the app by its anon key).
    uses_client: ClassVar[bool] = True
    # The claims that name the user, first present wins (then `sub`): the `user` of the logs and
    # the session endpoint. Each kind names its own IdP's claims (docs/operations.md "Logs").
    user_claims: ClassVar[tuple[str, ...]] = ()

    client_id: str
    client_secret: str | None = field(default=None, repr=False)
    timeout_s: float = 5.0
    jwks_url: str | None = None

    @classmethod
    @abstractmethod
    def load(cls, s: Section, common: dict[str, Any]) -> Self | None:
        """Read the kind's own keys of `s` and build the record from them and `common` (the
        fields of this base class, already read); None when a problem was recorded in `s`."""

    @property
    @abstractmethod
    def issuer(self) -> str | None:
        """The `iss` its tokens carry; None when not known from the configuration."""

    @property
    def hmac_key(self) -> str | None:
        """The shared secret that signs this configuration's tokens with HS256, or None: then only
        public keys from the JWKS verify them, and HS256 is refused (algorithm confusion)."""
        return None

    @property
    def default_jwks_url(self) -> str | None:
        """The JWKS URL known without asking the IdP: `jwks_url`, else the kind's own default."""
        return self.jwks_url

    @property
    @abstractmethod
    def refresh_endpoint(self) -> str:
        """Where refreshes go, as `cookieguard check` prints it."""

    @abstractmethod
    def expectations(self, token: TokenKind, *, audience: str | None) -> Expectations:
        """What a verified access or id token must say to be ours (`verify.audience` given)."""

    @abstractmethod
    def make_provider(self, session: aiohttp.ClientSession) -> Provider:
        """The refresh client for this configuration, over the proxy's IdP session."""


# The `provider:` keys every kind has (read by load_common), beside `kind` and the kind's own.
COMMON_KEYS = ("client_id", "client_secret", "timeout", "jwks_url")


def load_common(s: Section, record: type[ProviderConfig]) -> dict[str, Any]:
    """The keys every kind has, read into the fields of ProviderConfig (only those set)."""
    if not record.uses_client:
        for key in ("client_id", "client_secret"):
            s.seen.add(key)
            if key in s.data:
                s.error(key, f"not used by kind {record.kind}")
        common: dict[str, Any] = {}
    else:
        common = {"client_id": s.get("client_id", nonempty_string, "")}
        if not common["client_id"] and not s.has("client_id"):
            s.error("client_id", "required")
    if s.has("client_secret") and record.uses_client:
        common["client_secret"] = s.get("client_secret", string, "") or None
    if s.has("timeout"):
        common["timeout_s"] = s.get("timeout", positive_duration, ProviderConfig.timeout_s)
    if s.has("jwks_url"):
        common["jwks_url"] = s.get("jwks_url", _http_url, None)
    s.seen.update(COMMON_KEYS)
    return common


def json_object(body: bytes) -> dict[str, Any] | None:
    """`body` as a JSON object, or None when it is not one (an HTML error page, garbage, a list)."""
    try:
        payload = json.loads(body)
    except ValueError:  # also UnicodeDecodeError
        return None
    return payload if isinstance(payload, dict) else None


def expires_in_s(value: object) -> int | None:
    """A token response's `expires_in` as whole seconds; None when it is not a finite number >= 0,
    so the caller falls back to the token's own `exp`."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float) and math.isfinite(value) and value >= 0:
        return int(value)
    return None


def parse_retry_after(value: str | None, now: datetime) -> float | None:
    """Retry-After as seconds (RFC 9110 section 10.2.3: delta-seconds or an HTTP-date)."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    seconds = (when - now).total_seconds()
    return max(0.0, seconds) if math.isfinite(seconds) else None
