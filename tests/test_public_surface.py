"""The public surface, pinned (docs/behaviour.md, first paragraph): CLI verbs, YAML keys, admin
endpoints, log events and metric names are interface. Renaming one must be a decision, made
here, with the pages that document it (docs/configuration.md for keys, docs/operations.md for
endpoints, log events and metrics; and a deprecation for one release, as docs/operations.md
"Metrics" did for `cookieguard_sessions_in_flight`); these tests fail when one changes by
accident."""

from __future__ import annotations

import ast
import re
import subprocess
import sys
from typing import Any

import pytest
import yaml

import cookieguard
from cookieguard.app import build_admin_app, build_app
from cookieguard.edge.admin import ADMIN_KEY
from cookieguard.loader import config_keys, parse_config, reference
from cookieguard.metrics import Metrics
from cookieguard.session.layouts import LAYOUTS
from cookieguard.tokens.providers import KINDS
from cookieguard.vocabulary import CheckReason, OnRejected, Outcome
from tests.support.proxy_process import ROOT, run_cli

CONFIGURATION = (ROOT / "docs/configuration.md").read_text()
OPERATIONS = (ROOT / "docs/operations.md").read_text()
PACKAGE = ROOT / "cookieguard"

CLI_VERBS = {"run", "check", "keygen", "healthcheck", "explain", "demo"}

# Declared once, on the records' fields and by the provider kinds (cookieguard/config.py,
# cookieguard.loader.config_keys); docs/configuration.md must document exactly these.
CONFIG_KEYS = set(config_keys())

ENDPOINTS = {"healthz", "readyz", "metrics", "session", "forward-auth"}

LOG_EVENTS = {
    "access", "bad_request", "client_timeout", "config_loaded", "config_warning", "draining",
    "jwks_fetch", "listening", "reject_storm", "stopped", "store_degraded", "store_recovered",
    "token_refresh", "upstream_error",
}  # fmt: skip

METRICS = {
    "cookieguard_refresh_total",
    "cookieguard_refresh_duration_seconds",
    "cookieguard_requests_total",
    "cookieguard_upstream_duration_seconds",
    "cookieguard_idp_calls_in_flight",
    "cookieguard_sessions_in_flight",  # deprecated alias, removed in the next release
    "cookieguard_store_degraded",
    "cookieguard_clients_cut_total",
    "cookieguard_upstream_late_bytes_total",
    "cookieguard_refresh_queue_waiting",
    "cookieguard_refresh_wait_seconds",
    "cookieguard_refresh_limited_total",
}
REFRESH_OUTCOMES = {"refreshed", "joined", "reused", "rejected", "failed", "limited"}
# Reasons the session endpoint never answers with: without a provider it is not served.
UNDOCUMENTED_CHECK_REASONS = {CheckReason.NO_PROVIDER}


def test_the_package_exports_little() -> None:
    assert cookieguard.__all__ == ["__version__"]


def test_cli_verbs() -> None:
    usage = run_cli("--help").stdout
    listed = set(re.findall(r"^    ([a-z]+)", usage, re.MULTILINE))
    assert listed == CLI_VERBS


def _section(page: str, heading: str) -> str:
    """The text under `## heading` (or `# heading`) up to the next heading of that level."""
    level = re.search(rf"^(#+) {re.escape(heading)}$", page, re.MULTILINE)
    assert level, heading
    return page[level.end() :].split(f"\n{level.group(1)} ", 1)[0]


def _first_column(section: str) -> set[str]:
    return {m.group(1) for m in re.finditer(r"^\| `([a-z_.\[\]-]+)`", section, re.MULTILINE)}


def test_the_configuration_reference_documents_exactly_the_config_keys() -> None:
    assert _first_column(_section(CONFIGURATION, "Configuration reference")) == CONFIG_KEYS
    # main's 63, issue 22's timeouts.client_body, routes[].client_body, timeouts.websocket_idle,
    # limits.request_buffer, limits.max_cookie_size, forward_auth.enabled, forward_auth.ingress,
    # and the authjs layout's 10
    assert len(CONFIG_KEYS) == 80


