"""cookieguard's configuration: frozen records, one per section of the YAML file.

The records are plain data with their defaults, and each field read from the YAML declares its
key there, once (`schema.key`: the key's name, parser, default and the line of
docs/configuration.md "Configuration reference"). cookieguard.loader reads the YAML into the
records from those declarations; the reference's table rows (`python -m cookieguard.loader
--reference`) and the key list the tests check come from them too.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from cookieguard.schema import (
    boolean,
    duration_text,
    http_url,
    key,
    member_of,
    nonempty_string,
    one_of,
    parse_duration,
    positive_duration,
    positive_int,
    section_key,
    size,
    size_text,
    string,
)
from cookieguard.vocabulary import OnRejected

if TYPE_CHECKING:
    from cookieguard.session.layouts.base import LayoutConfig
    from cookieguard.tokens.providers import ProviderConfig

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


# ---------------------------------------------------------------------------------------------
# Value parsers of this file's keys
# ---------------------------------------------------------------------------------------------


def listen_address(value: Any) -> tuple[str, int]:
    s = string(value)
    m = re.match(r"^(?:\[([0-9a-fA-F:]+)\]|([^:\[\]]*)):(\d{1,5})$", s)
    if not m or not 0 <= int(m.group(3)) <= 65535:
        raise ValueError(f"must be host:port, e.g. 0.0.0.0:8080, got {s!r}")
    return (m.group(1) or m.group(2) or "0.0.0.0", int(m.group(3)))


def admin_path(value: Any) -> str:
    s = string(value).rstrip("/")
    if not s.startswith("/") or " " in s:
        raise ValueError(f"must be an absolute path such as /.cookieguard, got {s!r}")
    return s


def encryption_keys(value: Any) -> tuple[str, ...]:
    if isinstance(value, list):
        items = [string(v).strip() for v in value]
    else:
        items = [k.strip() for k in string(value).split(",")]
    keys = tuple(k for k in items if k)
    from cryptography.fernet import Fernet  # only needed when keys are configured

    for i, k in enumerate(keys):
        try:
            Fernet(k.encode())
        except (ValueError, TypeError):
            # Never echo the key itself: it is a secret.
            raise ValueError(
                f"key #{i + 1} is not a Fernet key (32 bytes, url-safe base64, 44 characters; "
                "`cookieguard keygen` prints one)"
            ) from None
    return keys


_SAME_SITE = {"lax": "Lax", "strict": "Strict", "none": "None"}


def same_site(value: Any) -> str:
    s = string(value)
    if s.lower() not in _SAME_SITE:
        raise ValueError(f"must be one of Lax, Strict, None, got {s!r}")
    return _SAME_SITE[s.lower()]


_TOKEN_CHARS = re.compile(r"^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$")  # RFC 9110 token


def cookie_path(value: Any) -> str:
    s = string(value)
    if not s.startswith("/") or any(c in s for c in ";\r\n"):
        raise ValueError(f"must be an absolute path without ';', got {s!r}")
    return s


def cookie_domain(value: Any) -> str:
    s = nonempty_string(value)
    if not re.match(r"^\.?[A-Za-z0-9.-]+$", s):
        raise ValueError(f"not a domain name: {s!r}")
    return s


def max_age(value: Any) -> int:
    return int(parse_duration(value))


def login_url(value: Any) -> str:
    s = nonempty_string(value)
    # Same-site only: an absolute path, not a scheme-relative //host (no open redirect). Browsers
    # strip tabs and newlines from URLs and treat `\` as `/`, so `/\t/evil` would become `//evil`.
    if (
        not s.startswith("/")
        or s.startswith("//")
        or "\\" in s
        or any(c.isspace() or ord(c) < 0x20 or ord(c) == 0x7F for c in s)
    ):
        raise ValueError(f"must be a same-site absolute path such as /login, got {s!r}")
    return s


def redis_url(value: Any) -> str:
    s = string(value)
    if urlsplit(s).scheme not in ("redis", "rediss", "unix"):
        raise ValueError("not a redis:// , rediss:// or unix:// URL")
    return s


def positive_number(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or value <= 0:
        raise ValueError(f"must be a positive number, got {value!r}")
    return float(value)


def non_negative_int(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(f"must be a whole number, 0 or more, got {value!r}")
    return value


def networks(value: Any) -> tuple[IPNetwork, ...]:
    items = value if isinstance(value, list) else [value]
    out = []
    for item in items:
        text = string(item).strip()
        try:
            out.append(ipaddress.ip_network(text, strict=False))
        except ValueError:
            raise ValueError(f"not an IP address or CIDR range: {text!r}") from None
    return tuple(out)


# ---------------------------------------------------------------------------------------------
# The schema, as frozen dataclasses; each YAML key declared on its field
# ---------------------------------------------------------------------------------------------


def _duration(name: str, default_s: float, meaning: str, *, positive: bool = False) -> Any:
    parse = positive_duration if positive else parse_duration
    return key(name, parse, meaning, default=default_s, show=duration_text)


@dataclass(frozen=True)
class CookieAttributes:
    # A layout's defaults are its cookie library's (cookieguard.loader reads them as the defaults).
    secure: bool = key(
        "secure",
        boolean,
        "`Secure` on written cookies",
        default=True,
        shown="`true` (supabase layout: `false`)",
    )
    same_site: str | None = key(
        "same_site", same_site, "`Lax`, `Strict` or `None` (needs `secure`)", default="Lax"
    )  # the string "None" is sent as such
    path: str = key("path", cookie_path, "cookie path", default="/")
    max_age_s: int = key(
        "max_age", max_age, "cookie lifetime", default=31536000, shown="`365d` (supabase layout: `400d`)"
    )
    http_only: bool = key(
        "http_only",
        boolean,
        "Amplify's browser code must read its cookies: keep `false` for the amplify layout",
        default=False,
    )
    domain: str | None = key("domain", cookie_domain, "cookie domain", default=None, shown="none (host-only)")


@dataclass(frozen=True)
class CookiesConfig:
    # Read by the loader against the layout registry (cookieguard.session.layouts.LAYOUTS); each
    # layout reads its own keys of this section (its `config` record, layouts/<name>.py).
    layout: str = key(
        "layout",
        string,
        "`amplify` (Amplify v6 cookie names), `authjs` (Auth.js's encrypted session cookie, "
        "[providers/authjs.md](providers/authjs.md)), `named` or `supabase` (`@supabase/ssr`'s "
        "session cookie)",
        default="amplify",
    )
    attributes: CookieAttributes = section_key("attributes", CookieAttributes)
    # The layout's own keys of this section, as its record read them (None: its defaults).
    layout_config: LayoutConfig | None = None


@dataclass(frozen=True)
class RefreshConfig:
    before_expiry_s: float = _duration(
        "before_expiry", 300.0, "refresh when the access token has less than this left"
    )
    grace_s: float = _duration("grace", 60.0, "how long a refresh result answers for the old refresh token")
    on_rejected: OnRejected = key(
        "on_rejected",
        member_of(OnRejected),
        " or ".join(", ".join(f"`{v}`" for v in OnRejected).rsplit(", ", 1))
        + " ([docs/behaviour.md §3](behaviour.md#3-refresh-outcomes)); `flag` only with a layout "
        "that carries it out",
        default=OnRejected.CLEAR,
    )
    login_url: str = key("login_url", login_url, "same-site path for `on_rejected: login`", default="/login")
    backoff_s: float = _duration("backoff", 5.0, "how long a session waits after a transient IdP failure")


@dataclass(frozen=True)
class VerifyConfig:
    signature: bool = key(
        "signature", boolean, "verify JWTs against the JWKS before trusting their claims", default=True
    )
    audience: str | None = key(
        "audience",
        nonempty_string,
        "OIDC and Supabase: required `aud` of access tokens",
        default=None,
        shown="none (supabase: `authenticated`)",
    )


@dataclass(frozen=True)
class StoreConfig:
    kind: str = key(
        "kind", one_of("memory", "redis"), "`memory` (one replica) or `redis` (several)", default="memory"
    )
    url: str = key("url", redis_url, "Redis URL", default="redis://127.0.0.1:6379/0")
    encryption_keys: tuple[str, ...] = key(
        "encryption_key",
        encryption_keys,
        "Fernet key(s), comma-separated or a list: encrypt with the first, decrypt with any "
        "(`cookieguard keygen`)",
        default=(),
        shown="none",
        repr=False,
    )
    max_entries: int = key(
        "max_entries",
        positive_int,
        "cap on kept results and backoff entries (oldest evicted first; expired results are dropped as "
        "new ones are written)",
        default=100_000,
    )
    lock_lease_s: float = _duration(
        "lock_lease", 5.0, "lease of a refresh lock; extended while the refresh runs", positive=True
    )


@dataclass(frozen=True)
class Route:
    # `match` and `upstream` are read by the loader (a regex is compiled, the top-level upstream
    # is the fallback).
    match: str = key(
        "match",
        nonempty_string,
        "path prefix (`/api/`) or `regex:<pattern>`; first match wins",
        shown="required",
    )
    upstream: str = key(
        "upstream",
        http_url,
        "upstream for this route (not needed with `forward_auth.enabled`: the ingress forwards)",
        shown="top-level `upstream`",
    )
    refresh: bool = key("refresh", boolean, "`false` skips all session work (static assets)", default=True)
    preserve_host: bool = key(
        "preserve_host", boolean, "forward the client's `Host`; `false` sends the upstream's", default=True
    )
    timeout_s: float | None = key(
        "timeout",
        positive_duration,
        "read timeout for this route (long polls)",
        default=None,
        shown="`timeouts.upstream_read`",
    )  # read timeout override for this route
    client_body_s: float | None = key(
        "client_body",
        positive_duration,
        "the whole request body must arrive within this on this route (uploads)",
        default=None,
        shown="`timeouts.client_body`",
    )
    regex: re.Pattern[str] | None = field(default=None, compare=False)


@dataclass(frozen=True)
class TimeoutsConfig:
    upstream_connect_s: float = _duration(
        "upstream_connect",
        5.0,
        "connect timeout to the upstream (then 504); also how long a request waits for a free "
        "connection when `limits.upstream_connections` are all in use (then 503)",
        positive=True,
    )
    upstream_read_s: float = _duration(
        "upstream_read", 60.0, "longest silence from the upstream (then 504)", positive=True
    )
    drain_s: float = _duration(
        "drain", 10.0, "on SIGTERM, how long in-flight requests may finish", positive=True
    )
    # Slow and idle clients (docs/behaviour.md §9).
    client_header_s: float = _duration(
        "client_header",
        10.0,
        "a request's line and headers must arrive within this (from the connection's opening, or "
        "the first byte of a later request on it), else `408` and close",
        positive=True,
    )
    client_body_idle_s: float = _duration(
        "client_body_idle",
        30.0,
        "longest pause between two bytes of a request body: then the upstream request is aborted, the "
        "client gets `408` and the connection is closed (`client_timeout` event, `phase: body`)",
        positive=True,
    )
    client_body_s: float = _duration(
        "client_body",
        60.0,
        "the whole request body must arrive within this (per route: `routes[].client_body`), else "
        "`408` and close (`client_timeout`, `phase: body`); a body trickled just under "
        "`client_body_idle` cannot hold a connection for ever",
        positive=True,
    )
    client_write_s: float = _duration(
        "client_write",
        30.0,
        "longest time a client may go without accepting a byte of an answer: then it is cut (the "
        "connection closed, `client_timeout` event, `phase: write`) and the upstream connection, if "
        "still held, is closed",
        positive=True,
    )
    keepalive_s: float = _duration(
        "keepalive", 75.0, "an idle kept-alive client connection is closed after this", positive=True
    )
    websocket_idle_s: float = _duration(
        "websocket_idle",
        300.0,
        "a proxied WebSocket with no message (pings included) either way for this long is closed on "
        "both sides (close code 1001)",
        positive=True,
    )


@dataclass(frozen=True)
class LimitsConfig:
    """Budgets for IdP calls and connections (docs/security.md "Abuse limits").

    Unproven sessions (no token beside the refresh token that verifies against the IdP's keys)
    may cost at most `unproven_per_address` IdP calls per client address per minute (burst the
    same) and `unproven_per_second` in all; a proven subject (`sub`) at most
    `refresh_tokens_per_subject` distinct refresh tokens per 10 minutes; every IdP call together
    at most `idp_calls_per_second`, proven sessions first. A proven session whose access token
    has expired (or is about to) waits for the ceiling instead of being forwarded unrefreshed: at
    most `refresh_queue` of them per replica, each at most `refresh_wait_s`.
    """

    max_connections: int = key(
        "max_connections",
        positive_int,
        "open client connections on the main listener; one more is answered `503` and closed, the "
        "open ones are unaffected (about 5 MiB per 1,000 idle connections)",
        default=10_000,
    )
    # Peers whose X-Forwarded-For is believed (a load balancer in front of cookieguard).
    trusted_proxies: tuple[IPNetwork, ...] = key(
        "trusted_proxies",
        networks,
        "CIDR list of load balancers in front of cookieguard whose `X-Forwarded-*`/`Forwarded` are "
        "believed ([The proxy](proxy.md))",
        default=(),
        shown="none",
    )
    unproven_per_address: int = key(
        "unproven_per_address",
        positive_int,
        "IdP calls per minute (burst the same) for unproven sessions from one client address (see [Abuse "
        "limits](security.md#abuse-limits))",
        default=5,
    )
    unproven_per_second: float = key(
        "unproven_per_second",
        positive_number,
        "IdP calls per second for all unproven sessions together, per replica",
        default=1.0,
        show=lambda v: f"{v:g}",
    )
    refresh_tokens_per_subject: int = key(
        "refresh_tokens_per_subject",
        positive_int,
        "distinct refresh tokens one proven subject (`sub`) may have refreshed per 10 minutes",
        default=5,
    )
    idp_calls_per_second: float = key(
        "idp_calls_per_second",
        positive_number,
        "ceiling on all IdP calls, per replica, as the IdP counts them (a call holds its slot until a "
        "second after its answer); unproven sessions may not use its last half",
        default=50.0,
        show=lambda v: f"{v:g}",
    )
    refresh_queue: int = key(
        "refresh_queue",
        non_negative_int,
        "proven sessions with an expired access token that may wait for the IdP ceiling at once, per "
        "replica, instead of being forwarded unrefreshed; `0`: none wait (one more is forwarded "
        "unchanged, `limited`, `error: queue_full`)",
        default=1000,
    )
    refresh_wait_s: float = _duration(
        "refresh_wait",
        10.0,
        "how long such a session waits at most for the ceiling (then forwarded unchanged, `limited`, "
        "`error: wait_expired`); at 50 calls per second, 300 sessions expiring at once are all served "
        "within about 6 s",
        positive=True,
    )
    # Connections cookieguard holds open to each upstream origin, in use and idle together.
    upstream_connections: int = key(
        "upstream_connections",
        positive_int,
        "connections to each upstream origin (host, port, scheme), in use and idle, open WebSockets "
        "included; at the cap a "
        "request waits up to `timeouts.upstream_connect` for one to be released, then gets a 503 "
        "(`upstream_error`, `error: pool_full`)",
        default=1_000,
    )
    max_cookie_size: int = key(
        "max_cookie_size",
        size,
        "longest `Cookie` header forwarded (a request's `Cookie` headers together, as the app would get "
        "them); longer gets `431` from cookieguard, quoting nothing. Set it to your app's own limit "
        "([The proxy](proxy.md#the-proxy)). Sizes take `KB`/`MB` (1 KB = 1,024 bytes) or plain bytes",
        default=64 * 1024,
        show=size_text,
    )
    request_buffer: int = key(
        "request_buffer",
        size,
        "a request body up to this size is read whole (under `client_body_idle` and `client_body`) "
        "before an upstream connection is taken, so slow senders hold none of the app's connections; "
        "a larger body streams, counted against `upstream_connections_per_address` while it does. "
        "Memory: up to this much per request with a body in flight",
        default=1024 * 1024,
        show=size_text,
    )
    response_buffer: int = key(
        "response_buffer",
        size,
        "the app's answer is read into a buffer of up to this size per request, so an answer that "
        "fits is off the upstream connection (back to the pool) as soon as the app is done, however "
        "slowly the client reads; a larger answer streams and holds its connection until sent. "
        "Memory: up to this much per client that reads slower than the app answers",
        default=1024 * 1024,
        show=size_text,
    )
    upstream_connections_per_address: int | None = key(
        "upstream_connections_per_address",
        positive_int,
        "upstream connections one client address may hold streaming: request bodies larger than "
        "`request_buffer` still being received, answers larger than `response_buffer` still being "
        "sent. One more such upload is answered `503` and closed (`client_timeout`, `phase: body`, "
        "`reason: address_share`); one more such answer cuts its client (`phase: write`). Behind a "
        "load balancer, set `trusted_proxies` so addresses are the clients'",
        default=None,
        shown="half of `upstream_connections`",
    )


@dataclass(frozen=True)
class LoggingConfig:
    level: str = key(
        "level",
        one_of("debug", "info", "warning", "error"),
        "`debug`, `info`, `warning`, `error`",
        default="info",
    )
    format: str = key(
        "format", one_of("json", "console"), "`json` (one object per line) or `console`", default="json"
    )
    access_log: bool = key("access_log", boolean, "one `access` event per request", default=False)


@dataclass(frozen=True)
class MetricsConfig:
    enabled: bool = key("enabled", boolean, "serve `metrics`", default=True)


# The ingresses forward-auth mode answers; each puts the original request in headers of its own
# (docs/forward-auth/README.md).
INGRESSES = ("traefik", "nginx", "envoy")


@dataclass(frozen=True)
class ForwardAuthConfig:
    """Forward-auth mode: `<admin_prefix>/forward-auth` answers an ingress (docs/forward-auth/README.md)."""

    enabled: bool = key(
        "enabled",
        boolean,
        "serve `<admin_prefix>/forward-auth` for an ingress that asks before it forwards "
        "([Forward-auth mode](forward-auth/README.md))",
        default=False,
    )
    ingress: str = key(
        "ingress",
        one_of(*INGRESSES),
        "`traefik`, `nginx` or `envoy`: which headers carry the original request",
        default="traefik",
    )


DEFAULT_LISTEN: tuple[str, int] = ("0.0.0.0", 8080)
DEFAULT_ADMIN_PREFIX = "/.cookieguard"


@dataclass(frozen=True, kw_only=True)
class Config:
    # `listen` is one key for two fields; the loader reads it and the provider section (its kind's).
    listen_host: str = key(
        "listen",
        listen_address,
        "address and port to serve on (`[::1]:8080` for IPv6)",
        shown="`0.0.0.0:8080`",
    )
    listen_port: int
    upstream: str | None = key(
        "upstream", http_url, "default upstream URL for routes that name none", shown="none"
    )
    admin_prefix: str = key(
        "admin_prefix",
        admin_path,
        "where `healthz`, `readyz`, `metrics`, `session`, `forward-auth` live; never proxied",
        shown=f"`{DEFAULT_ADMIN_PREFIX}`",
    )
    provider: ProviderConfig | None
    cookies: CookiesConfig = section_key("cookies", CookiesConfig, required=True)
    refresh: RefreshConfig = section_key("refresh", RefreshConfig, required=True)
    verify: VerifyConfig = section_key("verify", VerifyConfig, required=True)
    store: StoreConfig = section_key("store", StoreConfig, required=True)
    routes: tuple[Route, ...] = section_key("routes", Route, required=True, many=True)
    timeouts: TimeoutsConfig = section_key("timeouts", TimeoutsConfig, required=True)
    logging: LoggingConfig = section_key("logging", LoggingConfig, required=True)
    metrics: MetricsConfig = section_key("metrics", MetricsConfig, required=True)
    limits: LimitsConfig = section_key("limits", LimitsConfig)
    forward_auth: ForwardAuthConfig = section_key("forward_auth", ForwardAuthConfig)
    # The listener for healthz, readyz and metrics (docs/operations.md "Endpoints"): loopback
    # unless the operator opens it (a Prometheus scraping the pod's address needs 0.0.0.0:9090).
    # readyz and metrics describe the deployment and are never served on the public listener.
    admin_listen: tuple[str, int] = key(
        "admin_listen",
        listen_address,
        "the listener for `healthz`, `readyz` and `metrics` (loopback by default); `readyz` and "
        "`metrics` are never served on the main listener ([Endpoints](operations.md#endpoints)); "
        "`0.0.0.0:9090` lets Prometheus scrape a pod's address; must not share `listen`'s port",
        default=("127.0.0.1", 9090),
        show=lambda value: f"`{value[0]}:{value[1]}`",
    )
    source: str = "<memory>"

    @property
    def listen(self) -> str:
        host = f"[{self.listen_host}]" if ":" in self.listen_host else self.listen_host
        return f"{host}:{self.listen_port}"
