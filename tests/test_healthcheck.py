"""`cookieguard healthcheck` against a real `cookieguard run`, and the ways a probe fails.

The proxy listens on a port chosen at run time with a non-default `admin_prefix`, and the verb
reads the very file the proxy was started with, as the container's HEALTHCHECK does.
"""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from aiohttp import web

from cookieguard.loader import parse_config
from cookieguard.ops.healthcheck import healthcheck_address, parse_timeout
from tests.support.proxy_process import CookieguardProcess, run_cli

PREFIX = "/_ops/guard"


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _config(port: int, prefix: str = PREFIX, *, admin: int | None = None) -> dict[str, Any]:
    # The upstream is never contacted: healthz and readyz are answered by cookieguard itself, on
    # the admin listener (a port of its own: the probes go there).
    return {
        "listen": f"127.0.0.1:{port}",
        "admin_listen": f"127.0.0.1:{admin or _free_port()}",
        "upstream": "http://127.0.0.1:9",
        "admin_prefix": prefix,
    }


def _write(tmp_path: Path, config: dict[str, Any] | str, name: str = "probe.yaml") -> Path:
    path = tmp_path / name
    path.write_text(config if isinstance(config, str) else yaml.safe_dump(config))
    return path


@pytest.fixture
def running_proxy() -> Iterator[CookieguardProcess]:
    """`cookieguard run` on a fixed free port (the healthcheck must find it from the file alone)."""
    proc = CookieguardProcess(_config(_free_port())).start()
    yield proc
    proc.close()


def _one_line(text: str) -> str:
    lines = text.strip().splitlines()
    assert len(lines) == 1, text
    return lines[0]


# -- against the real proxy --------------------------------------------------------------------


def test_healthy_proxy_on_another_port_and_prefix(running_proxy: CookieguardProcess) -> None:
    path = str(running_proxy.config_path)
    url = f"http://127.0.0.1:{running_proxy.admin_port}{PREFIX}"

    proc = run_cli("healthcheck", "--config", path)
    assert proc.returncode == 0, proc.stderr
    assert _one_line(proc.stdout) == f"healthcheck: ok: {url}/healthz answered 200"
    assert proc.stderr == ""

    # The same file through $COOKIEGUARD_CONFIG (what the image sets), and readyz with --ready.
    proc = run_cli("healthcheck", "--ready", env={"COOKIEGUARD_CONFIG": path})
    assert proc.returncode == 0, proc.stderr
    assert f"{url}/readyz answered 200" in proc.stdout


def test_another_admin_prefix_than_the_proxy_is_unhealthy(
    running_proxy: CookieguardProcess, tmp_path: Path
) -> None:
    # /elsewhere/healthz is not an admin path for this proxy: its admin listener answers 404. A
    # probe that only checked "something answered" would pass.
    other = _write(
        tmp_path, _config(running_proxy.port or 0, prefix="/elsewhere", admin=running_proxy.admin_port)
    )
    proc = run_cli("healthcheck", "--config", str(other))
    assert proc.returncode == 1
    assert proc.stdout == ""
    line = _one_line(proc.stderr)
    assert line.startswith(
        f"healthcheck: unhealthy: http://127.0.0.1:{running_proxy.admin_port}/elsewhere/healthz"
    )
    assert line.endswith("HTTP 404 Not Found"), line


def test_stopped_proxy_is_unhealthy(running_proxy: CookieguardProcess) -> None:
    assert running_proxy.stop() == 0
    proc = run_cli("healthcheck", "--config", str(running_proxy.config_path))
    assert proc.returncode == 1
    assert "connection refused" in _one_line(proc.stderr)


# -- failures without a proxy ------------------------------------------------------------------


def test_nothing_listening(tmp_path: Path) -> None:
    port = _free_port()
    proc = run_cli("healthcheck", "--config", str(_write(tmp_path, _config(_free_port(), admin=port))))
    assert proc.returncode == 1 and proc.stdout == ""
    assert _one_line(proc.stderr) == (
        f"healthcheck: unhealthy: http://127.0.0.1:{port}{PREFIX}/healthz: "
        "connection refused (is cookieguard running and listening there?)"
    )


@pytest.mark.parametrize(("status", "reason"), [(503, "Service Unavailable"), (404, "Not Found")])
async def test_non_200_answers_are_unhealthy(
    aiohttp_server: Callable[..., Any], tmp_path: Path, status: int, reason: str
) -> None:
    """A plain aiohttp server stands in for the proxy: cookieguard's healthz never answers these."""
    seen: list[str] = []

    async def answer(request: web.Request) -> web.Response:
        seen.append(request.path)
        return web.Response(status=status, text="no\n")

    app = web.Application()
    app.router.add_get(f"{PREFIX}/healthz", answer)
    server = await aiohttp_server(app, host="127.0.0.1")
    path = _write(tmp_path, _config(_free_port(), admin=server.port))
    proc = await asyncio.to_thread(run_cli, "healthcheck", "--config", str(path))
    assert seen == [f"{PREFIX}/healthz"]
    assert proc.returncode == 1
    assert _one_line(proc.stderr).endswith(f"{PREFIX}/healthz: HTTP {status} {reason}")


