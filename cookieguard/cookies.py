"""The app's auth cookies: read a session from a `Cookie` header, write it back after a refresh.

Pure functions over plain data: no I/O, no clock, no logging.

Why not `http.cookies.SimpleCookie` or aiohttp's cookie helpers for the `Cookie` header:

- `SimpleCookie.load` stops at the first pair it cannot parse and silently drops every cookie
  after it, so one third-party cookie with a `"` or a space in its name signs the user out.
  It also unquotes and unescapes values, so a cookie would not be forwarded byte for byte.
- aiohttp's `_cookie_helpers.parse_cookie_header` is private API and is a Set-Cookie style
  tokenizer: it splits `a=x y` into two cookies (`a=x` and `y`), keeps `"...;..."` together
  where browsers split on every `;`, calls a valueless pair a *name*, drops names it judges
  invalid, and logs. All of that changes what the upstream would receive.

Browsers send `name=value` pairs joined by `; ` and never quote or escape anything themselves,
so the lenient algorithm of RFC 6265bis section 5.7 (split on `;`, strip spaces and tabs, split
at the first `=`) is both simpler and what the upstream app's own parser expects. A piece without
`=` is a cookie with an empty name (RFC 6265bis 5.7 step 4; `document.cookie = "x"` creates one),
kept so that it is forwarded, and written back as just its value, as browsers do.

Two layouts are supported (SPEC section 3): `amplify` (Amplify v6 / Cognito, names built from
`LastAuthUser` with js-cookie v3's name encoding, values percent-encoded) and `named` (configured
names, values too large for one cookie split into `<name>.0`, `<name>.1`, ...).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol
from urllib.parse import quote

from cookieguard.config import CookieAttributes, CookieNames, CookiesConfig

__all__ = [
    "MAX_COOKIE_BYTES",
    "AmplifyLayout",
    "FreshTokens",
    "Layout",
    "NamedLayout",
    "Session",
    "SetCookie",
    "encode_uri_component",
    "format_cookie_header",
    "is_valid_cookie_name",
    "js_cookie_name",
    "make_layout",
    "parse_cookie_header",
    "percent_decode",
    "select_cookies",
    "split_into_cookies",
]

# Browsers refuse a cookie whose name plus value exceeds 4096 bytes (Chromium
# ParsedCookie::kMaxCookieNamePlusValueSize, Firefox kMaxBytesPerCookie).
MAX_COOKIE_BYTES = 4096

# ---------------------------------------------------------------------------------------------
# The Cookie header
# ---------------------------------------------------------------------------------------------


def parse_cookie_header(header: str) -> list[tuple[str, str]]:
    """Split a `Cookie` header into (name, value) pairs, in order, duplicates kept.

    Values are returned raw: not unquoted, not percent-decoded. A piece without `=` becomes
    `("", piece)`; empty pieces (`a=1;;b=2`, a trailing `;`) are skipped. Pieces holding CR, LF
    or NUL are dropped: no browser sends them and forwarding them could split a header.
    Never raises.
    """
    pieces = header.split(";")
    if "\r" in header or "\n" in header or "\0" in header:
        pieces = [p for p in pieces if not _has_line_break(p)]
    pairs: list[tuple[str, str]] = []
    for piece in pieces:
        piece = piece.strip(" \t")
        if not piece:
            continue
        name, eq, value = piece.partition("=")
        if eq:
            pairs.append((name.rstrip(" \t"), value.lstrip(" \t")))
        else:
            pairs.append(("", piece))
    return pairs


def select_cookies(header: str, prefixes: tuple[str, ...]) -> list[tuple[str, str]]:
    """`parse_cookie_header(header)` restricted to names starting with one of `prefixes`.

    The same pairs in the same order, but only pieces that start with a prefix are split into
    name and value: the hot path reads a few auth cookies out of a header that is mostly
    analytics cookies, and a header holding none of the prefixes costs a substring search each.
    """
    first, last = len(header), -1
    for prefix in prefixes:
        at = header.find(prefix)
        if at >= 0:
            first = min(first, at)
            last = max(last, header.rfind(prefix))
    if last < 0:
        return []
    # Every piece that can match lies between the first and the last occurrence: split only the
    # whole pieces around them (the app's auth cookies usually sit together, written at sign-in).
    end = header.find(";", last)
    pairs: list[tuple[str, str]] = []
    for piece in header[header.rfind(";", 0, first) + 1 : len(header) if end < 0 else end].split(";"):
        piece = piece.strip(" \t")
        # A name is a prefix of its piece, so a piece not starting with a prefix cannot match.
        if not piece.startswith(prefixes) or _has_line_break(piece):
            continue
        name, eq, value = piece.partition("=")
        name = name.rstrip(" \t")
        if eq and name.startswith(prefixes):  # without `=` the name is empty: never one of ours
            pairs.append((name, value.lstrip(" \t")))
    return pairs


def format_cookie_header(cookies: Sequence[tuple[str, str]]) -> str:
    """Join pairs into a `Cookie` header value, as a browser would (`; ` between pairs).

    A pair with an empty name is written as its bare value (RFC 6265bis 5.8.3). Pairs holding
    CR, LF or NUL are dropped so the result can always be sent as one header line.
    """
    header = "; ".join(value if not name else f"{name}={value}" for name, value in cookies if name or value)
    if "\r" in header or "\n" in header or "\0" in header:
        header = "; ".join(
            value if not name else f"{name}={value}"
            for name, value in cookies
            if (name or value) and not _has_line_break(name) and not _has_line_break(value)
        )
    return header


def _has_line_break(text: str) -> bool:
    return "\r" in text or "\n" in text or "\0" in text


# ---------------------------------------------------------------------------------------------
# Percent-encoding, the JavaScript way
# ---------------------------------------------------------------------------------------------

_PERCENT_RUN = re.compile(r"(?:%[0-9A-Fa-f]{2})+")

# encodeURIComponent leaves A-Z a-z 0-9 - _ . ! ~ * ' ( ) alone (ECMA-262 "uriUnreserved").
_URI_COMPONENT_SAFE = "-_.!~*'()"
# js-cookie v3 (src/api.mjs) then un-escapes %23 %24 %26 %2B %5E %60 %7C in cookie names.
_JS_COOKIE_NAME_SAFE = _URI_COMPONENT_SAFE + "#$&+^`|"


def _utf8(text: str) -> bytes:
    # Text may carry lone surrogates: aiohttp decodes header bytes that are not UTF-8 with
    # surrogateescape, and JSON allows "\ud800". Encode them back instead of raising.
    try:
        return text.encode("utf-8", "surrogateescape")
    except UnicodeEncodeError:
        return text.encode("utf-8", "surrogatepass")


def encode_uri_component(text: str) -> str:
    """JavaScript's `encodeURIComponent`; never raises (lone surrogates are encoded as bytes)."""
    return quote(_utf8(text), safe=_URI_COMPONENT_SAFE)


