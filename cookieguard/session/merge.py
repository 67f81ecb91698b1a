"""What the browser is told: the app's Set-Cookie headers and cookieguard's, merged (docs/behaviour.md §4).

The upstream's headers are returned untouched: never joined, never split on commas (an `Expires`
date contains one). `merge_answer` is the one decision; it works on a session as one value:

- The app writes any cookie of the session (one chunk, the plain name, any of a layout's cookies:
  `layout.owns(name)`): it is signing someone in or refreshing by itself, and its write wins as
  a whole. None of cookieguard's cookies of the session is added, and none is deleted. Judged per
  name, the app's chunks `.0 .1` beside our `.2` would join into a value that does not decode.
- The app only clears cookies of the session (Max-Age <= 0, an Expires in the past, or an empty
  value): it is signing the user out. None of our tokens is added, and the session's other auth
  cookies are expired, or the refresh token left behind would refresh the session back on the
  next request (docs/behaviour.md §4: the app's sign-out holds).
- Otherwise ours are added, each unless the upstream set the same cookie (`merge_set_cookies`).

"The same cookie" is (name, domain, path), as a browser keys its store (RFC 6265 5.3 step 11).
An upstream Set-Cookie without `Domain` or without a valid `Path` leaves that part to the browser
(host-only, and the request path's directory: RFC 6265 5.1.4), which cannot be worked out here
without the request. Such a missing part matches ours whatever it is: wrongly keeping a cookie
the app meant to delete could sign a signed-out user back in, while wrongly yielding to the app
only costs one response without our refresh. Amplify's adapter-nextjs, for one, deletes cookies
with a bare `name=;Expires=...`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

# http2time reads the date forms Set-Cookie uses (RFC 1123, RFC 850 "01-Jan-70", asctime) and
# returns None for the rest; it is public in http.cookiejar but absent from typeshed.
from http.cookiejar import http2time  # type: ignore[attr-defined]
from typing import TYPE_CHECKING

from cookieguard.cookies import SetCookie

if TYPE_CHECKING:
    from cookieguard.config import CookieAttributes
    from cookieguard.session.layouts.base import Layout, Session

__all__ = ["Merged", "clears_cookie", "merge_answer", "merge_set_cookies", "set_cookie_key"]


def _parse_scope(header_value: str) -> tuple[str, str | None, str | None]:
    """(name, domain, path) of a Set-Cookie value; None for a domain or path it does not state."""
    pair, _, attributes = header_value.partition(";")
    name, eq, _ = pair.partition("=")
    # RFC 6265bis 5.6 step 3: a pair without "=" is a cookie with an empty name.
    name = name.strip(" \t") if eq else ""
    domain: str | None = None
    path: str | None = None
    # RFC 6265 5.3: when an attribute repeats, the last one counts.
    for attribute in attributes.split(";"):
        key, _, value = attribute.partition("=")
        key = key.strip(" \t").lower()
        if key == "domain":
            value = value.strip(" \t")
            if value:  # RFC 6265 5.2.3: an empty Domain is ignored
                value = value[1:] if value.startswith(".") else value
                domain = value.lower() or None
        elif key == "path":
            value = value.strip(" \t")
            # RFC 6265 5.2.4: an empty or relative Path means the default path.
            path = value if value.startswith("/") else None
    return name, domain, path


def set_cookie_key(header_value: str) -> tuple[str, str | None, str]:
    """(name, domain, path) of an upstream Set-Cookie, leniently; never raises.

    The domain is lower-cased without its leading dot, None when absent (host-only). A missing
    or invalid Path is reported as "/"; merge_set_cookies itself treats it as matching any path.
    """
    name, domain, path = _parse_scope(header_value)
    return name, domain, path or "/"


def clears_cookie(header_value: str, now_s: float) -> bool:
    """Whether this Set-Cookie deletes its cookie in a browser: an empty value, a Max-Age of
    zero or less, or (without a valid Max-Age) an Expires before `now_s`. Never raises."""
    pair, _, attributes = header_value.partition(";")
    _, eq, value = pair.partition("=")
    if not eq or not value.strip(" \t"):
        return True
    max_age: int | None = None
    expires: float | None = None
    for attribute in attributes.split(";"):
        key, _, raw = attribute.partition("=")
        key = key.strip(" \t").lower()
        raw = raw.strip(" \t")
        if key == "max-age":
            # RFC 6265 5.2.2: a leading "-" or a digit, then digits; anything else is ignored.
            digits = raw[1:] if raw.startswith("-") else raw
            if digits.isascii() and digits.isdigit():
                max_age = int(raw) if len(digits) < 12 else (-1 if raw.startswith("-") else 1)
        elif key == "expires":
            expires = http2time(raw) if len(raw) < 100 else None  # None when it does not parse
    if max_age is not None:  # RFC 6265 5.3 step 3: Max-Age wins over Expires
        return max_age <= 0
    return expires is not None and expires < now_s


def _our_key(cookie: SetCookie) -> tuple[str, str | None, str]:
    domain = cookie.domain.lower() if cookie.domain else None
    if domain and domain.startswith("."):
        domain = domain[1:]
    return cookie.name, domain or None, cookie.path


def merge_set_cookies(upstream: Sequence[str], ours: Sequence[SetCookie]) -> list[str]:
    """Every upstream Set-Cookie unchanged, then each of ours that the upstream did not set.

    Among ours, one header per (name, domain, path): the last one given wins.
    """
    set_by_upstream: dict[str, list[tuple[str | None, str | None]]] = {}
    for header_value in upstream:
        name, domain, path = _parse_scope(header_value)
        set_by_upstream.setdefault(name, []).append((domain, path))

    chosen: dict[tuple[str, str | None, str], SetCookie] = {}
    for cookie in ours:
        key = _our_key(cookie)
        _, our_domain, our_path = key
        scopes = set_by_upstream.get(cookie.name, ())
        if any((d is None or d == our_domain) and (p is None or p == our_path) for d, p in scopes):
            continue
        chosen.pop(key, None)  # keep the last one given, at its own position
        chosen[key] = cookie
    return [*upstream, *(cookie.header() for cookie in chosen.values())]


@dataclass(frozen=True, slots=True)
class Merged:
    """The answer's Set-Cookie headers, and whether it carries tokens (then no shared cache may
    keep it: docs/behaviour.md §4)."""

    set_cookies: list[str]
    private: bool


NOTHING = Merged([], private=False)


def merge_answer(
    upstream: Sequence[str],
    ours: Sequence[SetCookie],
    session: Session | None,
    layout: Layout,
    attrs: CookieAttributes,
    now_s: float,
) -> Merged:
    """The browser's Set-Cookie headers from the app's (`upstream`), cookieguard's (`ours`, all of
    them the layout's), the request's session as `layout` read it (None: no session), and the
    wall clock (`now_s` judges a clearing Expires date). Pure; never raises."""
    if not upstream:
        return Merged(merge_set_cookies((), ours), private=True) if ours else NOTHING
    names = session.cookie_names if session is not None else frozenset()
    ending = names | {c.name for c in ours if c.value}
    scope = _scope(attrs)
    touched = writes = clears = False
    for header_value in upstream:
        name, domain, path = _parse_scope(header_value)
        if name not in names and not layout.owns(name):
            continue
        touched = True
        if clears_cookie(header_value, now_s):
            clears = clears or name in ending
        # The same name at another path or domain is another cookie in the browser.
        elif domain in (None, scope[0]) and path in (None, scope[1]):
            writes = True
    if writes:
        ours = [c for c in ours if not layout.owns(c.name) and c.name not in names]
    elif clears:
        ours = layout.clear_cookies(session, attrs) if session is not None else []
    return Merged(merge_set_cookies(upstream, ours), private=bool(ours) or touched)


def _scope(attrs: CookieAttributes) -> tuple[str | None, str]:
    domain = attrs.domain.lower().removeprefix(".") if attrs.domain else None
    return domain or None, attrs.path
