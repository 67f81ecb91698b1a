"""Load and validate cookieguard's YAML configuration into the records of cookieguard.config.

The whole schema (docs/configuration.md "Configuration reference") is read here: YAML is read once, `${VAR}`
references are expanded, and every value is checked and turned into frozen dataclasses. All
problems are collected with their key path and reported together; nothing downstream re-checks
config. Defaults come from the records' fields, never from a second literal here.
"""

from __future__ import annotations

import ipaddress
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import yaml

from cookieguard.config import (
    DEFAULT_ADMIN_PREFIX,
    DEFAULT_LISTEN,
    Config,
    CookieAttributes,
    CookiesConfig,
    IPNetwork,
    LimitsConfig,
    LoggingConfig,
    MetricsConfig,
    RefreshConfig,
    Route,
    StoreConfig,
    TimeoutsConfig,
    VerifyConfig,
)
from cookieguard.schema import Section as _Section
from cookieguard.schema import boolean as _bool
from cookieguard.schema import http_url as _url
from cookieguard.schema import nonempty_string as _nonempty_str
from cookieguard.schema import one_of as _one_of
from cookieguard.schema import parse_duration
from cookieguard.schema import positive_duration as _positive_duration
from cookieguard.schema import positive_int as _positive_int
from cookieguard.schema import string as _str
from cookieguard.session.layouts import LAYOUTS
from cookieguard.tokens.providers import KINDS, ProviderConfig, load_provider

DEFAULT_CONFIG_PATH = "config/cookieguard.yaml"
CONFIG_ENV_VAR = "COOKIEGUARD_CONFIG"


class ConfigError(Exception):
    """The configuration is invalid; `problems` holds one `key.path: message` per mistake."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        super().__init__("\n".join(f"config error: {p}" for p in problems))


# ---------------------------------------------------------------------------------------------
# Environment expansion and value parsers
# ---------------------------------------------------------------------------------------------

_ENV_REF = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


def expand_env(value: Any, env: Mapping[str, str], path: str, problems: list[str]) -> Any:
    """Replace `${VAR}` and `${VAR:-default}` in every string of a loaded YAML tree."""
    if isinstance(value, str):

        def sub(m: re.Match[str]) -> str:
            name, default = m.group(1), m.group(2)
            if name in env:
                return env[name]
            if default is not None:
                return default
            problems.append(f"{path}: environment variable {name} is not set")
            return ""

        return _ENV_REF.sub(sub, value)
    if isinstance(value, dict):
        return {k: expand_env(v, env, f"{path}.{k}" if path else str(k), problems) for k, v in value.items()}
    if isinstance(value, list):
        return [expand_env(v, env, f"{path}[{i}]", problems) for i, v in enumerate(value)]
    return value


def _listen(value: Any) -> tuple[str, int]:
    s = _str(value)
    m = re.match(r"^(?:\[([0-9a-fA-F:]+)\]|([^:\[\]]*)):(\d{1,5})$", s)
    if not m or not 0 <= int(m.group(3)) <= 65535:
        raise ValueError(f"must be host:port, e.g. 0.0.0.0:8080, got {s!r}")
    return (m.group(1) or m.group(2) or "0.0.0.0", int(m.group(3)))


def _admin_prefix(value: Any) -> str:
    s = _str(value).rstrip("/")
    if not s.startswith("/") or " " in s:
        raise ValueError(f"must be an absolute path such as /.cookieguard, got {s!r}")
    return s


def _encryption_keys(value: Any) -> tuple[str, ...]:
    if isinstance(value, list):
        items = [_str(v).strip() for v in value]
    else:
        items = [k.strip() for k in _str(value).split(",")]
    keys = tuple(k for k in items if k)
    from cryptography.fernet import Fernet  # only needed when keys are configured

    for i, key in enumerate(keys):
        try:
            Fernet(key.encode())
        except (ValueError, TypeError):
            # Never echo the key itself: it is a secret.
            raise ValueError(
                f"key #{i + 1} is not a Fernet key (32 bytes, url-safe base64, 44 characters; "
                "`cookieguard keygen` prints one)"
            ) from None
    return keys


_SAME_SITE = {"lax": "Lax", "strict": "Strict", "none": "None"}


def _same_site(value: Any) -> str:
    s = _str(value)
    if s.lower() not in _SAME_SITE:
        raise ValueError(f"must be one of Lax, Strict, None, got {s!r}")
    return _SAME_SITE[s.lower()]


# ---------------------------------------------------------------------------------------------
# The loader
# ---------------------------------------------------------------------------------------------


def load_config(path: str | os.PathLike[str], env: Mapping[str, str] | None = None) -> Config:
    """Read a YAML file and return the validated configuration, or raise ConfigError."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError([f"<file>: cannot read {path}: {exc.strerror or exc}"]) from None
    return parse_config(text, env=env, source=str(path))


