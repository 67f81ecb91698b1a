"""Pick the route for a request path: routes are tried in order, the first match wins."""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple
from urllib.parse import unquote, urlsplit

from cookieguard.config import Route


class Target(NamedTuple):
    """A request target as cookieguard routes and forwards it (docs/proxy.md "The proxy"). A
    tuple: one is made per request, and a frozen dataclass costs a setattr call per field."""

    path: str  # decoded and normalised: what routes match
    forward: str  # the same path as the client encoded it, plus the query string: what the upstream gets
    authority: str | None = None  # host[:port] of an absolute-form target; it replaces Host


def parse_target(raw: str) -> Target | None:
    """Normalise a request target; None when it cannot be routed without ambiguity (answer 400).

    - absolute-form (`http://host/path`, RFC 9112 section 3.2.2) becomes origin-form, and its
      authority is the request's host (the Host header is ignored, as the RFC requires of the
      server that receives it);
    - dot segments are removed (RFC 3986 section 5.2.4), `%2e` counted as `.`, and empty segments
      merged (`//a` is `/a`, as nginx's merge_slashes does): `/_next/static/../../dashboard` is
      `/dashboard` both for the route and for the upstream;
    - a path whose decoded form still holds a dot segment (`..%2f`) is refused: the route and the
      upstream could disagree about it.
    Everything else keeps the client's percent-encoding and query string.
    """
    authority = None
    if not raw.startswith("/"):
        if raw[:7].lower() != "http://" and raw[:8].lower() != "https://":
            return None  # asterisk-form (OPTIONS *) or authority-form (CONNECT): nothing to route
        parts = urlsplit(raw)
        authority = parts.netloc.rpartition("@")[2]  # userinfo is deprecated (RFC 9110 4.2.4)
        if not authority:
            return None
        raw = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        if not raw.startswith("/"):
            return None
    path, question, query = raw.partition("?")
    if "//" in path or "/." in path or "%2" in path:  # %2e, %2E: a dot
        path = _remove_dot_segments(path)
    decoded = unquote(path) if "%" in path else path
    if decoded is not path and _has_dot_segment(decoded):
        return None
    return Target(path=decoded, forward=path + question + query, authority=authority)


def _remove_dot_segments(path: str) -> str:
    segments = path[1:].split("/")
    out: list[str] = []
    trailing_slash = False
    last = len(segments) - 1
    for i, segment in enumerate(segments):
        dots = segment.replace("%2e", ".").replace("%2E", ".") if "%" in segment else segment
        if dots == "..":
            if out:
                out.pop()
        elif dots != "." and segment:
            out.append(segment)
            continue
        trailing_slash = i == last
    return "/" + "/".join(out) + ("/" if trailing_slash and out else "")


def _has_dot_segment(path: str) -> bool:
    return any(segment in (".", "..") for segment in path.split("/"))


class Router:
    def __init__(self, routes: Sequence[Route]) -> None:
        self.routes = tuple(routes)

    def match(self, path: str) -> Route | None:
        """`path` is the decoded request path without the query string."""
        for route in self.routes:
            if route.regex is not None:
                if route.regex.match(path):
                    return route
            elif path.startswith(route.match):
                return route
        return None


def describe_routes(routes: Sequence[Route]) -> list[str]:
    """One line per route, as `cookieguard check` prints them."""
    lines = []
    for i, r in enumerate(routes):
        flags = [] if r.refresh else ["refresh: off"]
        if not r.preserve_host:
            flags.append("host: upstream's")
        if r.timeout_s is not None:
            flags.append(f"timeout: {r.timeout_s:g}s")
        extra = f"  ({', '.join(flags)})" if flags else ""
        lines.append(f"  [{i}] {r.match:<24} -> {r.upstream}{extra}")
    return lines