def js_cookie_name(name: str) -> str:
    """A cookie name as Amplify's `ensureEncodedForJSCookie` / js-cookie v3 writes it.

    `encodeURIComponent`, then `# $ & + ^ ` |` un-escaped, so `user+tag@example.com` becomes
    `user+tag%40example.com`. Unlike js-cookie, `(` and `)` stay as they are: that is what
    Amplify's server side (adapter-nextjs) looks up.
    """
    return quote(_utf8(name), safe=_JS_COOKIE_NAME_SAFE)


def percent_decode(text: str) -> str:
    """Decode `%XX` runs as UTF-8, leniently: a run that is not valid UTF-8 is kept as written.

    js-cookie's reader decodes the same runs (`/(%[\\dA-F]{2})+/gi`) but gives up on the whole
    cookie when one is invalid; keeping the raw text instead never loses a cookie.
    """
    if "%" not in text:
        return text
    return _PERCENT_RUN.sub(_decode_percent_run, text)


def _decode_percent_run(match: re.Match[str]) -> str:
    run = match.group(0)
    try:
        return bytes.fromhex(run.replace("%", "")).decode("utf-8")
    except UnicodeDecodeError:
        return run


def _unquote_value(value: str) -> str:
    # RFC 6265 4.1.1 allows a cookie-value wrapped in DQUOTEs; js-cookie's reader strips them.
    if len(value) >= 2 and value[0] == '"' and value[-1] == '"':
        return value[1:-1]
    return value


