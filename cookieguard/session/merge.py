"""Merge the proxy's Set-Cookie headers into the upstream's response (docs/behaviour.md §4).

The upstream's headers are returned untouched: never joined, never split on commas (an `Expires`
date contains one). One of ours is added only when the upstream did not set the same cookie in
this response, because the app may be signing the user out and its decision wins.

"The same cookie" is (name, domain, path), as a browser keys its store (RFC 6265 5.3 step 11).
An upstream Set-Cookie without `Domain` or without a valid `Path` leaves that part to the browser
(host-only, and the request path's directory: RFC 6265 5.1.4), which cannot be worked out here
without the request. Such a missing part matches ours whatever it is: wrongly keeping a cookie
the app meant to delete could sign a signed-out user back in, while wrongly yielding to the app
only costs one response without our refresh. Amplify's adapter-nextjs, for one, deletes cookies
with a bare `name=;Expires=...`.

An app that clears any auth cookie of the session (Max-Age <= 0, an Expires in the past, or an
empty value) is signing the user out: then none of our Set-Cookie headers that carry a value is
added, whatever its name (docs/behaviour.md §4: the app's sign-out holds). Only our deletions may
still go out.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence

# http2time reads the date forms Set-Cookie uses (RFC 1123, RFC 850 "01-Jan-70", asctime) and
# returns None for the rest; it is public in http.cookiejar but absent from typeshed.
from http.cookiejar import http2time  # type: ignore[attr-defined]

from cookieguard.cookies import SetCookie

__all__ = ["clears_cookie", "merge_set_cookies", "set_cookie_key", "signs_out"]


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


def signs_out(upstream: Sequence[str], auth_cookies: Collection[str], now_s: float) -> bool:
    """Whether the upstream clears one of these auth cookies in this response."""
    if not auth_cookies:
        return False
    for header_value in upstream:
        name, _, _ = _parse_scope(header_value)
        if name in auth_cookies and clears_cookie(header_value, now_s):
            return True
    return False


def _our_key(cookie: SetCookie) -> tuple[str, str | None, str]:
    domain = cookie.domain.lower() if cookie.domain else None
    if domain and domain.startswith("."):
        domain = domain[1:]
    return cookie.name, domain or None, cookie.path


def merge_set_cookies(
    upstream: Sequence[str],
    ours: Sequence[SetCookie],
    *,
    auth_cookies: Collection[str] = (),
    now_s: float = 0.0,
) -> list[str]:
    """Every upstream Set-Cookie unchanged, then each of ours that the upstream did not set.

    Among ours, one header per (name, domain, path): the last one given wins. When the upstream
    clears one of `auth_cookies` (the session's) or a cookie ours would write, it is signing the
    user out, and only our deletions are kept (`now_s` judges a clearing Expires date).
    """
    named = {*auth_cookies, *(cookie.name for cookie in ours if cookie.value)}
    if signs_out(upstream, named, now_s):
        ours = [cookie for cookie in ours if not cookie.value]
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
