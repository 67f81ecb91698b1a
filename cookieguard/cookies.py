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

Which cookies hold a session, and how, is a cookie layout's business: see `cookieguard.session.layouts`.
"""

from __future__ import annotations

import re
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING
from urllib.parse import quote

if TYPE_CHECKING:
    from cookieguard.config import CookieAttributes

__all__ = [
    "MAX_COOKIE_BYTES",
    "SetCookie",
    "encode_uri_component",
    "escape_cookie_value",
    "format_cookie_header",
    "is_valid_cookie_name",
    "js_cookie_name",
    "parse_cookie_header",
    "percent_decode",
    "select_cookies",
    "unquote_value",
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


def unquote_value(value: str) -> str:
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
# What escape_cookie_value leaves unescaped: every cookie-octet but `%`, which must be escaped so
# that reading (percent_decode) gives back exactly what was written.
_VALUE_SAFE = "".join(sorted(_COOKIE_OCTETS - {"%"}))


def is_valid_cookie_name(name: str) -> bool:
    return _COOKIE_NAME.fullmatch(name) is not None


def _is_cookie_value(value: str) -> bool:
    return _COOKIE_VALUE.fullmatch(value) is not None


def escape_cookie_value(value: str) -> str:
    """A value as cookie libraries write it: raw when every character is a cookie-octet (JWTs,
    base64url, hex), with `%` and anything else percent-escaped; `percent_decode` reverses it."""
    return quote(_utf8(value), safe=_VALUE_SAFE)


# ---------------------------------------------------------------------------------------------
# Set-Cookie
# ---------------------------------------------------------------------------------------------


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
    # A fixed end (epoch seconds), written as `Expires` in place of `Max-Age`: for a layout whose
    # cookie ends with its own claims (Auth.js writes its JWT's `exp`), not `cookies.attributes`.
    expires_at: float | None = None

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
        if self.expires_at is not None:
            parts.append(f"Expires={http_date(self.expires_at)}")
        else:
            parts.append(f"Max-Age={self.max_age_s}")
        if self.secure:
            parts.append("Secure")
        if self.http_only:
            parts.append("HttpOnly")
        if self.same_site:
            parts.append(f"SameSite={self.same_site}")
        return "; ".join(parts)


_DAYS = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")
_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")


def http_date(epoch_s: float) -> str:
    """An IMF-fixdate (RFC 9110 section 5.6.7), as `Expires` wants it, independent of the locale.
    (email.utils.formatdate does the same but imports socket, and this module stays I/O-free.)"""
    t = time.gmtime(epoch_s)
    return (
        f"{_DAYS[t.tm_wday]}, {t.tm_mday:02d} {_MONTHS[t.tm_mon - 1]} {t.tm_year} "
        f"{t.tm_hour:02d}:{t.tm_min:02d}:{t.tm_sec:02d} GMT"
    )
