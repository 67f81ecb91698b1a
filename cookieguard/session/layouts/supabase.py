"""The `supabase` layout: the session cookie `@supabase/ssr` keeps, read and written back whole.

Pure: no I/O, no clock, no logging. What it reproduces was read in
`@supabase/ssr` 0.12.7 (`cookies.js`, `utils/chunker.js`, `utils/base64url.js`,
`utils/constants.js`) and checked against the library itself by tests/test_layout_supabase.py
(docs/providers/supabase.md states the same facts):

- The cookie is named after auth-js's storage key, `sb-<ref>-auth-token`, where `ref` is the
  first label of the project URL's host name (supabase-js `SupabaseClient`), unless the app set
  its own `storageKey` / `cookieOptions.name`.
- The value is `base64-` + base64url of `JSON.stringify(session)` (UTF-8), without `=` padding.
  Values written by @supabase/ssr before 0.4 are the plain JSON, URI-encoded; both are read.
- When `encodeURIComponent(value)` is longer than 3180 characters the value is split into
  `<name>.0`, `<name>.1`, ... (`createChunks`): each chunk's encoded form is at most 3180
  characters and never ends inside a `%XX` escape or a multi-byte character. Reading takes the
  unchunked cookie when it is set, else `.0`, `.1`, ... up to the first missing one
  (`combineChunks`). A `base64-` value that does not decode to JSON is treated as absent
  (chunks from two different writes).
- A write deletes every cookie of the request that is the name or a chunk of it (`<name>` or
  `<name>.<n>`, `isChunkLike`) and is not written again: stale chunks when the count shrinks, the
  unchunked cookie when switching to chunks and the chunks when switching back. Deletions come
  first, with the same attributes and `Max-Age=0`; with a configured Domain each deletion is
  also sent without Domain (host-only) before it.
- Defaults (`DEFAULT_COOKIE_OPTIONS`): `Path=/`, `SameSite=Lax`, not HttpOnly, not Secure,
  `Max-Age` 400 days (34,560,000 s).

One difference, on purpose: the library skips a chunk whose value the browser already has;
we write every chunk, so all of them get the same new Max-Age.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar
from urllib.parse import urlsplit

from cookieguard.cookies import SetCookie, encode_uri_component, format_cookie_header, select_cookies
from cookieguard.schema import cookie_name, key
from cookieguard.session.layouts.base import Chunks, FreshTokens, Layout, LayoutConfig, Pairs, Session, When
from cookieguard.tokens.claims import decode_claims

if TYPE_CHECKING:
    from cookieguard.config import CookieAttributes, CookiesConfig
    from cookieguard.schema import Section
    from cookieguard.tokens.providers.base import ProviderConfig

__all__ = [
    "BASE64_PREFIX",
    "DEFAULT_MAX_AGE_S",
    "MAX_CHUNK_SIZE",
    "OWNED_FIELDS",
    "SupabaseLayout",
    "decode_value",
    "encode_value",
    "read_session",
    "session_cookies",
    "split_chunks",
    "storage_key",
    "updated_session",
]

MAX_CHUNK_SIZE = 3180
BASE64_PREFIX = "base64-"
DEFAULT_MAX_AGE_S = 400 * 24 * 60 * 60
# The fields of the session JSON a refresh replaces; every other field is written back as read.
OWNED_FIELDS = ("access_token", "refresh_token", "expires_in", "expires_at", "token_type")

_ESCAPE = re.compile(r"%[0-9A-Fa-f]{2}")


def storage_key(project_url: str, explicit: str | None = None) -> str:
    """`sb-<ref>-auth-token`, `ref` being the first label of the project URL's host name."""
    if explicit:
        return explicit
    host = urlsplit(project_url).hostname or ""
    return f"sb-{host.split('.')[0]}-auth-token"


# ---------------------------------------------------------------------------------------------
# Values
# ---------------------------------------------------------------------------------------------