# RFC 6265 4.1.1 cookie-octet: US-ASCII except CTLs, whitespace, DQUOTE, comma, semicolon, backslash.
_COOKIE_OCTETS = frozenset(chr(c) for c in range(0x21, 0x7F)) - frozenset('",;\\')
# Names we write: printable US-ASCII, none of the characters that end a name or a pair.
_NAME_CHARS = frozenset(chr(c) for c in range(0x21, 0x7F)) - frozenset('",;=\\')
_SAME_SITE = frozenset({"Lax", "Strict", "None"})
# The same sets as regular expressions: a fresh token is ~1 KB, checked in C rather than per character.
_COOKIE_VALUE = re.compile("[" + re.escape("".join(sorted(_COOKIE_OCTETS))) + "]*")
_COOKIE_NAME = re.compile("[" + re.escape("".join(sorted(_NAME_CHARS))) + "]+")
_DOMAIN = re.compile(r"\.?[A-Za-z0-9.-]+")
# What the named layout leaves unescaped: every cookie-octet but `%`, which must be escaped so
# that reading (percent_decode) gives back exactly what was written.
_NAMED_VALUE_SAFE = "".join(sorted(_COOKIE_OCTETS - {"%"}))


def is_valid_cookie_name(name: str) -> bool:
    return _COOKIE_NAME.fullmatch(name) is not None


def _is_cookie_value(value: str) -> bool:
    return _COOKIE_VALUE.fullmatch(value) is not None


def _escape_named_value(value: str) -> str:
    return quote(_utf8(value), safe=_NAMED_VALUE_SAFE)


# ---------------------------------------------------------------------------------------------
# Sessions, fresh tokens, Set-Cookie
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Session:
    """The auth state one request carries in its cookies. Token values are decoded."""

    user: str | None  # amplify: LastAuthUser, percent-decoded; named: None
    access_token: str | None = field(repr=False)
    id_token: str | None = field(repr=False)
    refresh_token: str | None = field(repr=False)
    clock_drift_ms: int = 0
    device_key: str | None = field(default=None, repr=False)
    # Every cookie name (raw, as the browser sent it) that holds this session's auth state,
    # chunks included: what cookie_header rewrites and clear_cookies expires.
    cookie_names: frozenset[str] = frozenset()


@dataclass(frozen=True)
class FreshTokens:
    access_token: str = field(repr=False)
    id_token: str | None = field(repr=False)
    refresh_token: str = field(repr=False)  # the rotated one, else the old one
    clock_drift_ms: int = 0  # iat*1000 - now_ms, computed by the caller


@dataclass(frozen=True)
class SetCookie:
    """One `Set-Cookie` header. Construction refuses anything that could split or extend it."""

    name: str
    value: str = field(repr=False)  # already encoded
    path: str
    domain: str | None
    max_age_s: int
    secure: bool
    http_only: bool
    same_site: str | None

    def __post_init__(self) -> None:
        if not is_valid_cookie_name(self.name):
            raise ValueError(f"not a cookie name that can be written: {self.name!r}")
        if not _is_cookie_value(self.value):
            raise ValueError(f"cookie {self.name}: value is not encoded")
        if not self.path.startswith("/") or not all(" " <= c <= "~" and c != ";" for c in self.path):
            raise ValueError(f"cookie {self.name}: bad path {self.path!r}")
        if self.domain is not None and not _DOMAIN.fullmatch(self.domain):
            raise ValueError(f"cookie {self.name}: bad domain {self.domain!r}")
        if self.same_site is not None and self.same_site not in _SAME_SITE:
            raise ValueError(f"cookie {self.name}: bad SameSite {self.same_site!r}")

    @classmethod
    def with_attributes(cls, name: str, value: str, attrs: CookieAttributes) -> SetCookie:
        return cls(
            name=name,
            value=value,
            path=attrs.path,
            domain=attrs.domain,
            max_age_s=attrs.max_age_s,
            secure=attrs.secure,
            http_only=attrs.http_only,
            same_site=attrs.same_site,
        )

    @classmethod
    def expired(cls, name: str, attrs: CookieAttributes) -> SetCookie:
        # A deletion only hits the browser's cookie when Path and Domain match the ones it was
        # set with (RFC 6265 5.3 step 11), so it carries the same configured attributes.
        return cls(
            name=name,
            value="",
            path=attrs.path,
            domain=attrs.domain,
            max_age_s=0,
            secure=attrs.secure,
            http_only=attrs.http_only,
            same_site=attrs.same_site,
        )

    def header(self) -> str:
        parts = [f"{self.name}={self.value}", f"Path={self.path}"]
        if self.domain:
            parts.append(f"Domain={self.domain}")
        parts.append(f"Max-Age={self.max_age_s}")
        if self.secure:
            parts.append("Secure")
        if self.http_only:
            parts.append("HttpOnly")
        if self.same_site:
            parts.append(f"SameSite={self.same_site}")
        return "; ".join(parts)


