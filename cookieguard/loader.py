"""Load and validate cookieguard's YAML configuration into the records of cookieguard.config.

YAML is read once, `${VAR}` references are expanded, and each section is read into its record by
`schema.read_record` from the keys the record declares on its fields (docs/configuration.md
"Configuration reference"); what is left here is what spans keys or needs a registry (the layout and provider
kinds). All problems are collected with their key path and reported together; nothing downstream
re-checks config. Defaults come from the records' fields, never from a second literal here.

`python -m cookieguard.loader --reference` prints the reference table's rows from the records.
"""

from __future__ import annotations

import os
import re
import sys
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import yaml

from cookieguard.config import (
    DEFAULT_ADMIN_PREFIX,
    DEFAULT_LISTEN,
    Config,
    CookieAttributes,
    CookiesConfig,
    ForwardAuthConfig,
    LimitsConfig,
    LoggingConfig,
    MetricsConfig,
    RefreshConfig,
    Route,
    StoreConfig,
    TimeoutsConfig,
    VerifyConfig,
    admin_path,
    listen_address,
)
from cookieguard.schema import (
    Section,
    http_url,
    key_paths,
    nonempty_string,
    one_of,
    read_record,
    reference_rows,
)
from cookieguard.session.layouts import LAYOUTS
from cookieguard.tokens.providers import KINDS, ProviderConfig, load_provider
from cookieguard.tokens.providers.base import COMMON_KEYS
from cookieguard.vocabulary import OnRejected

DEFAULT_CONFIG_PATH = "config/cookieguard.yaml"
CONFIG_ENV_VAR = "COOKIEGUARD_CONFIG"


class ConfigError(Exception):
    """The configuration is invalid; `problems` holds one `key.path: message` per mistake."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        super().__init__("\n".join(f"config error: {p}" for p in problems))


# ---------------------------------------------------------------------------------------------
# Environment expansion
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
    root = Section(data, "", problems)
    config = _build(root, source)
    root.finish()
    if problems:
        raise ConfigError(problems)
    assert config is not None
    return config


# Hosts that bind every address: a listener on one of them takes the port on all of them.
_WILDCARDS = frozenset({"0.0.0.0", "::", ""})


def _build(root: Section, source: str) -> Config | None:
    # In the file's order, so the problems are reported in it.
    listen_host, listen_port = root.get("listen", listen_address, DEFAULT_LISTEN)
    upstream = root.get("upstream", http_url, None)
    admin_prefix = root.get("admin_prefix", admin_path, DEFAULT_ADMIN_PREFIX)
    provider = _build_provider(root)
    cookies = _build_cookies(root, provider)
    refresh_section = root.section("refresh")
    refresh = read_record(refresh_section, RefreshConfig)
    policies = LAYOUTS[cookies.layout].rejected_policies
    if refresh.on_rejected not in (OnRejected.CLEAR, OnRejected.PASS, OnRejected.LOGIN, *policies):
        # A policy a layout carries out itself (layouts/<name>.py: rejected_policies).
        owners = " or ".join(n for n, o in LAYOUTS.items() if refresh.on_rejected in o.rejected_policies)
        refresh_section.error(
            "on_rejected",
            f"{refresh.on_rejected} is only valid with layout {owners} (not with layout {cookies.layout})",
        )
    verify_section = root.section("verify")
    verify = read_record(verify_section, VerifyConfig)
    if verify.audience is not None and provider is not None and provider.audience_unused:
        checked = [name for name, kind in KINDS.items() if not kind.audience_unused]
        verify_section.error(
            "audience", f"only valid with provider.kind {' or '.join(checked)} ({provider.audience_unused})"
        )
    store = read_record(root.section("store"), StoreConfig)
    forward_auth = read_record(root.section("forward_auth"), ForwardAuthConfig)
    routes = _build_routes(root, upstream, upstream_required=not forward_auth.enabled)
    timeouts = read_record(root.section("timeouts"), TimeoutsConfig)
    limits = read_record(root.section("limits"), LimitsConfig)
    admin_listen = root.get("admin_listen", listen_address, Config.admin_listen)
    if admin_listen[1] == listen_port != 0 and (
        admin_listen[0] == listen_host or _WILDCARDS & {admin_listen[0], listen_host}
    ):
        root.error("admin_listen", "must differ from listen")
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
        logging=read_record(root.section("logging"), LoggingConfig),
        metrics=read_record(root.section("metrics"), MetricsConfig),
        limits=limits,
        forward_auth=forward_auth,
        admin_listen=admin_listen,
        source=source,
    )


def _build_provider(root: Section) -> ProviderConfig | None:
    if not root.has("provider"):
        root.seen.add("provider")
        return None
    return load_provider(root.section("provider"))


def _build_cookies(root: Section, provider: ProviderConfig | None) -> CookiesConfig:
    """The cookies section: its keys are the layout's (the registry's), and a layout's attribute
    defaults are its cookie library's."""
    s = root.section("cookies")
    layout = s.get("layout", one_of(*LAYOUTS), CookiesConfig.layout)
    # The layout reads its own keys (layouts/<name>.py); another layout's key is a mistake.
    own = LAYOUTS[layout].config.load(s, provider)
    for other in LAYOUTS.values():
        for name in other.config.yaml_keys:
            if name in s.seen or name in LAYOUTS[layout].config.yaml_keys:
                continue
            s.seen.add(name)
            if s.has(name):
                owners = " or ".join(n for n, o in LAYOUTS.items() if name in o.config.yaml_keys)
                s.error(name, f"only valid with layout {owners} (not with layout {layout})")
    a = s.section("attributes")
    attributes = read_record(a, CookieAttributes, CookieAttributes(**LAYOUTS[layout].attribute_defaults))
    if attributes.same_site == "None" and not attributes.secure:
        a.error("same_site", "None requires secure: true (browsers reject SameSite=None without Secure)")
    config = read_record(s, CookiesConfig, layout=layout, attributes=attributes, layout_config=own)
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
    return config