def parse_config(text: str, env: Mapping[str, str] | None = None, source: str = "<memory>") -> Config:
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}" if mark else "?"
        problem = getattr(exc, "problem", None) or "invalid YAML"
        raise ConfigError([f"<file>: invalid YAML at {where}: {problem}"]) from None
    problems: list[str] = []
    data = expand_env(data, os.environ if env is None else env, "", problems)
    root = _Section(data, "", problems)
    config = _build(root, source)
    root.finish()
    if problems:
        raise ConfigError(problems)
    assert config is not None
    return config


def _build(root: _Section, source: str) -> Config | None:
    listen_host, listen_port = root.get("listen", _listen, DEFAULT_LISTEN)
    upstream = root.get("upstream", _url, None)
    admin_prefix = root.get("admin_prefix", _admin_prefix, DEFAULT_ADMIN_PREFIX)
    provider = _build_provider(root)
    cookies = _build_cookies(root, provider)
    refresh = _build_refresh(root, cookies.layout)
    verify = _build_verify(root, provider)
    store = _build_store(root)
    routes = _build_routes(root, upstream, admin_prefix)
    timeouts = _build_timeouts(root)
    limits = _build_limits(root)
    admin_listen = root.get("admin_listen", _listen, Config.admin_listen)
    if admin_listen is not None and admin_listen == (listen_host, listen_port) and listen_port != 0:
        root.error("admin_listen", "must differ from listen")
    logging_ = _build_logging(root)
    metrics_s = root.section("metrics")
    metrics = MetricsConfig(enabled=metrics_s.get("enabled", _bool, MetricsConfig.enabled))
    metrics_s.finish()
    return Config(
        listen_host=listen_host,
        listen_port=listen_port,
        upstream=upstream,
        admin_prefix=admin_prefix,
        provider=provider,
        cookies=cookies,
        refresh=refresh,
        verify=verify,
        store=store,
        routes=routes,
        timeouts=timeouts,
        logging=logging_,
        metrics=metrics,
        limits=limits,
        admin_listen=admin_listen,
        source=source,
    )


def _build_provider(root: _Section) -> ProviderConfig | None:
    if not root.has("provider"):
        root.seen.add("provider")
        return None
    return load_provider(root.section("provider"))


def _build_cookies(root: _Section, provider: ProviderConfig | None) -> CookiesConfig:
    s = root.section("cookies")
    layout = s.get("layout", _one_of(*LAYOUTS), CookiesConfig.layout)
    # The layout reads its own keys (layouts/<name>.py); another layout's key is a mistake.
    own = LAYOUTS[layout].config.load(s, provider)
    for other in LAYOUTS.values():
        for key in other.config.yaml_keys:
            if key in s.seen or key in LAYOUTS[layout].config.yaml_keys:
                continue
            s.seen.add(key)
            if s.has(key):
                owners = " or ".join(n for n, o in LAYOUTS.items() if key in o.config.yaml_keys)
                s.error(key, f"only valid with layout {owners} (not with layout {layout})")
    # A layout's defaults are its cookie library's (docs/configuration.md, "Configuration reference").
    defaults = CookieAttributes(**LAYOUTS[layout].attribute_defaults)
    a = s.section("attributes")
    max_age = a.get("max_age", parse_duration, float(defaults.max_age_s))
    attributes = CookieAttributes(
        secure=a.get("secure", _bool, defaults.secure),
        same_site=a.get("same_site", _same_site, defaults.same_site),
        path=a.get("path", _cookie_path, defaults.path),
        max_age_s=int(max_age),
        http_only=a.get("http_only", _bool, defaults.http_only),
        domain=a.get("domain", _cookie_domain, defaults.domain),
    )
    a.finish()
    if attributes.same_site == "None" and not attributes.secure:
        a.error("same_site", "None requires secure: true (browsers reject SameSite=None without Secure)")
    s.finish()
    kinds = LAYOUTS[layout].provider_kinds
    if provider is not None and kinds is not None and provider.kind not in kinds:
        fitting = [
            n for n, other in LAYOUTS.items() if provider.kind in (other.provider_kinds or (provider.kind,))
        ]
        s.error(
            "layout",
            f"{layout} layout needs provider.kind {' or '.join(kinds)} "
            f"(use layout {' or '.join(fitting)} for {provider.kind})",
        )
    return CookiesConfig(layout=layout, attributes=attributes, layout_config=own)