def test_the_reference_table_is_the_records_own() -> None:
    """The rows of the records' keys are what `python -m cookieguard.loader --reference` prints
    from the field declarations (default and meaning), in that order; only the provider kinds'
    and the layouts' own rows are written by hand beside them (each kind documents its keys)."""
    section = _section(CONFIGURATION, "Configuration reference")
    rows = re.findall(r"^\| `[a-z_.\[\]]+` \|.*$", section, re.MULTILINE)
    # A layout's key and the keys nested under it (`cookies.authjs.version`).
    own = tuple(
        f"| `cookies.{name}{end}"
        for layout in LAYOUTS.values()
        for name in layout.config.yaml_keys
        for end in ("`", ".")
    )
    assert [row for row in rows if not row.startswith(("| `provider.", *own))] == reference()


def test_the_reference_command_prints_the_rows() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "cookieguard.loader", "--reference"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    assert proc.stdout.splitlines() == reference()
    assert (
        "| `refresh.before_expiry` | `5m` | refresh when the access token has less than this left |"
        in proc.stdout
    )


def test_operations_documents_exactly_the_endpoints_and_log_events() -> None:
    assert _first_column(_section(OPERATIONS, "Endpoints")) == ENDPOINTS
    logs = _section(OPERATIONS, "Logs")
    rows = [line.split("|")[1] for line in logs.splitlines() if line.startswith("| `")]
    assert {name for row in rows for name in re.findall(r"`([a-z_]+)`", row)} == LOG_EVENTS


def _nest(path: str, value: Any) -> dict[str, Any]:
    head, _, rest = path.partition(".")
    if head == "routes[]":
        return {"routes": [{"match": "/", **_nest(rest, value)}]}
    return {head: _nest(rest, value) if rest else value}


def _merge(a: dict[str, Any], b: dict[str, Any]) -> dict[str, Any]:
    out = dict(a)
    for key, value in b.items():
        out[key] = (
            _merge(out[key], value) if isinstance(out.get(key), dict) and isinstance(value, dict) else value
        )
    return out


@pytest.mark.parametrize("key", sorted(CONFIG_KEYS))
def test_every_documented_key_is_read_by_the_loader(key: str) -> None:
    """A value of the wrong shape gets a complaint about its value, never "unknown key"."""
    path = key.replace("routes[]", "routes[0]")
    unknown = (f"{path}: unknown key", f"{path}: only valid for")
    bases: list[dict[str, Any]] = [{"upstream": "http://127.0.0.1:9"}]
    if key.startswith("provider."):
        bases = [{"upstream": "http://127.0.0.1:9", "provider": {"kind": kind}} for kind in KINDS]
    verdicts = []
    for base in bases:
        text = yaml.safe_dump(_merge(base, _nest(key, {"probe": True})))
        try:
            parse_config(text, env={})
        except Exception as exc:
            problems = getattr(exc, "problems", [str(exc)])
            verdicts.append(not any(p.startswith(unknown) for p in problems))
        else:
            verdicts.append(True)
    assert any(verdicts), key


async def test_admin_endpoints(aiohttp_client: Any) -> None:
    config = parse_config("upstream: http://127.0.0.1:9\nprovider: {kind: oidc, token_endpoint: "
                          "'http://127.0.0.1:9/token', client_id: c, client_auth: none}\n"
                          "cookies: {layout: named}\nforward_auth: {enabled: true}\n", env={})  # fmt: skip
    client = await aiohttp_client(build_app(config))
    admin = await aiohttp_client(build_admin_app(client.app[ADMIN_KEY], config))
    for endpoint in ENDPOINTS:
        # readyz and metrics only on the admin listener; healthz on both; session on the main one
        on = admin if endpoint in ("readyz", "metrics") else client
        async with on.get(f"/.cookieguard/{endpoint}", headers={"X-Forwarded-Uri": "/"}) as resp:
            assert resp.status in (200, 503), (endpoint, resp.status)
    async with client.get("/.cookieguard/nothing-here") as resp:
        assert resp.status == 404