def _build_routes(
    root: Section, default_upstream: str | None, *, upstream_required: bool
) -> tuple[Route, ...]:
    root.seen.add("routes")
    raw = root.data.get("routes")
    if raw is None:
        raw = [{"match": "/"}]
    if not isinstance(raw, list) or not raw:
        root.error("routes", "must be a non-empty list of routes")
        return ()
    routes: list[Route] = []
    for i, item in enumerate(raw):
        s = Section(item, f"routes[{i}]", root.problems)
        match = s.get("match", nonempty_string, "")
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
        upstream = s.get("upstream", http_url, None) or default_upstream
        # In forward-auth mode the ingress forwards: a route may only say what to repair.
        if upstream_required and upstream is None and not s.has("upstream") and not root.has("upstream"):
            s.error("upstream", "no upstream for this route and no top-level upstream")
        routes.append(read_record(s, Route, match=match, upstream=upstream or "", regex=regex))
    return tuple(routes)


# ---------------------------------------------------------------------------------------------
# The key list and the configuration reference, from the records
# ---------------------------------------------------------------------------------------------


def config_keys() -> Iterator[str]:
    """Every YAML key path cookieguard reads: the records' declared keys, each layout's own keys
    of `cookies` (declared on its `config` record), and each provider kind's (`provider.kind`,
    the keys every kind has, then each kind's own)."""
    yield from key_paths(Config)
    for layout in LAYOUTS.values():
        yield from key_paths(layout.config, "cookies.")
    yield "provider.kind"
    for name in COMMON_KEYS:
        yield f"provider.{name}"
    for kind in KINDS.values():
        for name in kind.yaml_keys:
            yield f"provider.{name}"


def reference() -> list[str]:
    """The table rows of the records' keys in docs/configuration.md "Configuration reference"
    (the layouts and the provider kinds document their own keys beside them)."""
    return list(reference_rows(Config))


def config_path_from(arg: str | None, env: Mapping[str, str] | None = None) -> str:
    """--config wins, then $COOKIEGUARD_CONFIG, then the default path."""
    env = os.environ if env is None else env
    return arg or env.get(CONFIG_ENV_VAR) or DEFAULT_CONFIG_PATH


if __name__ == "__main__":
    if sys.argv[1:] == ["--reference"]:
        print("\n".join(reference()))
    else:
        print("usage: python -m cookieguard.loader --reference", file=sys.stderr)
        sys.exit(2)