def _cookie_path(value: Any) -> str:
    s = _str(value)
    if not s.startswith("/") or any(c in s for c in ";\r\n"):
        raise ValueError(f"must be an absolute path without ';', got {s!r}")
    return s


def _cookie_domain(value: Any) -> str:
    s = _nonempty_str(value)
    if not re.match(r"^\.?[A-Za-z0-9.-]+$", s):
        raise ValueError(f"not a domain name: {s!r}")
    return s


def _login_url(value: Any) -> str:
    s = _nonempty_str(value)
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


# `refresh.on_rejected` policies some layout carries out (layouts/<name>.py: rejected_policies).
_LAYOUT_POLICIES = tuple(dict.fromkeys(p for layout in LAYOUTS.values() for p in layout.rejected_policies))


def _build_refresh(root: _Section, layout: str) -> RefreshConfig:
    s = root.section("refresh")
    d = RefreshConfig
    cfg = RefreshConfig(
        before_expiry_s=s.get("before_expiry", parse_duration, d.before_expiry_s),
        grace_s=s.get("grace", parse_duration, d.grace_s),
        on_rejected=s.get("on_rejected", _one_of("clear", "pass", "login", *_LAYOUT_POLICIES), d.on_rejected),
        login_url=s.get("login_url", _login_url, d.login_url),
        backoff_s=s.get("backoff", parse_duration, d.backoff_s),
    )
    if cfg.on_rejected in _LAYOUT_POLICIES and cfg.on_rejected not in LAYOUTS[layout].rejected_policies:
        owners = " or ".join(n for n, o in LAYOUTS.items() if cfg.on_rejected in o.rejected_policies)
        s.error(
            "on_rejected", f"{cfg.on_rejected} is only valid with layout {owners} (not with layout {layout})"
        )
    s.finish()
    return cfg


def _build_verify(root: _Section, provider: ProviderConfig | None) -> VerifyConfig:
    s = root.section("verify")
    cfg = VerifyConfig(
        signature=s.get("signature", _bool, VerifyConfig.signature),
        audience=s.get("audience", _nonempty_str, VerifyConfig.audience),
    )
    if cfg.audience is not None and provider is not None and provider.audience_unused:
        checked = [name for name, kind in KINDS.items() if not kind.audience_unused]
        s.error(
            "audience", f"only valid with provider.kind {' or '.join(checked)} ({provider.audience_unused})"
        )
    s.finish()
    return cfg


def _build_store(root: _Section) -> StoreConfig:
    s = root.section("store")
    d = StoreConfig
    cfg = StoreConfig(
        kind=s.get("kind", _one_of("memory", "redis"), d.kind),
        url=s.get("url", _redis_url, d.url),
        encryption_keys=s.get("encryption_key", _encryption_keys, d.encryption_keys),
        max_entries=s.get("max_entries", _positive_int, d.max_entries),
        lock_lease_s=s.get("lock_lease", _positive_duration, d.lock_lease_s),
    )
    s.finish()
    return cfg


def _redis_url(value: Any) -> str:
    s = _str(value)
    if urlsplit(s).scheme not in ("redis", "rediss", "unix"):
        raise ValueError("not a redis:// , rediss:// or unix:// URL")
    return s