def _constants(tree: ast.Module) -> dict[str, str]:
    return {
        target.id: node.value.value
        for node in tree.body
        if isinstance(node, ast.Assign)
        and isinstance(node.value, ast.Constant)
        and isinstance(node.value.value, str)
        for target in node.targets
        if isinstance(target, ast.Name)
    }


def _first_string(node: ast.expr, constants: dict[str, str]) -> str | None:
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return node.value
    if isinstance(node, ast.Name):
        return constants.get(node.id)
    return None


def emitted_log_events() -> set[str]:
    """Event names passed to a logger anywhere in the package (read from the source)."""
    events = set()
    for path in PACKAGE.rglob("*.py"):
        tree = ast.parse(path.read_text())
        constants = _constants(tree)
        for node in ast.walk(tree):
            if not (isinstance(node, ast.Call) and node.args):
                continue
            func = node.func
            is_log_call = (
                isinstance(func, ast.Attribute)
                and func.attr in ("debug", "info", "warning", "error", "exception")
                and "log" in ast.unparse(func.value).lower()
            ) or (isinstance(func, ast.Name) and func.id == "log")
            name = _first_string(node.args[0], constants) if is_log_call else None
            if name is not None:
                events.add(name)
    # aiohttp's own parser errors are renamed to this event (cookieguard/logs.py)
    if '"bad_request"' in (PACKAGE / "logs.py").read_text():
        events.add("bad_request")
    return events


def test_log_events() -> None:
    assert emitted_log_events() == LOG_EVENTS


def test_metric_names_and_outcomes() -> None:
    text = Metrics().render().decode()
    names = set(re.findall(r"^# TYPE (cookieguard_[a-z_]+) ", text, re.MULTILINE))
    names = {n for n in names if not n.endswith("_created")}  # prometheus-client's own series
    assert names == METRICS
    outcomes = set(re.findall(r'cookieguard_refresh_total\{outcome="([a-z]+)"\}', text))
    assert outcomes == REFRESH_OUTCOMES
    documented = re.findall(r"^\| `(cookieguard_[a-z_]+)", _section(OPERATIONS, "Metrics"), re.MULTILINE)
    assert set(documented) == METRICS


def _bullet(page: str, name: str) -> str:
    """The bullet of a page that starts with `name`, up to the next bullet or blank line."""
    start = page.index(f"- `{name}`:")
    return re.split(r"\n(?:- |\n)", page[start + 2 :], maxsplit=1)[0]


def _defined_words(text: str, *, explained: bool = False) -> set[str]:
    """The words a list defines: each in backticks after a colon or a comma, then its
    explanation in parentheses (`explained`), or then a comma, parentheses or the end."""
    after = r"\s+\(" if explained else r",|\s+\(|\.?$"
    return set(re.findall(rf"(?:^|[:,]\s+)`([a-z_]+)`(?={after})", text))


def test_the_docs_name_exactly_the_vocabulary() -> None:
    """The outcomes, the session endpoint's reasons and `on_rejected`'s values are declared once
    (cookieguard/vocabulary.py); the docs list exactly those, and the refresh outcomes are the
    pinned public set."""
    assert {o.value for o in Outcome} == REFRESH_OUTCOMES
    logs = _section(OPERATIONS, "Logs")
    assert _defined_words(_bullet(logs, "token_refresh.outcome"), explained=True) == REFRESH_OUTCOMES
    reasons = {r.value for r in CheckReason} - UNDOCUMENTED_CHECK_REASONS
    assert _defined_words(_bullet(_section(OPERATIONS, "Session endpoint"), "reason")) == reasons
    row = re.search(r"^\| `refresh\.on_rejected` \|.*$", CONFIGURATION, re.MULTILINE)
    assert row is not None
    meaning = row.group(0).rsplit("|", 2)[1]
    assert set(re.findall(r"`([a-z_]+)`", meaning)) == {v.value for v in OnRejected}