class Layout(Protocol):
    def relevant_cookies(self, header: str) -> list[tuple[str, str]]:
        """The pairs of a `Cookie` header that `read` looks at (all of them would do too)."""
        ...

    def read(self, cookies: Sequence[tuple[str, str]]) -> Session | None:
        """The session in these cookies, or None when there are no auth cookies at all."""
        ...

    def cookie_header(self, cookies: Sequence[tuple[str, str]], session: Session, tokens: FreshTokens) -> str:
        """The outgoing `Cookie` header: fresh tokens in place of the old, the rest unchanged."""
        ...

    def stripped_cookie_header(self, cookies: Sequence[tuple[str, str]], session: Session) -> str:
        """The outgoing `Cookie` header without any of the session's auth cookies."""
        ...

    def set_cookies(self, session: Session, tokens: FreshTokens, attrs: CookieAttributes) -> list[SetCookie]:
        """What the browser must store after a refresh."""
        ...

    def clear_cookies(self, session: Session, attrs: CookieAttributes) -> list[SetCookie]:
        """Expire every auth cookie of the session."""
        ...


def _without(cookies: Sequence[tuple[str, str]], names: frozenset[str]) -> str:
    return format_cookie_header([(n, v) for n, v in cookies if n not in names])


def _clear(names: frozenset[str], attrs: CookieAttributes) -> list[SetCookie]:
    # A name the browser sent but that cannot be written safely (e.g. raw non-ASCII) is left alone.
    return [SetCookie.expired(name, attrs) for name in sorted(names) if is_valid_cookie_name(name)]


# ---------------------------------------------------------------------------------------------
# amplify layout
# ---------------------------------------------------------------------------------------------

AMPLIFY_PREFIX = "CognitoIdentityServiceProvider"
ACCESS_TOKEN = "accessToken"
ID_TOKEN = "idToken"
REFRESH_TOKEN = "refreshToken"
CLOCK_DRIFT = "clockDrift"
DEVICE_KEY = "deviceKey"
LAST_AUTH_USER = "LastAuthUser"
# What Amplify's own sign-out (TokenStore.clearTokens) removes; the device keys survive a
# sign-out there, so they do here too.
_AMPLIFY_SESSION_KEYS = (ACCESS_TOKEN, ID_TOKEN, REFRESH_TOKEN, CLOCK_DRIFT, "signInDetails", "oauthMetadata")
_AMPLIFY_READ_KEYS = (*_AMPLIFY_SESSION_KEYS, DEVICE_KEY)
_CLOCK_DRIFT = re.compile(r"[+-]?\d{1,15}")
_KEY_MEMO_SIZE = 4096  # (cookie name, user) pairs; cleared when full, a few KB per hundred users