def _build_routes(root: _Section, default_upstream: str | None, admin_prefix: str) -> tuple[Route, ...]:
    root.seen.add("routes")
    raw = root.data.get("routes")
    if raw is None:
        raw = [{"match": "/"}]
    if not isinstance(raw, list) or not raw:
        root.error("routes", "must be a non-empty list of routes")
        return ()
    routes: list[Route] = []
    for i, item in enumerate(raw):
        s = _Section(item, f"routes[{i}]", root.problems)
        match = s.get("match", _nonempty_str, "")
        if not s.has("match"):
            s.error("match", "required (a path prefix such as /api/, or regex:<pattern>)")
        regex = None
        if match.startswith("regex:"):
            try:
                regex = re.compile(match[len("regex:") :])
            except re.error as exc:
                s.error("match", f"invalid regular expression: {exc}")
        elif match and not match.startswith("/"):
            s.error("match", f"a path prefix must start with /, got {match!r} (or use regex:)")
        upstream = s.get("upstream", _url, None) or default_upstream
        if upstream is None and not s.has("upstream") and not root.has("upstream"):
            s.error("upstream", "no upstream for this route and no top-level upstream")
        route = Route(
            match=match,
            upstream=upstream or "",
            refresh=s.get("refresh", _bool, Route.refresh),
            preserve_host=s.get("preserve_host", _bool, Route.preserve_host),
            timeout_s=s.get("timeout", _positive_duration, Route.timeout_s),
            regex=regex,
        )
        s.finish()
        routes.append(route)
    return tuple(routes)


def _build_timeouts(root: _Section) -> TimeoutsConfig:
    s = root.section("timeouts")
    d = TimeoutsConfig
    cfg = TimeoutsConfig(
        upstream_connect_s=s.get("upstream_connect", _positive_duration, d.upstream_connect_s),
        upstream_read_s=s.get("upstream_read", _positive_duration, d.upstream_read_s),
        drain_s=s.get("drain", _positive_duration, d.drain_s),
        client_header_s=s.get("client_header", _positive_duration, d.client_header_s),
        client_body_idle_s=s.get("client_body_idle", _positive_duration, d.client_body_idle_s),
        keepalive_s=s.get("keepalive", _positive_duration, d.keepalive_s),
    )
    s.finish()
    return cfg


def _positive_number(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or value <= 0:
        raise ValueError(f"must be a positive number, got {value!r}")
    return float(value)


def _non_negative_int(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(f"must be a whole number, 0 or more, got {value!r}")
    return value


def _networks(value: Any) -> tuple[IPNetwork, ...]:
    items = value if isinstance(value, list) else [value]
    out = []
    for item in items:
        text = _str(item).strip()
        try:
            out.append(ipaddress.ip_network(text, strict=False))
        except ValueError:
            raise ValueError(f"not an IP address or CIDR range: {text!r}") from None
    return tuple(out)


def _build_limits(root: _Section) -> LimitsConfig:
    s = root.section("limits")
    d = LimitsConfig
    cfg = LimitsConfig(
        unproven_per_address=s.get("unproven_per_address", _positive_int, d.unproven_per_address),
        unproven_per_second=s.get("unproven_per_second", _positive_number, d.unproven_per_second),
        refresh_tokens_per_subject=s.get(
            "refresh_tokens_per_subject", _positive_int, d.refresh_tokens_per_subject
        ),
        idp_calls_per_second=s.get("idp_calls_per_second", _positive_number, d.idp_calls_per_second),
        refresh_queue=s.get("refresh_queue", _non_negative_int, d.refresh_queue),
        refresh_wait_s=s.get("refresh_wait", _positive_duration, d.refresh_wait_s),
        trusted_proxies=s.get("trusted_proxies", _networks, d.trusted_proxies),
        max_connections=s.get("max_connections", _positive_int, d.max_connections),
        upstream_connections=s.get("upstream_connections", _positive_int, d.upstream_connections),
    )
    s.finish()
    return cfg


def _build_logging(root: _Section) -> LoggingConfig:
    s = root.section("logging")
    d = LoggingConfig
    cfg = LoggingConfig(
        level=s.get("level", _one_of("debug", "info", "warning", "error"), d.level),
        format=s.get("format", _one_of("json", "console"), d.format),
        access_log=s.get("access_log", _bool, d.access_log),
    )
    s.finish()
    return cfg


def config_path_from(arg: str | None, env: Mapping[str, str] | None = None) -> str:
    """--config wins, then $COOKIEGUARD_CONFIG, then the default path."""
    env = os.environ if env is None else env
    return arg or env.get(CONFIG_ENV_VAR) or DEFAULT_CONFIG_PATH
