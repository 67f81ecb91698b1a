"""cookieguard's configuration: frozen records, one per section of the YAML file.

The records are plain data with their defaults; cookieguard.loader turns the YAML into them
(docs/configuration.md "Configuration reference"). Every default is defined here, once: the loader reads it
from the fields.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from cookieguard.session.layouts.base import LayoutConfig
    from cookieguard.tokens.providers import ProviderConfig

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


# ---------------------------------------------------------------------------------------------
# The schema, as frozen dataclasses
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class CookieAttributes:
    secure: bool = True
    same_site: str | None = "Lax"  # Lax | Strict | None (the string "None" is sent as such)
    path: str = "/"
    max_age_s: int = 31536000
    http_only: bool = False
    domain: str | None = None


@dataclass(frozen=True)
class CookiesConfig:
    layout: str = "amplify"  # a name in session.layouts.LAYOUTS
    attributes: CookieAttributes = field(default_factory=CookieAttributes)
    # The layout's own keys of this section, as its record read them (None: its defaults).
    layout_config: LayoutConfig | None = None


@dataclass(frozen=True)
class RefreshConfig:
    before_expiry_s: float = 300.0
    grace_s: float = 60.0
    on_rejected: str = "clear"  # clear | pass | login
    login_url: str = "/login"
    backoff_s: float = 5.0


@dataclass(frozen=True)
class VerifyConfig:
    signature: bool = True
    audience: str | None = None


@dataclass(frozen=True)
class StoreConfig:
    kind: str = "memory"  # memory | redis
    url: str = "redis://127.0.0.1:6379/0"
    encryption_keys: tuple[str, ...] = field(default=(), repr=False)
    max_entries: int = 100_000
    lock_lease_s: float = 5.0


@dataclass(frozen=True)
class Route:
    match: str
    upstream: str
    refresh: bool = True
    preserve_host: bool = True
    timeout_s: float | None = None  # read timeout override for this route
    regex: re.Pattern[str] | None = field(default=None, compare=False)


@dataclass(frozen=True)
class TimeoutsConfig:
    upstream_connect_s: float = 5.0
    upstream_read_s: float = 60.0
    drain_s: float = 10.0
    # Slow and idle clients (docs/behaviour.md §9): the request line and headers must arrive
    # within client_header; a request body may stall at most client_body_idle between bytes;
    # an idle keep-alive connection is closed after keepalive.
    client_header_s: float = 10.0
    client_body_idle_s: float = 30.0
    keepalive_s: float = 75.0


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

    unproven_per_address: int = 5
    unproven_per_second: float = 1.0
    refresh_tokens_per_subject: int = 5
    idp_calls_per_second: float = 50.0
    refresh_queue: int = 1000
    refresh_wait_s: float = 10.0
    # Peers whose X-Forwarded-For is believed (a load balancer in front of cookieguard).
    trusted_proxies: tuple[IPNetwork, ...] = ()
    max_connections: int = 10_000
    # Connections cookieguard holds open to each upstream origin, in use and idle together.
    upstream_connections: int = 1_000


@dataclass(frozen=True)
class LoggingConfig:
    level: str = "info"
    format: str = "json"  # json | console
    access_log: bool = False


@dataclass(frozen=True)
class MetricsConfig:
    enabled: bool = True


DEFAULT_LISTEN: tuple[str, int] = ("0.0.0.0", 8080)
DEFAULT_ADMIN_PREFIX = "/.cookieguard"


@dataclass(frozen=True)
class Config:
    listen_host: str
    listen_port: int
    upstream: str | None
    admin_prefix: str
    provider: ProviderConfig | None
    cookies: CookiesConfig
    refresh: RefreshConfig
    verify: VerifyConfig
    store: StoreConfig
    routes: tuple[Route, ...]
    timeouts: TimeoutsConfig
    logging: LoggingConfig
    metrics: MetricsConfig
    limits: LimitsConfig = field(default_factory=LimitsConfig)
    # A second listener for healthz, readyz and metrics only (e.g. 127.0.0.1:9090); None: they are
    # served under admin_prefix on the main listener only.
    admin_listen: tuple[str, int] | None = None
    source: str = "<memory>"

    @property
    def listen(self) -> str:
        host = f"[{self.listen_host}]" if ":" in self.listen_host else self.listen_host
        return f"{host}:{self.listen_port}"