class AmplifyLayout:
    """`CognitoIdentityServiceProvider.<clientId>.<username>.<key>`, as Amplify v6 stores it."""

    def __init__(self, client_id: str) -> None:
        self.client_id = client_id
        self._prefix = f"{AMPLIFY_PREFIX}.{client_id}."
        self._prefixes = (self._prefix,)
        self._keys: dict[tuple[str, str], str | None] = {}
        self.last_auth_user_name = js_cookie_name(f"{AMPLIFY_PREFIX}.{client_id}.{LAST_AUTH_USER}")
        if not is_valid_cookie_name(self.last_auth_user_name):
            raise ValueError(f"client id {client_id!r} cannot be part of a cookie name")

    def cookie_name(self, user: str, key: str) -> str:
        """The name Amplify writes for one of a user's keys (e.g. accessToken)."""
        return js_cookie_name(f"{self._prefix}{user}.{key}")

    def relevant_cookies(self, header: str) -> list[tuple[str, str]]:
        return select_cookies(header, self._prefixes)

    def _key_of(self, raw_name: str, user: str) -> str | None:
        # The same few names come back on every request: decoding them is worth remembering.
        memo_key = (raw_name, user)
        try:
            return self._keys[memo_key]
        except KeyError:
            pass
        if len(self._keys) >= _KEY_MEMO_SIZE:
            self._keys.clear()
        key = self._keys[memo_key] = self._decode_key(raw_name, user)
        return key

    def _decode_key(self, raw_name: str, user: str) -> str | None:
        # Matching on the decoded name (as js-cookie's reader does) finds the cookie whether it
        # was written by js-cookie in the browser (`(` as %28) or by the server side (raw `(`).
        decoded = percent_decode(raw_name)
        user_prefix = f"{self._prefix}{user}."
        if decoded.startswith(user_prefix):
            key = decoded[len(user_prefix) :]
            if key in _AMPLIFY_READ_KEYS:
                return key
        return None

    def read(self, cookies: Sequence[tuple[str, str]]) -> Session | None:
        ours = [(n, v) for n, v in cookies if n.startswith(self._prefix)]
        if not ours:
            return None
        user = next((_decode_value(v) for n, v in ours if n == self.last_auth_user_name), None)
        # Without LastAuthUser there is no telling whose cookies these are (Amplify would look for
        # a user literally named "username"); names are never guessed from token claims.
        if not user:
            return None
        names = {self.last_auth_user_name}
        values: dict[str, str] = {}
        for name, value in ours:
            key = self._key_of(name, user)
            if key is None:
                continue
            if key in _AMPLIFY_SESSION_KEYS:
                names.add(name)
            # The first of duplicates wins: browsers send the longest path first (RFC 6265 5.4).
            values.setdefault(key, value)
        drift = _decode_value(values.get(CLOCK_DRIFT, "")).strip()
        return Session(
            user=user,
            access_token=_decode_value(values.get(ACCESS_TOKEN, "")) or None,
            id_token=_decode_value(values.get(ID_TOKEN, "")) or None,
            refresh_token=_decode_value(values.get(REFRESH_TOKEN, "")) or None,
            clock_drift_ms=int(drift) if _CLOCK_DRIFT.fullmatch(drift) else 0,
            device_key=_decode_value(values.get(DEVICE_KEY, "")) or None,
            cookie_names=frozenset(names),
        )

    def _fresh_values(self, tokens: FreshTokens) -> dict[str, str]:
        fresh = {ACCESS_TOKEN: encode_uri_component(tokens.access_token)}
        # No id token in the refresh response (OIDC Core 12.2 makes it optional): keep the old one.
        if tokens.id_token is not None:
            fresh[ID_TOKEN] = encode_uri_component(tokens.id_token)
        fresh[REFRESH_TOKEN] = encode_uri_component(tokens.refresh_token)
        fresh[CLOCK_DRIFT] = str(int(tokens.clock_drift_ms))
        return fresh

    def _user(self, session: Session) -> str:
        if not session.user:
            raise ValueError("an amplify session needs a user (LastAuthUser)")
        return session.user

    def cookie_header(self, cookies: Sequence[tuple[str, str]], session: Session, tokens: FreshTokens) -> str:
        user = self._user(session)
        fresh = self._fresh_values(tokens)
        out: list[tuple[str, str]] = []
        replaced: set[str] = set()
        for name, value in cookies:
            key = self._key_of(name, user) if name in session.cookie_names else None
            if key is not None and key in fresh:
                out.append((name, fresh[key]))
                replaced.add(key)
            else:
                out.append((name, value))
        out.extend(
            (self.cookie_name(user, key), value) for key, value in fresh.items() if key not in replaced
        )
        return format_cookie_header(out)

    def stripped_cookie_header(self, cookies: Sequence[tuple[str, str]], session: Session) -> str:
        return _without(cookies, session.cookie_names)

    def set_cookies(self, session: Session, tokens: FreshTokens, attrs: CookieAttributes) -> list[SetCookie]:
        user = self._user(session)
        existing: dict[str, list[str]] = {}
        for name in sorted(session.cookie_names):
            key = self._key_of(name, user)
            if key is not None and is_valid_cookie_name(name):
                existing.setdefault(key, []).append(name)
        written = [SetCookie.with_attributes(self.last_auth_user_name, encode_uri_component(user), attrs)]
        for key, value in self._fresh_values(tokens).items():
            # Overwrite the cookie the browser already has under whichever spelling it has, rather
            # than adding a second one beside it that could shadow ours on the next request.
            for name in existing.get(key) or [self.cookie_name(user, key)]:
                written.append(SetCookie.with_attributes(name, value, attrs))
        return written

    def clear_cookies(self, session: Session, attrs: CookieAttributes) -> list[SetCookie]:
        return _clear(session.cookie_names, attrs)


