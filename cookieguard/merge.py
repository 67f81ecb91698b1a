"""Merge the proxy's Set-Cookie headers into the upstream's response (SPEC section 2).

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
"""

from __future__ import annotations

from collections.abc import Sequence

from cookieguard.cookies import SetCookie

__all__ = ["merge_set_cookies", "set_cookie_key"]


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