def encode_value(session: Mapping[str, Any]) -> str:
    """`base64-` + unpadded base64url of the session's JSON, as `JSON.stringify` writes it."""
    return BASE64_PREFIX + base64.urlsafe_b64encode(_json_bytes(session)).decode("ascii").rstrip("=")


def decode_value(value: str) -> dict[str, Any] | None:
    """The session in a (reassembled, cookie-decoded) value, or None when it is not one."""
    text: str | None = value
    if value.startswith(BASE64_PREFIX):
        text = _from_base64url(value[len(BASE64_PREFIX) :])
    if not text:
        return None
    try:
        session = json.loads(text)
    except ValueError:
        return None
    return session if isinstance(session, dict) else None


def _json_bytes(value: Mapping[str, Any]) -> bytes:
    text = json.dumps(value, separators=(",", ":"), ensure_ascii=False)
    try:
        return text.encode("utf-8")
    except UnicodeEncodeError:
        # A lone surrogate (JSON allows "\ud800"): JSON.stringify writes it as an escape.
        return json.dumps(value, separators=(",", ":")).encode("ascii")


def _from_base64url(text: str) -> str | None:
    # The library's decoder skips whitespace and "=", and refuses any other stray character.
    text = re.sub(r"[ \t\n\r=]", "", text)
    if not re.fullmatch(r"[A-Za-z0-9_-]*", text) or len(text) % 4 == 1:
        return None
    try:
        raw = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
        return raw.decode("utf-8")
    except (binascii.Error, UnicodeDecodeError):
        return None


def _cookie_decode(value: str) -> str:
    """What the `cookie` package's parse does to a value: decodeURIComponent, else as is."""
    if "%" not in value:
        return value
    if value.count("%") != len(_ESCAPE.findall(value)):
        return value
    try:
        return _percent_decode_strict(value)
    except UnicodeDecodeError:
        return value


def _percent_decode_strict(encoded: str) -> str:
    out = bytearray()
    i = 0
    while i < len(encoded):
        if encoded[i] == "%":
            out.append(int(encoded[i + 1 : i + 3], 16))
            i += 3
        else:
            out += encoded[i].encode("utf-8", "surrogatepass")
            i += 1
    return out.decode("utf-8")


# ---------------------------------------------------------------------------------------------
# Chunks
# ---------------------------------------------------------------------------------------------


def split_chunks(key: str, value: str, chunk_size: int = MAX_CHUNK_SIZE) -> list[tuple[str, str]]:
    """`createChunks`: [(name, value)] with values *not* encoded, as the library hands them over."""
    pieces = Chunks(chunk_size, value_only=True).split(key, encode_uri_component(value))
    return [(name, _percent_decode_strict(piece)) for name, piece in pieces]


def read_session(cookies: Sequence[tuple[str, str]], key: str) -> dict[str, Any] | None:
    """The session JSON in the request's cookies (raw `Cookie` pairs), or None.

    Of duplicate names the first wins, as in the `cookie` package's parser.
    """
    values: dict[str, str] = {}
    for name, raw in cookies:
        if name not in values and Chunks.holds(name, key):
            values[name] = _cookie_decode(raw)
    value = Chunks.join(values, key)
    return decode_value(value) if value else None


# ---------------------------------------------------------------------------------------------
# Writing
# ---------------------------------------------------------------------------------------------