def _decode_value(raw: str) -> str:
    return percent_decode(_unquote_value(raw))


# ---------------------------------------------------------------------------------------------
# named layout
# ---------------------------------------------------------------------------------------------


def _chunk_index(name: str, base: str) -> int | None:
    """n for `<base>.<n>` (n written canonically: 0, 1, ..., never 01), else None."""
    if len(name) <= len(base) + 1 or not name.startswith(base) or name[len(base)] != ".":
        return None
    digits = name[len(base) + 1 :]
    if not digits.isascii() or not digits.isdigit() or (len(digits) > 1 and digits[0] == "0"):
        return None
    return int(digits) if len(digits) < 7 else None


def split_into_cookies(
    name: str, encoded: str, max_cookie_bytes: int = MAX_COOKIE_BYTES
) -> list[tuple[str, str]]:
    """`[(name, encoded)]` when it fits in one cookie, else `[(name.0, part), (name.1, part), ...]`."""
    if len(name) + len(encoded) <= max_cookie_bytes:
        return [(name, encoded)]
    chunks: list[tuple[str, str]] = []
    start = 0
    while start < len(encoded):
        chunk_name = f"{name}.{len(chunks)}"
        size = max_cookie_bytes - len(chunk_name)
        if size <= 0:
            raise ValueError(f"cookie name {name!r} leaves no room for a value")
        chunks.append((chunk_name, encoded[start : start + size]))
        start += size
    return chunks