def test_a_server_that_never_answers_times_out(tmp_path: Path) -> None:
    # A listening socket that is never accepted: the kernel completes the handshake, nobody answers.
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        path = _write(tmp_path, _config(_free_port(), admin=silent.getsockname()[1]))
        started = time.monotonic()
        proc = run_cli("healthcheck", "--config", str(path), "--timeout", "300ms")
        elapsed = time.monotonic() - started
    assert proc.returncode == 1
    assert _one_line(proc.stderr).endswith("/healthz: no answer within 0.3s")
    assert elapsed < 5, elapsed  # interpreter start-up plus the 0.3 s, with room for a loaded box


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("listen: 8080\nupstream: http://127.0.0.1:3000\n", "config error: listen: must be host:port"),
        (
            "admin_listen: 127.0.0.1:0\nupstream: http://127.0.0.1:3000\n",
            "admin_listen: port 0 is picked at start-up",
        ),
    ],
)
def test_config_problems_exit_2(tmp_path: Path, text: str, expected: str) -> None:
    proc = run_cli("healthcheck", "--config", str(_write(tmp_path, text)))
    assert proc.returncode == 2
    assert expected in proc.stderr
    assert proc.stdout == ""


def test_missing_config_and_bad_timeout_exit_2(tmp_path: Path) -> None:
    proc = run_cli("healthcheck", "--config", str(tmp_path / "absent.yaml"))
    assert proc.returncode == 2 and "cannot read" in proc.stderr
    proc = run_cli("healthcheck", "--config", str(_write(tmp_path, _config(1))), "--timeout", "soon")
    assert proc.returncode == 2 and "--timeout" in proc.stderr


# -- the address logic -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("admin_listen", "host", "url"),
    [
        ("0.0.0.0:4180", "127.0.0.1", "http://127.0.0.1:4180/_ops/guard/healthz"),
        ("[::]:4180", "::1", "http://[::1]:4180/_ops/guard/healthz"),
        (":4180", "127.0.0.1", "http://127.0.0.1:4180/_ops/guard/healthz"),
        ("127.0.0.1:9091", "127.0.0.1", "http://127.0.0.1:9091/_ops/guard/healthz"),
        ("[::1]:9091", "::1", "http://[::1]:9091/_ops/guard/healthz"),
        ("10.1.2.3:80", "10.1.2.3", "http://10.1.2.3:80/_ops/guard/healthz"),
    ],
)
def test_wildcard_listen_addresses_are_probed_on_loopback(admin_listen: str, host: str, url: str) -> None:
    config = parse_config(
        f"admin_listen: '{admin_listen}'\nupstream: http://127.0.0.1:3000\nadmin_prefix: {PREFIX}/\n"
    )
    target = healthcheck_address(config)
    assert target.host == host
    assert target.url("healthz") == url


@pytest.mark.parametrize(("text", "seconds"), [("3", 3.0), ("2.5", 2.5), ("3s", 3.0), ("500ms", 0.5)])
def test_timeout_forms(text: str, seconds: float) -> None:
    assert parse_timeout(text) == seconds


@pytest.mark.parametrize("text", ["0", "0s", "-1", "soon", ""])
def test_timeout_must_be_positive(text: str) -> None:
    with pytest.raises(ValueError, match="not a positive duration"):
        parse_timeout(text)


def test_by_default_the_probe_goes_to_loopback_9090() -> None:
    config = parse_config(f"listen: 0.0.0.0:8080\nupstream: http://127.0.0.1:3000\nadmin_prefix: {PREFIX}\n")
    assert healthcheck_address(config).url("readyz") == f"http://127.0.0.1:9090{PREFIX}/readyz"


def test_with_admin_listen_the_probe_goes_to_the_admin_listener() -> None:
    """readyz is only on the admin listener: the probe follows it there."""
    main, admin = _free_port(), _free_port()
    proc = CookieguardProcess({**_config(main), "admin_listen": f"0.0.0.0:{admin}"}).start()
    try:
        target = healthcheck_address(parse_config(proc.config_path.read_text(), env={}))
        assert (target.host, target.port, target.admin_prefix) == ("127.0.0.1", admin, PREFIX)
        done = run_cli("healthcheck", "--ready", "--config", str(proc.config_path))
        assert done.returncode == 0, done.stderr
        assert f"http://127.0.0.1:{admin}{PREFIX}/readyz answered 200" in done.stdout
    finally:
        proc.close()