def updated_session(
    session: Mapping[str, Any],
    *,
    access_token: str,
    refresh_token: str,
    expires_in: int,
    expires_at: int,
    token_type: str = "bearer",
    user: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """The session JSON after a refresh: cookieguard's fields replaced, and `user` when the
    IdP's answer had one; every other field kept."""
    fresh = dict(session)
    if user is not None:
        fresh["user"] = dict(user)
    fresh.update(
        access_token=access_token,
        refresh_token=refresh_token,
        expires_in=expires_in,
        expires_at=expires_at,
        token_type=token_type,
    )
    return fresh


def session_cookies(
    key: str,
    session: Mapping[str, Any],
    request_cookie_names: Sequence[str],
    attrs: CookieAttributes,
) -> list[SetCookie]:
    """The `Set-Cookie`s that store `session`: deletions of the request's stale chunks (and of
    the unchunked cookie when switching to chunks, or back), then the new value or chunks."""
    writes = split_chunks(key, encode_value(session))
    written = {name for name, _ in writes}
    stale: list[str] = []
    for name in request_cookie_names:
        if Chunks.holds(name, key) and name not in written and name not in stale:
            stale.append(name)
    deletions = [SetCookie.expired(name, attrs) for name in stale]
    if attrs.domain:
        # A cookie the browser client wrote host-only would survive a deletion with Domain.
        host_only = [SetCookie.expired(name, attrs) for name in stale]
        deletions = [_without_domain(c) for c in host_only] + deletions
    return deletions + [
        SetCookie.with_attributes(name, encode_uri_component(value), attrs) for name, value in writes
    ]


def _without_domain(cookie: SetCookie) -> SetCookie:
    return SetCookie(
        name=cookie.name,
        value=cookie.value,
        path=cookie.path,
        domain=None,
        max_age_s=cookie.max_age_s,
        secure=cookie.secure,
        http_only=cookie.http_only,
        same_site=cookie.same_site,
    )


# ---------------------------------------------------------------------------------------------
# The layout
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SupabaseCookie(LayoutConfig):
    """`cookies.storage_key`: the cookie's name when the app set its own `storageKey` (or
    `cookieOptions.name`); else it is derived from the project (provider.url)."""

    yaml_keys: ClassVar[tuple[str, ...]] = ("storage_key",)

    storage_key: str | None = key(
        "storage_key",
        cookie_name,
        "`supabase` layout only: the cookie name, when the app set its own `storageKey` / "
        "`cookieOptions.name`",
        default=None,
        shown="`sb-<ref>-auth-token` (`ref`: first label of `provider.url`'s host)",
    )

    @classmethod
    def load(cls, s: Section, provider: ProviderConfig | None) -> SupabaseCookie:
        name = s.get("storage_key", cookie_name, cls.storage_key)
        if name is None and provider is None:
            s.error(
                "storage_key", "required with layout supabase when there is no provider (it names the cookie)"
            )
        return cls(name)


class SupabaseLayout(Layout):
    """`sb-<ref>-auth-token` (or `cookies.storage_key`), chunked as @supabase/ssr chunks it.

    The session JSON is the layout's `payload`: after a refresh it is written back whole, with
    the fields of `OWNED_FIELDS` replaced, `user` from GoTrue's answer when it has one (as
    @supabase/ssr saves it), and every other one (`provider_token`, ...) kept as read.
    """

    provider_kinds: ClassVar[tuple[str, ...] | None] = ("supabase",)
    config: ClassVar[type[LayoutConfig]] = SupabaseCookie
    # @supabase/ssr's DEFAULT_COOKIE_OPTIONS: not Secure (it runs on http://localhost too),
    # Max-Age 400 days (the longest Chrome keeps).
    attribute_defaults: ClassVar[Mapping[str, Any]] = {"secure": False, "max_age_s": DEFAULT_MAX_AGE_S}

    @classmethod
    def from_config(cls, cookies: CookiesConfig, provider: ProviderConfig | None) -> SupabaseLayout:
        own = cookies.layout_config
        if isinstance(own, SupabaseCookie) and own.storage_key:
            return cls(own.storage_key)
        # The supabase provider's client_id is the project ref (providers/supabase.py reads it).
        if provider is None or not provider.client_id:
            raise ValueError("the supabase cookie layout needs provider.url or cookies.storage_key")
        return cls(f"sb-{provider.client_id}-auth-token")

    def __init__(self, key: str) -> None:
        self.key = key
        self._prefixes = (key,)

    def relevant_cookies(self, header: str) -> Pairs:
        return select_cookies(header, self._prefixes)

    def describe(self, session: Session, when: When) -> list[str]:
        """The session JSON's fields beside the tokens, and the `expires_at` the browser reads."""
        payload = session.payload if isinstance(session.payload, dict) else {}
        fields = ", ".join(sorted(k for k in payload if k not in ("access_token", "refresh_token")))
        lines = [f"session JSON fields: {fields}"]
        expires_at = payload.get("expires_at")
        if isinstance(expires_at, int | float) and not isinstance(expires_at, bool):
            lines.append(f"  expires_at {when(float(expires_at), 'expires')} (what the browser client reads)")
        else:
            lines.append("  expires_at absent: the browser client treats this session as invalid")
        return lines

    def owns(self, name: str) -> bool:
        return Chunks.holds(name, self.key)

    def _base_of(self, name: str) -> str | None:
        return self.key if Chunks.holds(name, self.key) else None

    def read(self, cookies: Sequence[tuple[str, str]]) -> Session | None:
        names = frozenset(name for name, _ in cookies if Chunks.holds(name, self.key))
        if not names:
            return None
        payload = read_session(cookies, self.key)
        if payload is None:
            # Chunks of two different writes, or not a session at all: as @supabase/ssr does,
            # no session (the cookies are passed through untouched).
            return None
        user = payload.get("user")
        email = user.get("email") if isinstance(user, dict) else None
        sub = user.get("id") if isinstance(user, dict) else None
        return Session(
            user=_text(email) or _text(sub),
            access_token=_text(payload.get("access_token")),
            id_token=None,
            refresh_token=_text(payload.get("refresh_token")),
            cookie_names=names,
            payload=payload,
        )

    def fresh_session(self, session: Session, tokens: FreshTokens) -> dict[str, Any]:
        """The session JSON after a refresh (`expires_at` from the new token's `exp`)."""
        old: Mapping[str, Any] = session.payload if isinstance(session.payload, Mapping) else {}
        claims = decode_claims(tokens.access_token)
        exp = int(claims.exp) if claims and claims.exp is not None else None
        iat = int(claims.iat) if claims and claims.iat is not None else None
        expires_in = tokens.expires_in_s
        if expires_in is None and exp is not None and iat is not None:
            expires_in = exp - iat
        if exp is None and iat is not None and expires_in is not None:
            exp = iat + expires_in  # no `exp` claim: the token response's lifetime from its issue
        user = tokens.extra_fields.get("user")
        return updated_session(
            old,
            access_token=tokens.access_token,
            refresh_token=tokens.refresh_token,
            # auth-js requires `expires_at` (isValidSession); a token without `exp` or `iat`
            # keeps the old one, so the browser client refreshes it itself.
            expires_in=expires_in if expires_in is not None else _int(old.get("expires_in")),
            expires_at=exp if exp is not None else _int(old.get("expires_at")),
            user=user if isinstance(user, Mapping) else None,
        )

    def _fresh_pairs(self, session: Session, tokens: FreshTokens) -> Pairs:
        value = encode_value(self.fresh_session(session, tokens))
        return [(name, encode_uri_component(part)) for name, part in split_chunks(self.key, value)]

    def cookie_header(self, cookies: Sequence[tuple[str, str]], session: Session, tokens: FreshTokens) -> str:
        fresh = {self.key: self._fresh_pairs(session, tokens)}
        return format_cookie_header(Chunks.replace(cookies, session.cookie_names, fresh, self._base_of))

    def set_cookies(self, session: Session, tokens: FreshTokens, attrs: CookieAttributes) -> list[SetCookie]:
        return session_cookies(
            self.key,
            self.fresh_session(session, tokens),
            sorted(session.cookie_names, key=lambda name: Chunks.order(name, self.key)),
            attrs,
        )


def _text(value: object) -> str | None:
    return value if isinstance(value, str) and value else None


def _int(value: object) -> int:
    return int(value) if isinstance(value, int | float) and not isinstance(value, bool) else 0