class NamedLayout:
    """Configured cookie names (generic OIDC apps), large values split into numbered chunks.

    Values are stored as the app's cookie library writes them: raw when every character is a
    cookie-octet (JWTs, base64url, hex), with `%` and anything else percent-escaped; reading
    percent-decodes, so `abc%3D%3D` written by an app using encodeURIComponent reads `abc==`.
    A plain `<name>` with a value wins over chunks; chunks are read contiguously from `.0`.
    """

    def __init__(self, names: CookieNames, max_cookie_bytes: int = MAX_COOKIE_BYTES) -> None:
        self.names = names
        self.max_cookie_bytes = max_cookie_bytes
        bases = [names.access_token, names.refresh_token, names.id_token]
        self._bases = tuple(b for b in bases if b)
        if len(set(self._bases)) != len(self._bases):
            raise ValueError("cookie names for access, refresh and id token must differ")
        for base in self._bases:
            if not is_valid_cookie_name(base):
                raise ValueError(f"not a cookie name: {base!r}")

    def relevant_cookies(self, header: str) -> list[tuple[str, str]]:
        return select_cookies(header, self._bases)

    def _base_of(self, name: str) -> str | None:
        for base in self._bases:
            if name == base or _chunk_index(name, base) is not None:
                return base
        return None

    def read(self, cookies: Sequence[tuple[str, str]]) -> Session | None:
        first: dict[str, str] = {}
        for name, value in cookies:
            if self._base_of(name) is not None:
                first.setdefault(name, value)
        if not first:
            return None

        def value_of(base: str | None) -> str | None:
            if not base:
                return None
            raw = first.get(base, "")
            if not raw:
                parts: list[str] = []
                while (part := first.get(f"{base}.{len(parts)}")) is not None:
                    parts.append(part)
                raw = "".join(parts)
            return percent_decode(raw) or None

        return Session(
            user=None,
            access_token=value_of(self.names.access_token),
            id_token=value_of(self.names.id_token),
            refresh_token=value_of(self.names.refresh_token),
            clock_drift_ms=0,
            device_key=None,
            cookie_names=frozenset(first),
        )

    def _fresh_cookies(self, tokens: FreshTokens) -> dict[str, list[tuple[str, str]]]:
        fresh = {
            self.names.access_token: tokens.access_token,
            self.names.refresh_token: tokens.refresh_token,
        }
        if self.names.id_token and tokens.id_token is not None:
            fresh[self.names.id_token] = tokens.id_token
        return {
            base: split_into_cookies(base, _escape_named_value(value), self.max_cookie_bytes)
            for base, value in fresh.items()
        }

    def cookie_header(self, cookies: Sequence[tuple[str, str]], session: Session, tokens: FreshTokens) -> str:
        fresh = self._fresh_cookies(tokens)
        out: list[tuple[str, str]] = []
        placed: set[str] = set()
        for name, value in cookies:
            base = self._base_of(name) if name in session.cookie_names else None
            if base is None or base not in fresh:
                out.append((name, value))
            elif base not in placed:
                # The new value (whole or in chunks) takes the place of the first old piece.
                out.extend(fresh[base])
                placed.add(base)
        for base, pairs in fresh.items():
            if base not in placed:
                out.extend(pairs)
        return format_cookie_header(out)

    def stripped_cookie_header(self, cookies: Sequence[tuple[str, str]], session: Session) -> str:
        return _without(cookies, session.cookie_names)

    def set_cookies(self, session: Session, tokens: FreshTokens, attrs: CookieAttributes) -> list[SetCookie]:
        written: list[SetCookie] = []
        for base, pairs in self._fresh_cookies(tokens).items():
            new_names = {name for name, _ in pairs}
            written.extend(SetCookie.with_attributes(name, value, attrs) for name, value in pairs)
            # The plain cookie when chunks are written, the chunks when it is plain, and chunks past
            # the new last one: left behind, they would be read back into a corrupt token.
            stale = sorted(
                (n for n in session.cookie_names if self._base_of(n) == base and n not in new_names),
                key=_chunk_sort_key,
            )
            written.extend(SetCookie.expired(name, attrs) for name in stale)
        return written

    def clear_cookies(self, session: Session, attrs: CookieAttributes) -> list[SetCookie]:
        return _clear(session.cookie_names, attrs)


def _chunk_sort_key(name: str) -> tuple[str, int]:
    base, _, index = name.rpartition(".")
    return (base, int(index)) if index.isdigit() and base else (name, -1)


class SessionReader:
    """`layout.read(layout.relevant_cookies(header))`, remembered per Cookie header.

    A browser sends the same Cookie header on every request of a page load (documents, assets,
    API calls) until a cookie changes, so the hot path reads each header once. Sessions are
    immutable and the read depends on nothing but the header. Bounded: cleared when full, so
    its worst case is `size` headers of at most 64 KB each (typically ~4 KB: 2 MB at 512).
    """

    def __init__(self, layout: Layout, size: int = 512) -> None:
        self.layout = layout
        self.size = size
        self._seen: dict[str, Session | None] = {}

    def read(self, header: str) -> Session | None:
        try:
            return self._seen[header]
        except KeyError:
            pass
        session = self.layout.read(self.layout.relevant_cookies(header))
        if len(self._seen) >= self.size:
            self._seen.clear()
        self._seen[header] = session
        return session


def make_layout(cookies: CookiesConfig, client_id: str | None) -> Layout:
    if cookies.layout == "amplify":
        if not client_id:
            raise ValueError("the amplify cookie layout needs the Cognito app client id")
        return AmplifyLayout(client_id)
    if cookies.layout == "named":
        return NamedLayout(cookies.names)
    raise ValueError(f"unknown cookie layout {cookies.layout!r}")
