"""Which headers cross the proxy, in each direction (docs/proxy.md "The proxy").

Towards the upstream: the client's headers minus hop-by-hop ones, the Cookie header as session
repair decided, and the forwarding headers written from the socket. Towards the client: the
upstream's headers minus hop-by-hop ones, Set-Cookie as merged, and no shared-cache directive on
an answer that carries tokens.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterable, Mapping, Sequence

from aiohttp import web

from cookieguard.config import IPNetwork, Route
from cookieguard.edge.client import client_address, is_trusted

# RFC 9110 section 7.6.1: connection-specific fields a proxy must not forward.
HOP_BY_HOP = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-connection",
        "proxy-authenticate",
        "proxy-authorization",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
    }
)
# Headers cookieguard writes itself (docs/proxy.md "The proxy"): the client's are dropped or, from a
# trusted proxy, extended; `Connection` naming one of them does not remove it.
_FORWARDING = frozenset(
    {"x-forwarded-for", "x-forwarded-proto", "x-forwarded-host", "forwarded", "x-real-ip"}
)
_OURS = _FORWARDING | {"host", "cookie"}
# What a load balancer in front writes besides those (Traefik, the AWS ALB, nginx configs): kept
# from a trusted proxy only, like X-Forwarded-Host (docs/proxy.md "The proxy", the table of
# client headers removed).
_FROM_TRUSTED = {
    "x-forwarded-port": "X-Forwarded-Port",
    "x-forwarded-prefix": "X-Forwarded-Prefix",
    "x-forwarded-server": "X-Forwarded-Server",
}
# Never from a client, trusted proxy or not (docs/proxy.md "The proxy", the table of client headers removed):
# other names for the client's address or scheme that frameworks read before cookieguard's own
# (Rack takes X-Forwarded-Scheme over X-Forwarded-Proto), and the URL rewrites IIS-style apps
# route by. cookieguard's X-Real-IP and X-Forwarded-* say the same, from the socket.
_SPOOFABLE = frozenset(
    {
        "x-forwarded-scheme",
        "x-forwarded-ssl",
        "x-client-ip",
        "true-client-ip",
        "cf-connecting-ip",
        "x-cluster-client-ip",
        "fastly-client-ip",
        "x-original-forwarded-for",
        "x-original-url",
        "x-rewrite-url",
    }
)
_PLAIN_CONNECTION = frozenset({"keep-alive", "close"})
_HOP, _COOKIE, _HOST, _FORWARDED = "hop", "cookie", "host", "forwarded"
_KIND = {
    **dict.fromkeys(HOP_BY_HOP | _SPOOFABLE, _HOP),
    **dict.fromkeys(_FORWARDING | _FROM_TRUSTED.keys(), _FORWARDED),
    "cookie": _COOKIE,
    "host": _HOST,
}


class CookieTooLarge(Exception):
    """The Cookie header the app would get is longer than `limits.max_cookie_size` (a 431)."""


def _connection_tokens(values: Iterable[str]) -> set[str]:
    return {token.strip().lower() for value in values for token in value.split(",") if token.strip()}


def upstream_request_headers(
    request: web.Request,
    route: Route,
    cookie_header: str | None,
    *,
    trusted: Sequence[IPNetwork] = (),
    authority: str | None = None,
    max_cookie_size: int | None = None,
) -> list[tuple[str, str]]:
    """The client's headers minus hop-by-hop ones; Cookie replaced if given; the forwarding
    headers set from the socket (docs/proxy.md "The proxy").

    From a client that is not one of `trusted` (a load balancer in front of cookieguard), the
    client's own X-Forwarded-*, Forwarded and X-Real-IP are dropped: they would let anybody tell
    the app any address or scheme. From a trusted proxy, its X-Forwarded-For is extended with the
    peer, and its X-Forwarded-Proto/-Host/-Port/-Prefix/-Server and Forwarded are kept. Other
    names for the client's address, scheme or URL never cross, nor does any name with an
    underscore: CGI-style apps (WSGI, PHP, Rack) read `X_Forwarded_For` as `X-Forwarded-For`
    (nginx drops them by default for the same reason). `authority`, from an
    absolute-form request target, replaces the Host header (RFC 9112 section 3.2.2).
    Raises CookieTooLarge when the Cookie header it would write is over `max_cookie_size`.
    """
    raw = request.headers
    named_by_connection = (
        _connection_tokens(raw.getall("Connection", ())) - _OURS if "Connection" in raw else ()
    )
    headers: list[tuple[str, str]] = []
    cookies: list[str] = []
    forwarding: dict[str, list[str]] = {}
    for name, value in raw.items():
        lname = name.lower()
        # One lookup for the common case, a header of no special kind (hop-by-hop, the spoofable
        # variants and Host go).
        kind = _KIND.get(lname)
        if kind is None:
            if not (lname in named_by_connection or lname.startswith("proxy-") or "_" in lname):
                headers.append((name, value))
        elif kind is _COOKIE:
            cookies.append(value)
        elif kind is _FORWARDED:  # never in named_by_connection: that leaves out _OURS
            forwarding.setdefault(lname, []).append(value)
    host = authority or raw.get("Host")
    if route.preserve_host and host:
        headers.insert(0, ("Host", host))
    if cookie_header is None and cookies:
        cookie_header = cookies[0] if len(cookies) == 1 else "; ".join(cookies)
    if cookie_header:
        if max_cookie_size is not None and len(cookie_header) > max_cookie_size:
            raise CookieTooLarge
        headers.append(("Cookie", cookie_header))
    peer = request.remote or "unknown"
    scheme = request.scheme
    if not is_trusted(peer, trusted):
        headers.append(("X-Forwarded-For", peer))
        headers.append(("X-Forwarded-Proto", scheme))
        if host:
            headers.append(("X-Forwarded-Host", host))
        headers.append(("X-Real-IP", peer))
        headers.append(("Forwarded", _forwarded_element(peer, scheme, host)))
        return headers
    their_for = forwarding.get("x-forwarded-for")
    headers.append(("X-Forwarded-For", ", ".join([*their_for, peer]) if their_for else peer))
    proto = ", ".join(forwarding.get("x-forwarded-proto") or [scheme])
    headers.append(("X-Forwarded-Proto", proto))
    their_host = forwarding.get("x-forwarded-host")
    if their_host or host:
        headers.append(("X-Forwarded-Host", ", ".join(their_host) if their_host else host or ""))
    client = client_address(peer, their_for or (), trusted)
    headers.append(("X-Real-IP", client))
    for lname, name in _FROM_TRUSTED.items():
        headers.extend((name, value) for value in forwarding.get(lname, ()))
    their_forwarded = forwarding.get("forwarded")
    if their_forwarded:
        headers.extend(("Forwarded", value) for value in their_forwarded)
    else:
        headers.append(("Forwarded", _forwarded_element(client, scheme, host)))
    return headers


# The same few (client, scheme, host) triples come again and again; the Host header is the
# client's to choose, hence the bound.
@functools.lru_cache(maxsize=1024)
def _forwarded_element(client: str, scheme: str, host: str | None) -> str:
    element = f"for={_forwarded_value(f'[{client}]' if ':' in client else client)};proto={scheme}"
    return element + f";host={_forwarded_value(host)}" if host else element


_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")


def _forwarded_value(value: str) -> str:
    # RFC 7239 section 4: a token, else a quoted string (an IPv6 address, a host with a port).
    if _TOKEN.fullmatch(value):
        return value
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


# Besides Cache-Control, what shared caches (CDNs) obey: RFC 9213's targeted fields
# (CDN-Cache-Control, Cloudflare-/Vercel-/Netlify-CDN-Cache-Control), Surrogate-Control (Fastly,
# Akamai), Akamai's Edge-Control, Expires (RFC 9111 5.3, used when no max-age is given), and
# nginx's X-Accel-Expires (its proxy cache honours it over Cache-Control).
_SHARED_CACHE = frozenset(
    {"cache-control", "surrogate-control", "edge-control", "expires", "x-accel-expires"}
)


def response_headers(
    upstream: list[tuple[str, str]],
    connection: list[str],
    set_cookies: list[str],
    *,
    private: bool = False,
) -> list[tuple[str, str]]:
    """The upstream's end-to-end response headers (edge/upstream.py leaves out the hop-by-hop
    ones) minus those its `Connection` values name; Set-Cookie replaced by the merge.

    When `set_cookies` is non-empty it already holds the upstream's own Set-Cookie headers (the
    merge keeps them, byte for byte); each stays a header of its own, never joined. When the
    answer is `private` (it carries tokens), every caching directive for shared caches goes: the
    caller sets `Cache-Control: private, no-store` in their place. An answer with none of these
    (nearly every one) is relayed with the upstream's list as it is.
    """
    # `keep-alive` and `close`, what nearly every upstream sends, name nothing that is still here.
    named = (
        _connection_tokens(connection) - HOP_BY_HOP - {"close"}
        if connection and (len(connection) > 1 or connection[0].strip().lower() not in _PLAIN_CONNECTION)
        else None
    )
    if not (set_cookies or private or named):
        return upstream
    headers: list[tuple[str, str]] = []
    for name, value in upstream:
        lname = name.lower()
        if set_cookies and lname == "set-cookie":
            continue
        if private and (lname in _SHARED_CACHE or lname.endswith("cdn-cache-control")):
            continue
        if named and lname in named:
            continue
        headers.append((name, value))
    if set_cookies:
        headers.extend([("Set-Cookie", value) for value in set_cookies])
    return headers


def is_navigation(headers: Mapping[str, str]) -> bool:
    """A top-level page load (gets a redirect to sign in) vs a background fetch (gets a 401)."""
    mode = headers.get("Sec-Fetch-Mode")
    if mode is not None and mode.lower() != "navigate":
        return False
    return "text/html" in headers.get("Accept", "")
