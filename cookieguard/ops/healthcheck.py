"""`cookieguard healthcheck`: probe the running proxy where its config says it listens.

The container's HEALTHCHECK and the Kubernetes probes run it, so a config that listens on another
port or admin prefix stays healthy (docs/operations.md, "Docker"). It reads the config and probes with the
standard library's http.client, no event loop and no aiohttp: ~70 ms of CPU per probe in the image.
"""

from __future__ import annotations

import http.client
import socket
import sys
import time
from typing import NamedTuple

from cookieguard.config import Config
from cookieguard.schema import parse_duration

EXIT_HEALTHY, EXIT_UNHEALTHY, EXIT_CONFIG = 0, 1, 2

# A wildcard listen address is not an address to connect to: probe loopback of the same family.
_WILDCARD_TO_LOOPBACK = {"0.0.0.0": "127.0.0.1", "": "127.0.0.1", "::": "::1"}
_BODY_LIMIT = 4096  # healthz answers "ok"; readyz a short JSON report


class ProbeTarget(NamedTuple):
    host: str
    port: int
    admin_prefix: str

    def url(self, endpoint: str) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}{self.admin_prefix}/{endpoint}"


def healthcheck_address(config: Config) -> ProbeTarget:
    """Where the admin endpoints of the proxy configured by `config` answer: on `admin_listen`
    (healthz, readyz and metrics, under `admin_prefix`; readyz is never on the main listener)."""
    host, port = config.admin_listen
    return ProbeTarget(_WILDCARD_TO_LOOPBACK.get(host, host), port, config.admin_prefix)


def probe(target: ProbeTarget, endpoint: str, timeout_s: float) -> str | None:
    """GET `<admin_prefix>/<endpoint>`; None when it answered 200 within `timeout_s`, else why not.

    `timeout_s` bounds the whole exchange (connect, request, answer), not each socket read.
    """
    url = target.url(endpoint)
    deadline = time.monotonic() + timeout_s
    conn = http.client.HTTPConnection(target.host, target.port, timeout=timeout_s)
    try:
        conn.connect()
        assert conn.sock is not None
        conn.sock.settimeout(max(deadline - time.monotonic(), 0.001))
        conn.request(
            "GET",
            f"{target.admin_prefix}/{endpoint}",
            headers={"User-Agent": "cookieguard-healthcheck", "Connection": "close"},
        )
        response = conn.getresponse()
        response.read(_BODY_LIMIT)
        if time.monotonic() > deadline:
            return f"{url}: no answer within {timeout_s:g}s"
        if response.status != 200:
            return f"{url}: HTTP {response.status} {response.reason}".rstrip()
        return None
    except TimeoutError:
        return f"{url}: no answer within {timeout_s:g}s"
    except ConnectionRefusedError:
        return f"{url}: connection refused (is cookieguard running and listening there?)"
    except socket.gaierror as exc:
        return f"{url}: cannot resolve {target.host}: {exc.strerror or exc}"
    except (OSError, http.client.HTTPException) as exc:
        return f"{url}: {type(exc).__name__}: {exc}".rstrip(": ")
    finally:
        conn.close()


def run_healthcheck(config: Config, endpoint: str = "healthz", timeout_s: float = 3.0) -> int:
    """The `healthcheck` verb: one line on stdout when healthy, the reason on stderr otherwise.

    Docker counts any non-zero exit as unhealthy (its docs reserve 2; a config error still exits 2,
    like every other verb, and still marks the container unhealthy).
    """
    target = healthcheck_address(config)
    if target.port == 0:
        print(
            f"healthcheck: admin_listen: port 0 is picked at start-up, nothing to probe ({config.source})",
            file=sys.stderr,
        )
        return EXIT_CONFIG
    problem = probe(target, endpoint, timeout_s)
    if problem is not None:
        print(f"healthcheck: unhealthy: {problem}", file=sys.stderr)
        return EXIT_UNHEALTHY
    print(f"healthcheck: ok: {target.url(endpoint)} answered 200")
    return EXIT_HEALTHY


def parse_timeout(text: str) -> float:
    """`3`, `3s`, `500ms` -> seconds (positive)."""
    try:
        seconds = float(text) if text.replace(".", "", 1).isdigit() else parse_duration(text)
    except ValueError:
        seconds = 0.0
    if seconds <= 0:
        raise ValueError(f"not a positive duration (e.g. 3s, 500ms): {text!r}")
    return seconds
