"""The `cookieguard` command: run, check, healthcheck, keygen, explain, demo."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence

from cookieguard import __version__
from cookieguard.config import Config
from cookieguard.loader import DEFAULT_CONFIG_PATH, ConfigError, config_path_from, load_config

EXIT_CONFIG = 2


def _with_config(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """The --config option of every verb that reads a config file."""
    parser.add_argument(
        "--config", "-c", help=f"YAML config (default: $COOKIEGUARD_CONFIG, else {DEFAULT_CONFIG_PATH})"
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    try:
        return _main(argv)
    except BrokenPipeError:
        # `cookieguard check | head`: the reader left; say nothing more (Python docs' recipe).
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1


def _main(argv: Sequence[str] | None) -> int:
    parser = argparse.ArgumentParser(
        prog="cookieguard",
        description="A sidecar reverse proxy that keeps your app's users signed in.",
    )
    parser.add_argument("--version", action="version", version=f"cookieguard {__version__}")
    verbs = parser.add_subparsers(dest="verb", metavar="COMMAND")

    _with_config(verbs.add_parser("run", help="run the proxy"))
    _with_config(verbs.add_parser("check", help="validate a config and print the effective routes"))
    verbs.add_parser("keygen", help="print a new store encryption key")
    healthcheck = _with_config(
        verbs.add_parser(
            "healthcheck",
            help="exit 0 when the proxy this config describes answers its healthz with 200",
            description=(
                "Probes http://<listen>/<admin_prefix>/healthz of the proxy the config describes "
                "(a wildcard listen address means loopback), for a container HEALTHCHECK or a Kubernetes "
                "exec probe. Exit 0 on 200 within the timeout; otherwise exit 1 with the reason on stderr "
                "(exit 2 for a config error)."
            ),
        )
    )
    healthcheck.add_argument(
        "--timeout", type=_probe_timeout, default=3.0, metavar="DURATION", help="whole probe (default 3s)"
    )
    healthcheck.add_argument(
        "--ready", action="store_true", help="probe readyz (store reachable) instead of healthz"
    )
    explain = _with_config(
        verbs.add_parser(
            "explain",
            help="read a Cookie header and say what cookieguard sees and would do (offline)",
            description=(
                "Reads a Cookie header (argument, or stdin; e.g. pasted from the browser's dev tools, with "
                "or without `Cookie:`) and prints the user, the auth cookies present, each token's expiry, "
                "and what cookieguard would do and why. Offline: no IdP call, no signature check. Never "
                "prints a token."
            ),
        )
    )
    explain.add_argument("cookie", nargs="?", help="the Cookie header; '-' or absent: read stdin")
    explain.add_argument("--client-id", help="the app client id (amplify layout), overriding the config's")
    demo = verbs.add_parser(
        "demo",
        help="see the bug and the fix: an app with the redirect bug, a local Cognito IdP, cookieguard",
        description=(
            "Runs, on 127.0.0.1: an app whose middleware drops refreshed cookies on a redirect, "
            "a local Cognito-compatible IdP (moto, the `demo` extra) with rotating refresh tokens and "
            "short-lived access tokens, and cookieguard in front of the app. Drives a scripted browser "
            "both ways past several token expiries and prints what happened. Exit 0 when cookieguard "
            "kept the user signed in."
        ),
    )
    demo.add_argument(
        "--serve", action="store_true", help="leave the app and cookieguard running for a browser"
    )
    demo.add_argument("--short", action="store_true", help="fewer, shorter steps (2 expiries of 3 s tokens)")
    demo.add_argument(
        "--expiries", type=_positive_int, metavar="N", help="access-token expiries to go through (default 3)"
    )
    demo.add_argument("--token-lifetime", type=_positive_int, metavar="SECONDS", help="access-token lifetime")
    demo.add_argument("--port", type=int, help="cookieguard's port with --serve (default 8080; 0: any)")
    demo.add_argument("--app-port", type=int, help="the app's port with --serve (default 3000; 0: any)")
    demo.add_argument(
        "--provider",
        choices=("cognito", "supabase"),
        default="cognito",
        help="the IdP and the app's auth library: cognito (Amplify, moto) or supabase (@supabase/ssr, "
        "a GoTrue-compatible server); default cognito",
    )

    args = parser.parse_args(argv)
    if args.verb == "run":
        return _run(args.config)
    if args.verb == "check":
        return _check(args.config)
    if args.verb == "keygen":
        from cryptography.fernet import Fernet

        print(Fernet.generate_key().decode())
        return 0
    if args.verb == "demo":
        return _demo(args)
    if args.verb == "healthcheck":
        return _healthcheck(args)
    if args.verb == "explain":
        return _explain(args)
    parser.print_help()
    return EXIT_CONFIG


def _explain(args: argparse.Namespace) -> int:
    import os
    import time

    from cookieguard.loader import parse_config
    from cookieguard.ops.explain import cookie_header_from, explain

    path = config_path_from(args.config)
    if args.config is None and not os.path.exists(path):
        # No config to hand (e.g. on a laptop): the defaults, with the client id from the cookies.
        config = parse_config("upstream: http://127.0.0.1:3000\n", source="(built-in defaults)")
    else:
        loaded = _load(args.config)
        if loaded is None:
            return EXIT_CONFIG
        config = loaded
    if args.cookie is not None and args.cookie != "-":
        text = args.cookie
    else:
        if sys.stdin.isatty():
            print("paste the Cookie header, then Ctrl-D:", file=sys.stderr)
        text = sys.stdin.read()
    header = cookie_header_from(text)
    if not header:
        print("explain: no Cookie header given (pass it as an argument or on stdin)", file=sys.stderr)
        return EXIT_CONFIG
    for line in explain(header, config, now_s=time.time(), client_id=args.client_id):
        print(line)
    return 0


def _healthcheck(args: argparse.Namespace) -> int:
    from cookieguard.ops.healthcheck import run_healthcheck

    config = _load(args.config)
    if config is None:
        return EXIT_CONFIG
    return run_healthcheck(config, endpoint="readyz" if args.ready else "healthz", timeout_s=args.timeout)


def _probe_timeout(text: str) -> float:
    from cookieguard.ops.healthcheck import parse_timeout

    try:
        return parse_timeout(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _positive_int(text: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"not a positive whole number: {text!r}")
    return int(text)


def _demo(args: argparse.Namespace) -> int:
    from cookieguard.ops.demo import DemoSettings, run_demo, serve_demo

    if args.serve:
        settings = DemoSettings(
            token_lifetime_s=args.token_lifetime or 30,
            port=8080 if args.port is None else args.port,
            app_port=3000 if args.app_port is None else args.app_port,
            provider=args.provider,
        )
        return serve_demo(settings)
    settings = DemoSettings(
        expiries=args.expiries or (2 if args.short else 3),
        token_lifetime_s=args.token_lifetime or (3 if args.short else 5),
        provider=args.provider,
    )
    return run_demo(settings)


def _load(path_arg: str | None) -> Config | None:
    path = config_path_from(path_arg)
    try:
        return load_config(path)
    except ConfigError as exc:
        print(f"{exc}\n({len(exc.problems)} problem(s) in {path})", file=sys.stderr)
        return None


def _check(path_arg: str | None) -> int:
    from cookieguard.edge.routing import describe_routes

    config = _load(path_arg)
    if config is None:
        return EXIT_CONFIG
    print(f"config ok: {config.source}")
    endpoints = "healthz,readyz,metrics,session" + (",forward-auth" if config.forward_auth.enabled else "")
    print(f"listen: {config.listen}   admin: {config.admin_prefix}/{{{endpoints}}}")
    if config.forward_auth.enabled:
        print(f"forward-auth: on, for {config.forward_auth.ingress}")
    if config.provider is None:
        print("provider: none (plain reverse proxy, no token refresh)")
    else:
        p = config.provider
        where = p.refresh_endpoint
        secret = "set" if p.client_secret else "none"
        print(f"provider: {p.kind} client_id={p.client_id} client_secret={secret} endpoint={where}")
    print(f"cookies: layout {config.cookies.layout}   store: {config.store.kind}")
    lim = config.limits
    trusted = ", ".join(str(n) for n in lim.trusted_proxies) or "none (X-Forwarded-For is not read)"
    print(
        f"limits: unproven {lim.unproven_per_address}/min per address, {lim.unproven_per_second:g}/s in all; "
        f"{lim.refresh_tokens_per_subject} refresh tokens per subject per 10 min; "
        f"IdP calls {lim.idp_calls_per_second:g}/s (per replica)"
    )
    print(f"trusted proxies: {trusted}")
    for warning in config_warnings(config):
        print(f"WARNING: {warning}")
    print("routes (first match wins):")
    for line in describe_routes(config.routes):
        print(line)
    return 0


def config_warnings(config: Config) -> list[str]:
    warnings = []
    if config.store.kind == "redis" and not config.store.encryption_keys:
        warnings.append(
            "store.kind is redis but store.encryption_key is empty: refreshed tokens are stored in "
            "Redis unencrypted (set COOKIEGUARD_STORE_KEY from `cookieguard keygen`)"
        )
    if config.provider is not None and not config.verify.signature:
        warnings.append("verify.signature is false: token claims are trusted without checking signatures")
    if config.forward_auth.enabled and not config.limits.trusted_proxies:
        # Every request arrives from the ingress: without its X-Forwarded-For, the abuse limits
        # would budget all clients as one address (docs/forward-auth/).
        warnings.append(
            "forward_auth is enabled but limits.trusted_proxies is empty: the abuse limits will "
            "count every client as the ingress's address (list the ingress's address there)"
        )
    return warnings


def _run(path_arg: str | None) -> int:
    # Imported here, not at the top: `cookieguard healthcheck` runs every few seconds in the
    # container and needs neither an event loop nor structlog (docs/operations.md, "Docker").
    import asyncio

    from cookieguard.logs import configure_logging, get_logger

    config = _load(path_arg)
    if config is None:
        return EXIT_CONFIG
    configure_logging(config.logging.level, config.logging.format)
    log = get_logger()
    log.info(
        "config_loaded",
        path=config.source,
        routes=len(config.routes),
        provider=config.provider.kind if config.provider else None,
        layout=config.cookies.layout,
        store=config.store.kind,
    )
    for warning in config_warnings(config):
        log.warning("config_warning", message=warning)
    from cookieguard.app import serve

    try:
        import uvloop
    except ImportError:
        asyncio.run(serve(config))
    else:
        uvloop.run(serve(config))
    return 0


if __name__ == "__main__":
    sys.exit(main())
