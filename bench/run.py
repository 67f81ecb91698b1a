"""`make bench`: cookieguard against nginx and a bare aiohttp proxy, in one run, on 127.0.0.1.

Starts an upstream (nginx serving a 1 KB body, or `--upstream aiohttp`), an nginx reverse proxy
(1 worker, keep-alive to the upstream), a bare aiohttp pass-through (bench/bare_proxy.py) and
cookieguard (`python -m cookieguard run`, uvloop when installed), plus the Cognito emulator in a
process of its own. Measures, interleaved, 3 rounds, medians:

- `plain` (no cookies), `session` (a ~3.5 KB Amplify cookie header with real RS256 tokens from
  the emulator, an hour from expiry, signature verification on) and `static` (the same cookies on
  a `refresh: false` route) with wrk at 64 connections: req/s and CPU µs per request of the proxy
  process (utime+stime from /proc over the run);
- `latency`: wrk at 1 connection, session cookies, p50/p99;
- `storm`: 1,000 distinct expired sessions at once; IdP calls counted at the emulator, failed
  requests counted, p99 of other (fresh) sessions' requests during the storm vs without it;
- `rss`: a second cookieguard (verify.signature off: see `unsigned_token`) after 100,000
  distinct sessions (user, access token, refresh token) and with 1,000 open keep-alive
  connections.

Prints a table, writes bench/out/latest.json, and ends with
`bench: session rps_ratio=… cpu_ratio=… p50_added_ms=… p99_added_ms=…`.
Every process it starts is stopped by its PID at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import json
import os
import platform
import re
import resource
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp

ROOT = Path(__file__).resolve().parent.parent
PY = sys.executable
CLK_TCK = os.sysconf("SC_CLK_TCK")
sys.path.insert(0, str(ROOT))

from cookieguard.cookies import encode_uri_component  # noqa: E402
from cookieguard.session.layouts import AmplifyLayout  # noqa: E402

ANALYTICS = {
    "_ga": "GA1.1.1234567890.1732512345",
    "_ga_8XKQ2W3E4R": "GS1.1.1732512345.7.1.1732514567.0.0.0",
    "_gid": "GA1.2.987654321.1732512345",
    "_fbp": "fb.1.1732512345678.1234567890",
    "_hjSessionUser_3141592": "eyJpZCI6IjdjOTdmNGUxLTJmYjctNTI0Ny1hYTMyLTBjZjM5YjE5ZmQ1YyIsImNyZWF0ZWQi"
    "OjE3MzI1MTIzNDU2NzgsImV4aXN0aW5nIjp0cnVlfQ==",
    "ajs_anonymous_id": "c0a9f3e2-5b7d-4e1f-9a8b-6c5d4e3f2a1b",
    "AMP_MKTG_a1b2c3d4e5": "JTdCJTIycmVmZXJyZXIlMjIlM0ElMjJodHRwcyUzQSUyRiUyRnd3dy5nb29nbGUuY29tJTJGJTIy"
    "JTJDJTIycmVmZXJyaW5nX2RvbWFpbiUyMiUzQSUyMnd3dy5nb29nbGUuY29tJTIyJTdE",
    "AMP_a1b2c3d4e5": "JTdCJTIyZGV2aWNlSWQlMjIlM0ElMjI0ZjNlMmQxYy1iYTk4LTQ3NjUtODM0Mi0xZjBlZGNiYTk4"
    "NzYlMjIlMkMlMjJzZXNzaW9uSWQlMjIlM0ExNzMyNTEyMzQ1Njc4JTJDJTIyb3B0T3V0JTIyJTNBZmFsc2UlN0Q=",
    "intercom-device-id-x1y2z3": "0b6c9e7a-3d2f-4a1b-8c9d-7e6f5a4b3c2d",
    "intercom-session-x1y2z3": "",
    "__stripe_mid": "4a3b2c1d-9e8f-7a6b-5c4d-3e2f1a0b9c8d7e6f5a",
    "cookieconsent_status": "dismiss",
    "NEXT_LOCALE": "en",
    "theme": "dark",
    "_uetsid": "5f1e2d3c4b5a69788796a5b4c3d2e1f0",
    "_uetvid": "0f1e2d3c4b5a69788796a5b4c3d2e1f5",
    "_clck": "1x2y3z4%7C2%7Cfr2%7C0%7C1790",
    "_clsk": "abc123def456%7C1732514567890%7C3%7C1%7Cq.clarity.ms%2Fcollect",
    "_gcl_au": "1.1.1234567890.1732512345",
    "__hssc": "123456789.3.1732512345678",
    "hubspotutk": "0123456789abcdef0123456789abcdef",
}


# ---------------------------------------------------------------------------------------------
# Processes
# ---------------------------------------------------------------------------------------------


@dataclass
class Proc:
    name: str
    popen: subprocess.Popen[bytes]

    @property
    def pid(self) -> int:
        return self.popen.pid

    def stop(self) -> None:
        if self.popen.poll() is not None:
            return
        os.kill(self.pid, signal.SIGTERM)
        try:
            self.popen.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.kill(self.pid, signal.SIGKILL)
            self.popen.wait(timeout=5)


@dataclass
class Bench:
    workdir: Path
    procs: list[Proc] = field(default_factory=list)

    def start(self, name: str, argv: Sequence[str], **kwargs: Any) -> Proc:
        log = open(self.workdir / f"{name}.log", "wb")  # noqa: SIM115 (closed with the process)
        kwargs.setdefault("cwd", ROOT)
        popen = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, **kwargs)
        proc = Proc(name, popen)
        self.procs.append(proc)
        return proc

    def stop_all(self) -> None:
        for proc in reversed(self.procs):
            with contextlib.suppress(ProcessLookupError, subprocess.TimeoutExpired):
                proc.stop()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def wait_http(url: str, proc: Proc, timeout_s: float = 30.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.popen.poll() is not None:
            raise RuntimeError(f"{proc.name} exited with {proc.popen.returncode}; see its log")
        try:
            with urllib.request.urlopen(url, timeout=2):
                return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"{proc.name} did not answer {url} within {timeout_s}s")


def cpu_s(pid: int) -> float:
    return sum(cpu_split_s(pid))


def cpu_split_s(pid: int) -> tuple[float, float]:
    """(utime, stime) of the process: Python's work and the kernel's (socket calls) apart."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    fields = stat[stat.rindex(")") + 2 :].split()
    return int(fields[11]) / CLK_TCK, int(fields[12]) / CLK_TCK


def rss_mb(pid: int) -> tuple[float, float]:
    status = Path(f"/proc/{pid}/status").read_text()
    rss = int(re.search(r"VmRSS:\s+(\d+)", status).group(1))  # type: ignore[union-attr]
    hwm = int(re.search(r"VmHWM:\s+(\d+)", status).group(1))  # type: ignore[union-attr]
    return rss / 1024, hwm / 1024


def start_idp(bench: Bench) -> tuple[Proc, Callable[..., dict[str, Any]]]:
    log = open(bench.workdir / "idp.log", "wb")  # noqa: SIM115
    popen = subprocess.Popen(
        [PY, "bench/idp.py"], stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=log, cwd=ROOT
    )
    proc = Proc("idp", popen)
    bench.procs.append(proc)
    assert popen.stdin is not None and popen.stdout is not None
    stdin, stdout = popen.stdin, popen.stdout

    def ask(**cmd: Any) -> dict[str, Any]:
        stdin.write((json.dumps(cmd) + "\n").encode())
        stdin.flush()
        line = stdout.readline()
        if not line:
            raise RuntimeError("the emulator process exited; see idp.log")
        answer: dict[str, Any] = json.loads(line)
        return answer

    return proc, ask


# ---------------------------------------------------------------------------------------------
# Configs
# ---------------------------------------------------------------------------------------------

NGINX_COMMON = """
worker_processes 1;
master_process off;
daemon off;
pid {dir}/{name}.pid;
error_log {dir}/{name}-error.log warn;
events {{ worker_connections 8192; }}
http {{
  access_log off;
  client_body_temp_path {dir}/tmp-{name};
  proxy_temp_path {dir}/tmp-{name};
  fastcgi_temp_path {dir}/tmp-{name};
  uwsgi_temp_path {dir}/tmp-{name};
  scgi_temp_path {dir}/tmp-{name};
  large_client_header_buffers 4 32k;
  keepalive_requests 10000000;
  keepalive_timeout 300s;
  {body}
}}
"""

NGINX_UPSTREAM = """
  server {{
    listen 127.0.0.1:{port} backlog=4096;
    root {dir}/www;
    location = /jwks.json {{ default_type application/json; }}
    location / {{ default_type text/html; try_files /body.html =404; }}
  }}
"""

NGINX_PROXY = """
  upstream app {{ server 127.0.0.1:{upstream}; keepalive 64; keepalive_requests 10000000; }}
  server {{
    listen 127.0.0.1:{port} backlog=4096;
    location / {{
      proxy_pass http://app;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
    }}
  }}
"""


def nginx_conf(workdir: Path, name: str, body: str) -> Path:
    (workdir / f"tmp-{name}").mkdir(exist_ok=True)
    path = workdir / f"{name}.conf"
    path.write_text(NGINX_COMMON.format(dir=workdir, name=name, body=body))
    return path


LIMITS_YAML = """limits:
  # The storm phase is 1,000 real sessions of 50 users (20 each) at once: lift the per-subject
  # budget and the IdP ceiling so it measures refreshing, not the budgets. The unproven budgets
  # (what the spray phase meets) keep their defaults.
  refresh_tokens_per_subject: 100
  idp_calls_per_second: 10000
"""


def cookieguard_conf(
    workdir: Path,
    name: str,
    port: int,
    upstream_port: int,
    pool: dict[str, str],
    idp_timeout: str | None = None,
    verify: bool = True,
    limits: bool = True,
    admin_listen: bool | int = True,
    refresh_wait: str | None = None,
) -> Path:
    path = workdir / f"{name}.yaml"
    # Without `limits` (the A/B phase): a base revision older than that section rejects the key.
    limits_yaml = LIMITS_YAML if limits else ""
    if refresh_wait is not None:  # the storm at the defaults but for the wait (--storm-refresh-wait)
        limits_yaml = f"limits:\n  refresh_wait: {refresh_wait}\n"
    # Without `admin_listen`: a base revision from before the admin listener rejects the key (it
    # serves the admin endpoints on the main listener instead).
    admin_port = admin_listen if admin_listen is not True else 0  # an int: that port
    admin_yaml = f"admin_listen: 127.0.0.1:{admin_port}\n" if admin_listen is not False else ""
    path.write_text(
        f"""listen: 127.0.0.1:{port}
{admin_yaml}upstream: http://127.0.0.1:{upstream_port}
provider:
  kind: cognito
  user_pool_id: {pool["user_pool_id"]}
  client_id: {pool["client_id"]}
  endpoint: {pool["endpoint"]}
  jwks_url: {pool["jwks_url"]}
{f"  timeout: {idp_timeout}" + chr(10) if idp_timeout else ""}verify:
  signature: {"true" if verify else "false"}
{limits_yaml}routes:
  - match: /static/
    refresh: false
  - match: /
logging:
  level: warning
  format: json
  access_log: false
"""
    )
    return path


def amplify_header(client_id: str, user: str, access: str, id_token: str, refresh: str) -> str:
    layout = AmplifyLayout(client_id)
    pairs = [(layout.last_auth_user_name, encode_uri_component(user))]
    for key, value in (("accessToken", access), ("idToken", id_token), ("refreshToken", refresh)):
        pairs.append((layout.cookie_name(user, key), encode_uri_component(value)))
    pairs.append((layout.cookie_name(user, "clockDrift"), "0"))
    pairs.extend(ANALYTICS.items())
    return "; ".join(f"{k}={v}" for k, v in pairs)


# ---------------------------------------------------------------------------------------------
# wrk
# ---------------------------------------------------------------------------------------------

_UNITS = {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60000.0}


def _ms(text: str) -> float:
    m = re.fullmatch(r"([\d.]+)(us|ms|s|m)", text)
    if not m:
        raise ValueError(text)
    return float(m.group(1)) * _UNITS[m.group(2)]


@dataclass
class Run:
    rps: float
    requests: int
    p50_ms: float
    p99_ms: float
    errors: int
    cpu_us: float | None = None
    sys_us: float | None = None  # of cpu_us, the kernel's part


def wrk(
    url: str,
    connections: int,
    duration_s: float,
    cookie: str | None,
    pid: int | None,
    script: Path | None = None,
) -> Run:
    proc = start_wrk(url, connections, duration_s, cookie, script)
    before = cpu_split_s(pid) if pid else (0.0, 0.0)
    out = proc.communicate(timeout=duration_s + 30)[0]
    after = cpu_split_s(pid) if pid else (0.0, 0.0)
    run = parse_wrk(out, sum(after) - sum(before) if pid else None)
    if pid and run.requests:
        run.sys_us = (after[1] - before[1]) * 1e6 / run.requests
    return run


def start_wrk(
    url: str, connections: int, duration_s: float, cookie: str | None, script: Path | None = None
) -> subprocess.Popen[str]:
    argv = ["wrk", "-t1", f"-c{connections}", f"-d{duration_s:g}s", "--latency", "--timeout", "5s"]
    if cookie:
        argv += ["-H", f"Cookie: {cookie}"]
    if script:
        argv += ["-s", str(script)]
    return subprocess.Popen([*argv, url], stdout=subprocess.PIPE, text=True)


def parse_wrk(out: str, cpu_seconds: float | None) -> Run:
    requests = int(re.search(r"(\d+) requests in", out).group(1))  # type: ignore[union-attr]
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    p50 = _ms(re.search(r"(?m)^\s+50%\s+(\S+)", out).group(1))  # type: ignore[union-attr]
    p99 = _ms(re.search(r"(?m)^\s+99%\s+(\S+)", out).group(1))  # type: ignore[union-attr]
    errors = 0
    if m := re.search(r"Non-2xx or 3xx responses: (\d+)", out):
        errors += int(m.group(1))
    if m := re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out):
        errors += sum(int(g) for g in m.groups())
    cpu = cpu_seconds * 1e6 / requests if cpu_seconds is not None and requests else None
    return Run(rps, requests, p50, p99, errors, cpu)


def rotating_cookies_script(workdir: Path, path: str, cookies: list[str]) -> Path:
    """A wrk script that sends each request with the next of `cookies` (several sessions)."""
    script = workdir / "rotate.lua"
    quoted = ",\n".join(json.dumps(c) for c in cookies)  # JSON strings are valid Lua strings here
    script.write_text(
        f"""cookies = {{ {quoted} }}
i = 0
request = function()
  i = i + 1
  return wrk.format("GET", {json.dumps(path)}, {{["Cookie"] = cookies[(i % #cookies) + 1]}})
end
"""
    )
    return script


def profile(name: str, target: tuple[int, int], connections: int, duration_s: float, cookie: str) -> Any:
    """py-spy samples one proxy while wrk drives the session mix; the raw collapsed stacks go to
    bench/out/profile-NAME.txt, the top self-time frames into the results."""
    port, pid = target
    with spying(pid, name) as out:
        wrk(f"http://127.0.0.1:{port}/app/page", connections, duration_s, cookie, pid)
    return top_frames(out) if out is not None and out.exists() else None


@contextlib.contextmanager
def spying(pid: int, name: str, enabled: bool = True) -> Iterator[Path | None]:
    """py-spy (installed into .venv when missing) records `pid` for as long as the block runs."""
    if not enabled:
        yield None
        return
    spy = Path(PY).parent / "py-spy"
    if not spy.exists():
        # pinned in pyproject.toml's `profile` extra
        subprocess.run([PY, "-m", "pip", "install", "--quiet", "py-spy==0.4.3"], check=True)
    out = ROOT / "bench" / "out" / f"profile-{name}.txt"
    out.parent.mkdir(exist_ok=True)
    argv = [str(spy), "record", "--pid", str(pid), "--rate", "500", "--format", "raw", "--nonblocking"]
    quiet = {"stdout": subprocess.DEVNULL, "stderr": subprocess.DEVNULL}
    rec = subprocess.Popen([*argv, "--output", str(out)], **quiet)  # type: ignore[call-overload]
    try:
        time.sleep(0.5)  # attached before the load starts
        yield out
    finally:
        rec.send_signal(signal.SIGINT)  # py-spy writes its output on SIGINT
        try:
            rec.wait(timeout=30)
        except subprocess.TimeoutExpired:
            rec.kill()
            rec.wait()


def top_frames(path: Path, limit: int = 15) -> list[tuple[str, float]]:
    """Self-time share of the hottest frames in py-spy's collapsed-stack output."""
    self_time: dict[str, int] = {}
    total = 0
    for line in path.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        frame = stack.rsplit(";", 1)[-1]
        self_time[frame] = self_time.get(frame, 0) + int(count)
        total += int(count)
    top = sorted(self_time.items(), key=lambda kv: -kv[1])[:limit]
    return [(frame, round(100 * n / total, 1)) for frame, n in top]


def med(values: list[float | None]) -> float | None:
    present = [v for v in values if v is not None]
    return statistics.median(present) if present else None


# ---------------------------------------------------------------------------------------------
# Python clients: the storm and the 100k sessions
# ---------------------------------------------------------------------------------------------


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else float("nan")


async def storm(url: str, cookies: list[str]) -> tuple[int, float]:
    """All sessions at once; (failed requests, seconds). Failed: not 200, or no fresh accessToken."""
    connector = aiohttp.TCPConnector(limit=len(cookies))
    timeout = aiohttp.ClientTimeout(total=60)
    async with aiohttp.ClientSession(
        connector=connector, cookie_jar=aiohttp.DummyCookieJar(), timeout=timeout
    ) as client:

        async def one(cookie: str) -> bool:
            try:
                async with client.get(url, headers={"Cookie": cookie}) as r:
                    await r.read()
                    fresh = any(".accessToken=" in c for c in r.headers.getall("Set-Cookie", ()))
                    return r.status == 200 and fresh
            except (aiohttp.ClientError, TimeoutError):
                return False

        started = time.monotonic()
        ok = await asyncio.gather(*(one(c) for c in cookies))
        return ok.count(False), time.monotonic() - started


def measure_storm(
    url: str, script: Path, expired: list[str], window_s: float, fresh_url: str | None = None
) -> dict[str, float]:
    """Fresh sessions' latency from wrk (its own process, 4 connections, rotating over the fresh
    sessions' cookies) for `window_s` without the storm, then for the first `window_s` of it.
    `fresh_url` (default `url`) is where the fresh sessions go: the upstream directly measures
    what the storm does to the machine itself."""
    fresh_url = fresh_url or url
    base = wrk(fresh_url, 4, window_s, None, None, script)
    during = start_wrk(fresh_url, 4, window_s, None, script)
    failed, took_s = asyncio.run(storm(url, expired))
    storm_run = parse_wrk(during.communicate(timeout=window_s + 30)[0], None)
    return {
        "failed": failed,
        "storm_s": took_s,
        "fresh_p50_base_ms": base.p50_ms,
        "fresh_p99_base_ms": base.p99_ms,
        "fresh_p50_storm_ms": storm_run.p50_ms,
        "fresh_p99_storm_ms": storm_run.p99_ms,
        "fresh_requests_storm": storm_run.requests,
        "fresh_errors": base.errors + storm_run.errors,
    }


async def spray(url: str, client_id: str, per_second: int, duration_s: float) -> tuple[int, int, int]:
    """Unproven sessions (a made-up username and refresh token, nothing else), `per_second` of
    them, paced, for `duration_s`: (requests sent, answers >= 500, client errors)."""
    connector = aiohttp.TCPConnector(limit=256)
    timeout = aiohttp.ClientTimeout(total=30)
    sent = server_errors = client_errors = 0
    async with aiohttp.ClientSession(
        connector=connector, cookie_jar=aiohttp.DummyCookieJar(), timeout=timeout
    ) as client:

        async def one(n: int) -> None:
            nonlocal server_errors, client_errors
            prefix = f"CognitoIdentityServiceProvider.{client_id}"
            cookie = f"{prefix}.LastAuthUser=m{n}; {prefix}.m{n}.refreshToken=made-up-{n}-{os.getpid()}"
            try:
                async with client.get(url, headers={"Cookie": cookie}) as r:
                    await r.read()
                    server_errors += r.status >= 500
            except (aiohttp.ClientError, TimeoutError):
                client_errors += 1

        tasks = []
        started = time.monotonic()
        while (elapsed := time.monotonic() - started) < duration_s:
            due = int(elapsed * per_second) + 1
            while sent < due:
                tasks.append(asyncio.ensure_future(one(sent)))
                sent += 1
            await asyncio.sleep(0.005)
        await asyncio.gather(*tasks)
    return sent, server_errors, client_errors


def measure_spray(
    url: str, client_id: str, script: Path, per_second: int, window_s: float
) -> dict[str, float]:
    """Fresh sessions' latency (wrk, as in the storm) without and during a spray of unproven
    sessions at `per_second`. A fresh session touches no budget; what the spray costs it is the
    CPU of answering the spray itself."""
    base = wrk(url, 4, window_s, None, None, script)
    during = start_wrk(url, 4, window_s, None, script)
    sent, server_errors, client_errors = asyncio.run(spray(url, client_id, per_second, window_s))
    spray_run = parse_wrk(during.communicate(timeout=window_s + 30)[0], None)
    return {
        "spray_per_second": per_second,
        "spray_sent": sent,
        "spray_5xx": server_errors,
        "spray_client_errors": client_errors,
        "fresh_p50_base_ms": base.p50_ms,
        "fresh_p99_base_ms": base.p99_ms,
        "fresh_p50_spray_ms": spray_run.p50_ms,
        "fresh_p99_spray_ms": spray_run.p99_ms,
        "fresh_requests_base": base.requests,
        "fresh_requests_spray": spray_run.requests,
        "fresh_errors": base.errors + spray_run.errors,
    }


async def arrive(url: str, cookies: list[str], spread_s: float) -> list[tuple[float, bool]]:
    """Each session once, spread evenly over `spread_s`: (seconds to the answer, whether it came
    with a fresh accessToken Set-Cookie and status 200) per request."""
    connector = aiohttp.TCPConnector(limit=0)
    timeout = aiohttp.ClientTimeout(total=60)
    async with aiohttp.ClientSession(
        connector=connector, cookie_jar=aiohttp.DummyCookieJar(), timeout=timeout
    ) as client:

        async def one(cookie: str) -> tuple[float, bool]:
            started = time.monotonic()
            try:
                async with client.get(url, headers={"Cookie": cookie}) as r:
                    await r.read()
                    fresh = any(".accessToken=" in c for c in r.headers.getall("Set-Cookie", ()))
                    return time.monotonic() - started, r.status == 200 and fresh
            except (aiohttp.ClientError, TimeoutError):
                return time.monotonic() - started, False

        tasks: list[asyncio.Future[tuple[float, bool]]] = []
        started = time.monotonic()
        while len(tasks) < len(cookies):
            due = min(len(cookies), int((time.monotonic() - started) / spread_s * len(cookies)) + 1)
            tasks.extend(asyncio.ensure_future(one(c)) for c in cookies[len(tasks) : due])
            await asyncio.sleep(0.002)
        return list(await asyncio.gather(*tasks))


def storm_at_defaults(
    bench: Bench,
    ask: Callable[..., dict[str, Any]],
    pool: dict[str, str],
    up_port: int,
    ngx_port: int,
    fresh_cookies: list[str],
    expired_cookie: Callable[[dict[str, str]], str],
    window_s: float,
    refresh_wait: str | None = None,
) -> dict[str, Any]:
    """docs/security.md "Abuse limits", a mass expiry: 1,000 distinct users whose access tokens expired
    arrive within 2 s at a cookieguard with the DEFAULT limits (50 IdP calls per second, a queue
    of 1000, 10 s each). The IdP calls and their most in one second (counted at the emulator),
    requests forwarded without fresh tokens (they reached the app with the expired one), the
    storm requests' time to answer (the wait for the ceiling plus one IdP call), and fresh
    sessions' p99 (wrk) through cookieguard and through nginx, both during the first `window_s`
    of the storm against the same load without it. `refresh_wait`: that one limit changed."""
    wd = bench.workdir
    port = free_port()
    admin_port = free_port()  # its metrics are read after the storm (on admin_listen only)
    conf = cookieguard_conf(
        wd,
        "cookieguard-defaults",
        port,
        up_port,
        pool,
        limits=False,
        admin_listen=admin_port,
        refresh_wait=refresh_wait,
    )
    cg = bench.start("cookieguard-defaults", [PY, "-m", "cookieguard", "run", "--config", str(conf)])
    base_url = f"http://127.0.0.1:{port}"
    wait_http(f"{base_url}/", cg)
    script = rotating_cookies_script(wd, "/app/page", fresh_cookies)
    cg_url, ngx_url = f"{base_url}/app/page", f"http://127.0.0.1:{ngx_port}/app/page"
    wrk(cg_url, 4, 1, None, None, script)  # warm-up: the JWKS, the fresh sessions' verdicts
    t = time.monotonic()
    expired = ask(cmd="sessions", prefix="expiry", users=1000, per_user=1, lifetime=-60)["sessions"]
    ask(cmd="lifetime", value=3600)
    minted_s = time.monotonic() - t
    cookies = [expired_cookie(s) for s in expired]

    def both(storm: bool) -> tuple[Run, Run, list[tuple[float, bool]]]:
        on_cg, on_ngx = (start_wrk(u, 2, window_s, None, script) for u in (cg_url, ngx_url))
        answers = asyncio.run(arrive(cg_url, cookies, 2.0)) if storm else []
        runs = [parse_wrk(p.communicate(timeout=window_s + 90)[0], None) for p in (on_cg, on_ngx)]
        return runs[0], runs[1], answers

    cg_base, ngx_base, _ = both(storm=False)
    calls_before = ask(cmd="calls")["calls"]
    cpu_before = cpu_s(cg.pid)
    t = time.monotonic()
    cg_storm, ngx_storm, answers = both(storm=True)
    storm_s = time.monotonic() - t
    cpu = cpu_s(cg.pid) - cpu_before
    at = sorted(ask(cmd="call_times")["at"][calls_before:])
    per_second = [0] * (int(at[-1] - at[0]) + 1 if at else 0)
    for a in at:
        per_second[int(a - at[0])] += 1
    with urllib.request.urlopen(f"http://127.0.0.1:{admin_port}/.cookieguard/metrics", timeout=10) as r:
        metrics = r.read().decode()
    limited = {
        m.group(1): int(float(m.group(2)))
        for m in re.finditer(r'(?m)^cookieguard_refresh_limited_total\{limit="(\w+)"\} (\S+)$', metrics)
    }
    cg.stop()

    def mean_s(histogram: str) -> float:
        sums = {
            m.group(1): float(m.group(2))
            for m in re.finditer(rf"(?m)^{histogram}_(sum|count) (\S+)$", metrics)
        }
        return sums["sum"] / sums["count"] if sums.get("count") else float("nan")

    def quantile_s(histogram: str, q: float) -> float:
        """From a Prometheus histogram's cumulative buckets, linear within the bucket."""
        buckets = [
            (float(m.group(1)), float(m.group(2)))
            for m in re.finditer(rf'(?m)^{histogram}_bucket\{{le="([\d.e+-]+|\+Inf)"\}} (\S+)$', metrics)
        ]
        if not buckets or not buckets[-1][1]:
            return float("nan")
        rank, lower, below = q * buckets[-1][1], 0.0, 0.0
        for upper, count in buckets:
            if count >= rank:
                if upper == float("inf"):
                    return lower
                return lower + (upper - lower) * (rank - below) / max(count - below, 1e-9)
            lower, below = upper, count
        return lower

    waits = [s for s, fresh in answers if fresh]
    return {
        "refresh_wait": refresh_wait or "10s (the default)",
        "sessions": len(cookies),
        "minted_s": minted_s,
        "storm_s": storm_s,
        "idp_calls": len(at),
        "idp_calls_per_second": per_second,
        "not_refreshed": sum(not fresh for _, fresh in answers),
        "limited": {k: v for k, v in limited.items() if v},
        "refreshed_answer_p50_s": pct(waits, 0.5),
        "refreshed_answer_p99_s": pct(waits, 0.99),
        "all_answers_max_s": max((s for s, _ in answers), default=float("nan")),
        # From cookieguard's own histograms: what an IdP call took, what a refresh waited.
        "idp_call_mean_s": mean_s("cookieguard_refresh_duration_seconds"),
        "refresh_wait_mean_s": mean_s("cookieguard_refresh_wait_seconds"),
        "refresh_wait_p50_s": quantile_s("cookieguard_refresh_wait_seconds", 0.5),
        "refresh_wait_p99_s": quantile_s("cookieguard_refresh_wait_seconds", 0.99),
        "cookieguard_cpu_s": cpu,
        "fresh_cg_p99_base_ms": cg_base.p99_ms,
        "fresh_cg_p99_storm_ms": cg_storm.p99_ms,
        "fresh_cg_p50_base_ms": cg_base.p50_ms,
        "fresh_cg_p50_storm_ms": cg_storm.p50_ms,
        "fresh_ngx_p99_base_ms": ngx_base.p99_ms,
        "fresh_ngx_p99_storm_ms": ngx_storm.p99_ms,
        "fresh_errors": cg_base.errors + cg_storm.errors + ngx_base.errors + ngx_storm.errors,
    }


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def unsigned_token(claims: dict[str, Any]) -> str:
    """A token shaped like moto's RS256 ones (header, Cognito claims, 342-character signature)
    but not signed: the RSS phase runs with verify.signature off, because signing 100,000 tokens
    takes minutes on this box (RS256 ~1-2 ms, ES256 ~0.4 ms each) and verifying them as long."""
    header = b64url(json.dumps({"typ": "JWT", "kid": "dummy", "alg": "RS256"}).encode())
    payload = b64url(json.dumps(claims, separators=(",", ":")).encode())
    return f"{header}.{payload}.{b64url(os.urandom(256))}"


def cognito_access_claims(pool_id: str, client_id: str, user: str, now: int) -> dict[str, Any]:
    return {
        "sub": str(uuid.uuid4()),
        "iss": f"https://cognito-idp.us-east-1.amazonaws.com/{pool_id}",
        "client_id": client_id,
        "origin_jti": str(uuid.uuid4()),
        "event_id": str(uuid.uuid4()),
        "token_use": "access",
        "scope": "aws.cognito.signin.user.admin",
        "auth_time": now,
        "exp": now + 3600,
        "iat": now,
        "jti": str(uuid.uuid4()),
        "username": user,
    }


async def many_sessions(
    url: str, count: int, header_of: Callable[[int], str], concurrency: int = 64
) -> tuple[int, float]:
    """`count` requests, each with its own session (`header_of(i)`), `concurrency` at a time;
    (non-200 answers, seconds)."""
    connector = aiohttp.TCPConnector(limit=concurrency)
    bad = 0
    next_index = 0
    async with aiohttp.ClientSession(connector=connector, cookie_jar=aiohttp.DummyCookieJar()) as client:

        async def worker() -> None:
            nonlocal bad, next_index
            while next_index < count:
                i = next_index
                next_index += 1
                async with client.get(url, headers={"Cookie": header_of(i)}) as r:
                    await r.read()
                    bad += r.status != 200

        started = time.monotonic()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        return bad, time.monotonic() - started


async def open_keepalive(port: int, count: int) -> list[asyncio.StreamWriter]:
    """`count` connections, each with one request answered and left open (keep-alive)."""
    writers = []
    request = b"GET /app/page HTTP/1.1\r\nHost: bench\r\n\r\n"
    for _ in range(count):
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(request)
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
        length = int(re.search(rb"(?i)content-length:\s*(\d+)", head).group(1))  # type: ignore[union-attr]
        await reader.readexactly(length)
        writers.append(writer)
    return writers


# ---------------------------------------------------------------------------------------------
# A/B against a base revision (`make bench BASE=<rev>`)
# ---------------------------------------------------------------------------------------------

AB_CONTENDERS = ("base", "head", "nginx", "bare")


@dataclass
class BaseCheckout:
    """The base revision checked out in a git worktree of its own, and the Python that runs it."""

    rev: str
    sha: str
    path: Path
    python: str

    @property
    def knows_admin_listen(self) -> bool:
        """Whether this revision reads the `admin_listen` key (older ones reject it)."""
        found = subprocess.run(
            ["git", "-C", str(ROOT), "grep", "-q", "admin_listen", self.sha, "--", "cookieguard"],
            capture_output=True,
        )
        return found.returncode == 0

    def remove(self) -> None:
        git = ["git", "-C", str(ROOT)]
        subprocess.run([*git, "worktree", "remove", "--force", str(self.path)], capture_output=True)
        subprocess.run([*git, "worktree", "prune"], capture_output=True)


def check_out_base(rev: str, workdir: Path) -> BaseCheckout:
    """`rev` in a detached worktree under the bench's temporary directory. The package is pure
    Python, so the working tree's venv runs it with the base tree first on sys.path, unless the
    base's pyproject.toml declares other dependencies: then the base gets a venv of its own."""
    git = ["git", "-C", str(ROOT)]
    sha = subprocess.run(
        [*git, "rev-parse", "--verify", f"{rev}^{{commit}}"], capture_output=True, text=True, check=True
    ).stdout.strip()
    path = workdir / f"base-{sha[:12]}"
    subprocess.run([*git, "worktree", "add", "--detach", str(path), sha], capture_output=True, check=True)
    python = PY
    if (path / "pyproject.toml").read_text() != (ROOT / "pyproject.toml").read_text():
        venv = path / ".venv"
        subprocess.run([PY, "-m", "venv", str(venv)], check=True)
        python = str(venv / "bin" / "python")
        subprocess.run([python, "-m", "pip", "install", "--quiet", f"{path}[speed]"], check=True)
    where = subprocess.run(
        [python, "-c", "import cookieguard; print(cookieguard.__file__)"],
        cwd=path,
        env=base_env(path),
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    if not Path(where).resolve().is_relative_to(path.resolve()):
        raise RuntimeError(f"the base run would import cookieguard from {where}, not from {path}")
    return BaseCheckout(rev, sha, path, python)


def base_env(path: Path) -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(path)}


def start_base(bench: Bench, base: BaseCheckout, conf: Path) -> Proc:
    argv = [base.python, "-m", "cookieguard", "run", "--config", str(conf)]
    return bench.start("cookieguard-base", argv, cwd=base.path, env=base_env(base.path))


def ab_rounds(
    targets: dict[str, tuple[int, int]],
    session_cookie: str,
    args: argparse.Namespace,
    log: Callable[[str], None],
) -> dict[str, Any]:
    """base, head (the working tree), nginx and the bare proxy in the same rounds, the order
    reversed every other round, so that whatever else the box does falls on all of them alike;
    medians over the rounds. `c1` is the session mix at one connection (latency)."""
    mixes = {
        "plain": ("/app/page", None, args.connections),
        "session": ("/app/page", session_cookie, args.connections),
        "static": ("/static/app.js", session_cookie, args.connections),
        "c1": ("/app/page", session_cookie, 1),
    }
    runs: dict[str, dict[str, list[Run]]] = {}
    for rnd in range(args.rounds):
        order = AB_CONTENDERS if rnd % 2 == 0 else AB_CONTENDERS[::-1]
        for mix, (path, cookie, connections) in mixes.items():
            for name in order:
                port, pid = targets[name]
                r = wrk(f"http://127.0.0.1:{port}{path}", connections, args.duration, cookie, pid)
                runs.setdefault(mix, {}).setdefault(name, []).append(r)
        log(f"A/B round {rnd + 1}/{args.rounds} done")
    return {
        mix: {
            name: {
                "rps": med([r.rps for r in rs]),
                "cpu_us": med([r.cpu_us for r in rs]),
                "p50_ms": med([r.p50_ms for r in rs]),
                "p99_ms": med([r.p99_ms for r in rs]),
                "errors": sum(r.errors for r in rs),
                "sys_us": med([r.sys_us for r in rs]),
                "cpu_us_rounds": [round(r.cpu_us or 0) for r in rs],
                "rps_rounds": [round(r.rps) for r in rs],
            }
            for name, rs in by_name.items()
        }
        for mix, by_name in runs.items()
    }


def ab_phase(
    bench: Bench,
    args: argparse.Namespace,
    pool: dict[str, str],
    up_port: int,
    references: dict[str, tuple[int, int]],
    session_cookie: str,
    log: Callable[[str], None],
) -> dict[str, Any]:
    """The base revision and the working tree, each a cookieguard of its own with the same config
    (no `limits` section: the mixes never refresh), against the same nginx and bare proxy."""
    base = check_out_base(args.base, bench.workdir)
    try:
        base_port, head_port = free_port(), free_port()
        conf = cookieguard_conf(
            bench.workdir,
            "ab-base",
            base_port,
            up_port,
            pool,
            limits=False,
            admin_listen=base.knows_admin_listen,
        )
        base_proc = start_base(bench, base, conf)
        conf = cookieguard_conf(bench.workdir, "ab-head", head_port, up_port, pool, limits=False)
        head_proc = bench.start("cookieguard-head", [PY, "-m", "cookieguard", "run", "--config", str(conf)])
        for port, proc in ((base_port, base_proc), (head_port, head_proc)):
            wait_http(f"http://127.0.0.1:{port}/", proc)
        targets = {**references, "base": (base_port, base_proc.pid), "head": (head_port, head_proc.pid)}
        for name in ("base", "head"):  # warm-up: connections, the JWKS fetch, the token caches
            port = targets[name][0]
            for path in ("/app/page", "/static/app.js"):
                wrk(f"http://127.0.0.1:{port}{path}", args.connections, 1, session_cookie, None)
        log(f"A/B: base {base.rev} ({base.sha[:12]}) and the working tree up")
        result: dict[str, Any] = {
            "rev": base.rev,
            "sha": base.sha,
            "mixes": ab_rounds(targets, session_cookie, args, log),
        }
        if args.profile:
            for name in ("base", "head"):
                for mix, cookie in (("plain", None), ("session", session_cookie)):
                    port, pid = targets[name]
                    with spying(pid, f"ab-{name}-{mix}") as out:
                        url = f"http://127.0.0.1:{port}/app/page"
                        r = wrk(url, args.connections, args.duration, cookie, pid)
                    if out is not None and out.exists():
                        result.setdefault("profile", {})[f"{name}-{mix}"] = top_frames(out)
                        # samples per request: the two profiles compare in absolute terms
                        result.setdefault("profile_requests", {})[f"{name}-{mix}"] = r.requests
            log("A/B profiles recorded in bench/out/profile-ab-*.txt")
        base_proc.stop()
        head_proc.stop()
        if args.count == "instructions":
            result["instructions"] = ab_instructions(bench, base, args, pool, up_port, session_cookie, log)
        return result
    finally:
        base.remove()


# Instructions per request: what the process executes, counted by valgrind (callgrind), which
# does not depend on what else the box runs. CPU time on a shared 2-core box moves by ±20 % between
# same-vs-same runs; the instruction count of a fixed request loop moves by well under 1 %.
COUNT_MIXES = {
    "plain": ("/app/page", False, 8),
    "session": ("/app/page", True, 8),
    "static": ("/static/app.js", True, 8),
    "c1": ("/app/page", True, 1),
}


async def fixed_requests(url: str, cookie: str | None, total: int, connections: int) -> int:
    """`total` GETs over `connections` keep-alive connections; the number answered 200."""
    headers = {"Cookie": cookie} if cookie else {}
    ok = 0
    left = total
    connector = aiohttp.TCPConnector(limit=connections)
    async with aiohttp.ClientSession(connector=connector) as http:

        async def worker() -> None:
            nonlocal left, ok
            while left > 0:
                left -= 1
                async with http.get(url, headers=headers) as r:
                    await r.read()
                    ok += r.status == 200

        await asyncio.gather(*(worker() for _ in range(connections)))
    return ok


def _callgrind(pid: int, flag: str, url: str) -> None:
    """`callgrind_control FLAG PID`. Valgrind takes the command when the process next runs
    code, so requests keep coming (one at a time, at most a handful) until it is taken."""
    proc = subprocess.Popen(["callgrind_control", flag, str(pid)], stdout=subprocess.DEVNULL)
    while proc.poll() is None:
        with contextlib.suppress(OSError):
            urllib.request.urlopen(url, timeout=30).read()
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=0.5)


def _dumped_instructions(out_prefix: Path, pid: int) -> int:
    dumps = sorted(out_prefix.parent.glob(f"{out_prefix.name}.{pid}.*"), key=lambda p: p.stat().st_mtime)
    text = dumps[-1].read_text()
    m = re.search(r"(?m)^(?:summary|totals): (\d+)", text)
    if m is None:
        raise RuntimeError(f"no instruction total in {dumps[-1]}")
    return int(m.group(1))


def count_instructions(
    bench: Bench,
    name: str,
    argv: Sequence[str],
    port: int,
    session_cookie: str,
    requests: int,
    **kwargs: Any,
) -> dict[str, float]:
    """Instructions per request of the process `argv` starts (listening on `port`), run under
    callgrind, over a fixed loop of `requests` requests per mix after a warm-up of a fifth as
    many. A fixed loop instead of a duration: the count is then the code's, not the box's."""
    out_prefix = bench.workdir / f"callgrind-{name}"
    vg = ["valgrind", "--tool=callgrind", "--instr-atstart=no", f"--callgrind-out-file={out_prefix}.%p"]
    proc = bench.start(f"callgrind-{name}", [*vg, *argv], **kwargs)
    try:
        wait_http(f"http://127.0.0.1:{port}/", proc, timeout_s=300)
        ping = f"http://127.0.0.1:{port}/static/ping"
        _callgrind(proc.pid, "--instr=on", ping)
        result: dict[str, float] = {}
        for mix, (path, with_cookie, connections) in COUNT_MIXES.items():
            url = f"http://127.0.0.1:{port}{path}"
            cookie = session_cookie if with_cookie else None
            asyncio.run(fixed_requests(url, cookie, max(requests // 5, connections), connections))
            _callgrind(proc.pid, "--zero", ping)
            ok = asyncio.run(fixed_requests(url, cookie, requests, connections))
            _callgrind(proc.pid, "--dump", ping)
            if ok != requests:
                raise RuntimeError(f"{name} {mix}: {requests - ok} of {requests} requests failed")
            result[mix] = _dumped_instructions(out_prefix, proc.pid) / requests
        return result
    finally:
        proc.stop()


def ab_instructions(
    bench: Bench,
    base: BaseCheckout,
    args: argparse.Namespace,
    pool: dict[str, str],
    up_port: int,
    session_cookie: str,
    log: Callable[[str], None],
) -> dict[str, dict[str, float]]:
    """Instructions per request of base, head and the bare proxy, one after the other (the count
    does not depend on the box's load, so they need not share rounds)."""
    counts: dict[str, dict[str, float]] = {}
    for name in ("base", "head", "bare"):
        port = free_port()
        if name == "bare":
            argv = [PY, "bench/bare_proxy.py", str(port), f"http://127.0.0.1:{up_port}", "uvloop"]
            kwargs: dict[str, Any] = {}
        else:
            admin_listen = base.knows_admin_listen if name == "base" else True
            conf = cookieguard_conf(
                bench.workdir, f"count-{name}", port, up_port, pool, limits=False, admin_listen=admin_listen
            )
            python = base.python if name == "base" else PY
            argv = [python, "-m", "cookieguard", "run", "--config", str(conf)]
            kwargs = {"cwd": base.path, "env": base_env(base.path)} if name == "base" else {}
        counts[name] = count_instructions(
            bench, name, argv, port, session_cookie, args.count_requests, **kwargs
        )
        log(
            f"instructions per request, {name}: "
            + ", ".join(f"{m} {v:,.0f}" for m, v in counts[name].items())
        )
    return counts


def print_ab(ab: dict[str, Any]) -> None:
    def cpu(by: dict[str, Any], name: str) -> float | None:
        value: float | None = by.get(name, {}).get("cpu_us")
        return value

    def rps(by: dict[str, Any], name: str) -> float | None:
        value: float | None = by.get(name, {}).get("rps")
        return value

    print()
    print(f"A/B: base {ab['rev']} ({ab['sha'][:12]}) vs head (the working tree), same rounds, medians")
    print(
        f"{'mix':<8} {'cpu µs/req base':>15} {'head':>6} {'head/base':>9} {'req/s base':>11} {'head':>8} "
        f"{'head/base':>9} {'cpu x bare: base':>16} {'head':>5} {'bare µs':>8} {'nginx µs':>8}"
    )
    for mix, by in ab["mixes"].items():
        cells = [
            _f(cpu(by, "base")).rjust(15),
            _f(cpu(by, "head")).rjust(6),
            _f(ratio(cpu(by, "head"), cpu(by, "base")), 3).rjust(9),
            _f(rps(by, "base")).rjust(11),
            _f(rps(by, "head")).rjust(8),
            _f(ratio(rps(by, "head"), rps(by, "base")), 3).rjust(9),
            _f(ratio(cpu(by, "base"), cpu(by, "bare")), 2).rjust(16),
            _f(ratio(cpu(by, "head"), cpu(by, "bare")), 2).rjust(5),
            _f(cpu(by, "bare")).rjust(8),
            _f(cpu(by, "nginx")).rjust(8),
        ]
        print(f"{mix:<8} " + " ".join(cells))
    c1 = ab["mixes"].get("c1", {})
    if c1:
        latency = ", ".join(
            f"{n} {_f(c1[n]['p50_ms'], 3)}/{_f(c1[n]['p99_ms'], 3)}" for n in AB_CONTENDERS if n in c1
        )
        print(f"c1 (1 connection, session cookies) p50/p99 ms: {latency}")
    for mix, by in ab["mixes"].items():
        rounds = "; ".join(f"{n} {by[n]['cpu_us_rounds']}" for n in AB_CONTENDERS if n in by)
        kernel = ", ".join(f"{n} {_f(by[n]['sys_us'])}" for n in AB_CONTENDERS if n in by)
        print(f"  {mix} cpu µs/req per round: {rounds}; of which kernel (median): {kernel}")
    for name, frames in (ab.get("profile") or {}).items():
        print()
        print(f"profile ab-{name} (py-spy, self time): bench/out/profile-ab-{name}.txt")
        for frame, share in frames or ():
            print(f"  {share:5.1f}%  {frame}")
    counts = ab.get("instructions")
    if counts:
        print()
        print("instructions per request (callgrind, a fixed loop of requests; 8 connections, c1: 1)")
        columns = (
            ("base", 10),
            ("head", 10),
            ("head/base", 9),
            ("bare", 10),
            ("x bare: base", 12),
            ("head", 5),
        )
        print(f"{'mix':<8} " + " ".join(name.rjust(width) for name, width in columns))
        for mix in COUNT_MIXES:
            b, h, bare = (counts[n].get(mix) for n in ("base", "head", "bare"))
            cells = [
                _f(b).rjust(10),
                _f(h).rjust(10),
                _f(ratio(h, b), 3).rjust(9),
                _f(bare).rjust(10),
                _f(ratio(b, bare), 2).rjust(12),
                _f(ratio(h, bare), 2).rjust(5),
            ]
            print(f"{mix:<8} " + " ".join(cells))
    figures = [
        f"{mix}_cpu_ratio={_f(ratio(cpu(by, 'head'), cpu(by, 'base')), 3)}" for mix, by in ab["mixes"].items()
    ]
    session = ab["mixes"].get("session", {})
    figures.append(f"session_head_x_bare={_f(ratio(cpu(session, 'head'), cpu(session, 'bare')), 3)}")
    if counts:
        figures += [
            f"{mix}_instr_ratio={_f(ratio(counts['head'].get(mix), counts['base'].get(mix)), 3)}"
            for mix in COUNT_MIXES
        ]
    print(f"bench-ab: base={ab['sha'][:12]} " + " ".join(figures))


# ---------------------------------------------------------------------------------------------
# Main
# ---------------------------------------------------------------------------------------------


PHASES = ("matrix", "latency", "storm", "spray", "storm-defaults", "forward-auth", "rss")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--upstream", choices=("nginx", "aiohttp"), default="nginx")
    parser.add_argument("--duration", type=float, default=5.0, help="seconds per wrk run")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--sessions", type=int, default=100_000, help="sessions seen for the RSS figure")
    parser.add_argument("--keepalive", type=int, default=1000, help="open connections for the RSS figure")
    parser.add_argument(
        "--idp-timeout", default=None, help="cookieguard's provider.timeout (default: the product's, 5s)"
    )
    parser.add_argument(
        "--profile",
        action="store_true",
        help="also record py-spy profiles of cookieguard and the bare proxy (session mix) into bench/out/",
    )
    parser.add_argument(
        "--skip",
        default=None,
        help=f"comma list of phases to skip: {','.join(PHASES)} (with --base: all of them unless given)",
    )
    parser.add_argument(
        "--base",
        default=None,
        metavar="REV",
        help="also run this git revision's cookieguard in the same rounds as the working tree (A/B)",
    )
    parser.add_argument(
        "--count",
        choices=("cpu", "instructions"),
        default="cpu",
        help="with --base: 'instructions' also counts instructions per request of base, head and the "
        "bare proxy under valgrind (load-independent; needs valgrind)",
    )
    parser.add_argument(
        "--count-requests", type=int, default=1000, help="requests per mix for --count instructions"
    )
    parser.add_argument(
        "--storm-refresh-wait",
        default=None,
        help="storm-defaults phase: this limits.refresh_wait instead of the default (e.g. 25s)",
    )
    parser.add_argument("--only", default="", help="comma list of the phases to run; the others are skipped")
    args = parser.parse_args()
    if args.skip is None:
        args.skip = ",".join(PHASES) if args.base else ""
    skip = set(filter(None, args.skip.split(",")))
    if args.only:
        skip |= set(PHASES) - set(args.only.split(","))
    for tool in ("nginx", "wrk"):
        if shutil.which(tool) is None and not Path(f"/usr/sbin/{tool}").exists():
            print(f"bench: {tool} not found (make bench installs it with apt-get)", file=sys.stderr)
            return 2
    nginx = shutil.which("nginx") or "/usr/sbin/nginx"
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, 65536), hard))

    workdir = Path(tempfile.mkdtemp(prefix="cookieguard-bench-"))
    bench = Bench(workdir)
    try:
        results = run(bench, nginx, args, skip)
    finally:
        bench.stop_all()
    out = ROOT / "bench" / "out"
    out.mkdir(exist_ok=True)
    (out / "latest.json").write_text(json.dumps(results, indent=2))
    shutil.rmtree(workdir, ignore_errors=True)
    print_report(results)
    return 0


def run(bench: Bench, nginx: str, args: argparse.Namespace, skip: set[str]) -> dict[str, Any]:
    wd = bench.workdir
    results: dict[str, Any] = {"machine": machine(), "args": vars(args)}
    started = time.monotonic()
    log = lambda msg: print(f"[{time.monotonic() - started:6.1f}s] {msg}", flush=True)  # noqa: E731

    idp_proc, ask = start_idp(bench)
    pool = ask(cmd="pool")
    log("emulator up; minting sessions")
    fresh = ask(cmd="sessions", prefix="fresh", users=9, per_user=1, lifetime=3600)["sessions"]
    cookie_of = lambda s: amplify_header(pool["client_id"], s["user"], s["access"], s["id"], s["refresh"])  # noqa: E731
    session_cookie = cookie_of(fresh[0])
    results["session_cookie_bytes"] = len(session_cookie)

    # Upstream: a 1 KB body
    (wd / "www").mkdir()
    (wd / "www" / "body.html").write_bytes((b"<p>" + b"x" * 1017 + b"</p>\n")[:1024])
    up_port = free_port()
    if args.upstream == "nginx":
        conf = nginx_conf(wd, "upstream", NGINX_UPSTREAM.format(port=up_port, dir=wd))
        upstream = bench.start("upstream", [nginx, "-p", str(wd), "-c", str(conf)])
    else:
        upstream = bench.start(
            "upstream", [PY, "bench/upstream_app.py", str(up_port), str(wd / "www" / "body.html")]
        )
    wait_http(f"http://127.0.0.1:{up_port}/", upstream)

    ngx_port, bare_port, bare_aio_port, cg_port = free_port(), free_port(), free_port(), free_port()
    conf = nginx_conf(wd, "proxy", NGINX_PROXY.format(port=ngx_port, upstream=up_port))
    ngx = bench.start("nginx", [nginx, "-p", str(wd), "-c", str(conf)])
    up_url = f"http://127.0.0.1:{up_port}"
    bare = bench.start("bare", [PY, "bench/bare_proxy.py", str(bare_port), up_url, "uvloop"])
    bare_aio = bench.start("bare-asyncio", [PY, "bench/bare_proxy.py", str(bare_aio_port), up_url, "asyncio"])
    cg_conf = cookieguard_conf(wd, "cookieguard", cg_port, up_port, pool, args.idp_timeout)
    cg = bench.start("cookieguard", [PY, "-m", "cookieguard", "run", "--config", str(cg_conf)])
    for port, proc in ((ngx_port, ngx), (bare_port, bare), (bare_aio_port, bare_aio), (cg_port, cg)):
        wait_http(f"http://127.0.0.1:{port}/", proc)
    log(f"processes up (upstream: {args.upstream}); session cookie {len(session_cookie)} bytes")

    contenders = {
        "direct": (up_port, upstream.pid),
        "nginx": (ngx_port, ngx.pid),
        "bare": (bare_port, bare.pid),
        "bare-asyncio": (bare_aio_port, bare_aio.pid),
        "cookieguard": (cg_port, cg.pid),
    }
    mixes = {
        "plain": ("/app/page", None),
        "session": ("/app/page", session_cookie),
        "static": ("/static/app.js", session_cookie),
    }
    # bare on the default event loop matters only for the session mix's "faster than" claim
    in_mix = {"bare-asyncio": {"session"}}
    # Warm-up: connections, the JWKS fetch, the token caches.
    for port, _pid in contenders.values():
        for path, cookie in mixes.values():
            wrk(f"http://127.0.0.1:{port}{path}", args.connections, 1, cookie, None)
    log("warm-up done")

    runs: dict[str, dict[str, list[Run]]] = {}
    if "matrix" not in skip:
        for rnd in range(args.rounds):
            for mix, (path, cookie) in mixes.items():
                for name, (port, pid) in contenders.items():
                    if mix not in in_mix.get(name, {mix}):
                        continue
                    r = wrk(f"http://127.0.0.1:{port}{path}", args.connections, args.duration, cookie, pid)
                    runs.setdefault(mix, {}).setdefault(name, []).append(r)
            log(f"throughput round {rnd + 1}/{args.rounds} done")
    results["throughput"] = {
        mix: {
            name: {
                "rps": med([r.rps for r in rs]),
                "cpu_us": med([r.cpu_us for r in rs]),
                "p50_ms": med([r.p50_ms for r in rs]),
                "p99_ms": med([r.p99_ms for r in rs]),
                "errors": sum(r.errors for r in rs),
                "rps_rounds": [round(r.rps) for r in rs],
            }
            for name, rs in by_name.items()
        }
        for mix, by_name in runs.items()
    }

    if args.profile:
        results["profile"] = {
            name: profile(name, contenders[name], args.connections, args.duration, session_cookie)
            for name in ("cookieguard", "bare")
        }
        log("profiles recorded in bench/out/")

    lat: dict[str, list[Run]] = {}
    if "latency" not in skip:
        for rnd in range(args.rounds):
            for name in ("direct", "nginx", "bare", "cookieguard"):
                port, pid = contenders[name]
                r = wrk(f"http://127.0.0.1:{port}/app/page", 1, args.duration, session_cookie, pid)
                lat.setdefault(name, []).append(r)
            log(f"latency round {rnd + 1}/{args.rounds} done")
    results["latency"] = {
        name: {
            "p50_ms": med([r.p50_ms for r in rs]),
            "p99_ms": med([r.p99_ms for r in rs]),
            "cpu_us": med([r.cpu_us for r in rs]),
            "errors": sum(r.errors for r in rs),
        }
        for name, rs in lat.items()
    }

    if args.base:
        references = {name: contenders[name] for name in ("nginx", "bare")}
        results["ab"] = ab_phase(bench, args, pool, up_port, references, session_cookie, log)

    for proc in (bare, bare_aio):  # they have done their part; free the CPU for what follows
        proc.stop()

    if "storm" not in skip:
        t = time.monotonic()
        expired = ask(cmd="sessions", prefix="storm", users=50, per_user=20, lifetime=-60)["sessions"]
        ask(cmd="lifetime", value=3600)
        log(f"storm: 1,000 expired sessions minted in {time.monotonic() - t:.1f}s")
        calls_before = ask(cmd="calls")["calls"]
        cpu_before = cpu_s(cg.pid)
        script = rotating_cookies_script(wd, "/app/page", [cookie_of(s) for s in fresh[1:]])
        with spying(cg.pid, "storm", enabled=args.profile) as spy_out:
            storm_result = measure_storm(
                f"http://127.0.0.1:{cg_port}/app/page",
                script,
                [cookie_of(s) for s in expired],
                window_s=args.duration,
            )
        if spy_out is not None and spy_out.exists():
            results.setdefault("profile", {})["storm"] = top_frames(spy_out)
        storm_result["idp_calls"] = ask(cmd="calls")["calls"] - calls_before
        storm_result["cookieguard_cpu_s"] = cpu_s(cg.pid) - cpu_before
        results["storm"] = storm_result
        log(f"storm done: {storm_result}")
        # The same storm again, with the fresh sessions sent to the upstream (nginx) directly:
        # what the storm's other processes (the emulator, the load generator) do to this box.
        floor = ask(cmd="sessions", prefix="floor", users=50, per_user=20, lifetime=-60)["sessions"]
        ask(cmd="lifetime", value=3600)
        results["storm_floor"] = measure_storm(
            f"http://127.0.0.1:{cg_port}/app/page",
            script,
            [cookie_of(s) for s in floor],
            window_s=args.duration,
            fresh_url=f"http://127.0.0.1:{up_port}/app/page",
        )
        log(f"storm floor done: {results['storm_floor']}")
    if "spray" not in skip:
        # docs/security.md "Abuse limits": 1,000 unproven sessions per second from one address. The
        # budgets allow 5 IdP calls per address per minute and 1 per second in all.
        calls_before = ask(cmd="calls")["calls"]
        script = rotating_cookies_script(wd, "/app/page", [cookie_of(s) for s in fresh[1:]])
        spray_result = measure_spray(
            f"http://127.0.0.1:{cg_port}/app/page", pool["client_id"], script, 1000, args.duration
        )
        spray_result["idp_calls"] = ask(cmd="calls")["calls"] - calls_before
        results["spray"] = spray_result
        log(f"spray done: {spray_result}")
    results["cookieguard_rss_mb_after_matrix"] = rss_mb(cg.pid)[0]
    if "storm-defaults" not in skip:
        # A cookieguard of its own, with the default limits; the one above stays idle.
        results["storm_defaults"] = storm_at_defaults(
            bench,
            ask,
            pool,
            up_port,
            ngx_port,
            [cookie_of(s) for s in fresh[1:]],
            cookie_of,
            args.duration,
            args.storm_refresh_wait,
        )
        log(f"storm at the default limits done: {results['storm_defaults']}")
    cg.stop()
    ngx.stop()

    if "forward-auth" not in skip:
        results["forward_auth"] = forward_auth_mix(bench, nginx, args, pool, session_cookie, up_port, log)

    if "rss" not in skip:
        rss_port = free_port()
        rss_pool = {**pool, "user_pool_id": "us-east-1_BenchRss1"}
        conf = cookieguard_conf(wd, "cookieguard-rss", rss_port, up_port, rss_pool, verify=False)
        cg_rss = bench.start("cookieguard-rss", [PY, "-m", "cookieguard", "run", "--config", str(conf)])
        wait_http(f"http://127.0.0.1:{rss_port}/", cg_rss)
        rss_start = rss_mb(cg_rss.pid)[0]
        now = int(time.time())
        client_id = pool["client_id"]
        shared_id = unsigned_token({"token_use": "id", "aud": client_id, "exp": now + 3600})

        def session_header(i: int) -> str:
            user = f"user{i}@example.com"
            access = unsigned_token(cognito_access_claims("us-east-1_BenchRss1", client_id, user, now))
            return amplify_header(client_id, user, access, shared_id, str(uuid.uuid4()))

        cpu_before = cpu_s(cg_rss.pid)
        bad, took_s = asyncio.run(
            many_sessions(f"http://127.0.0.1:{rss_port}/app/page", args.sessions, session_header)
        )
        cpu_new_session_us = (cpu_s(cg_rss.pid) - cpu_before) * 1e6 / args.sessions
        log(f"rss: {args.sessions:,} sessions sent in {took_s:.1f}s ({bad} not 200)")

        async def hold() -> tuple[float, float]:
            writers = await open_keepalive(rss_port, args.keepalive)
            await asyncio.sleep(0.5)
            figures = rss_mb(cg_rss.pid)
            for w in writers:
                w.close()
            return figures

        rss_now, rss_peak = asyncio.run(hold())
        results["rss"] = {
            "sessions": args.sessions,
            "keepalive": args.keepalive,
            "not_200": bad,
            "rss_start_mb": rss_start,
            "rss_mb": rss_now,
            "rss_peak_mb": rss_peak,
            "rps_new_sessions": args.sessions / took_s,
            "cpu_us_new_session": cpu_new_session_us,
        }
        log(f"rss: {results['rss']}")
        cg_rss.stop()
    idp_proc.stop()
    results["took_s"] = time.monotonic() - started
    return results


FORWARD_AUTH_NGINX = """
  upstream app {{ server 127.0.0.1:{upstream}; keepalive 64; keepalive_requests 10000000; }}
  upstream guard {{ server 127.0.0.1:{guard}; keepalive 64; keepalive_requests 10000000; }}
  map $cg_cookie $cg_upstream_cookie {{ "" $http_cookie; default $cg_cookie; }}
  server {{
    listen 127.0.0.1:{port} backlog=4096;
    location = /_cookieguard {{
      internal;
      proxy_pass http://guard/.cookieguard/forward-auth;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_pass_request_body off;
      proxy_set_header Content-Length "";
      proxy_set_header X-Original-URI $request_uri;
      proxy_set_header X-Original-Method $request_method;
      proxy_buffer_size 64k;
      proxy_buffers 4 64k;
    }}
    location / {{
      auth_request /_cookieguard;
      auth_request_set $cg_cookie $upstream_http_cookie;
      auth_request_set $cg_set_cookie_0 $upstream_http_x_cookieguard_set_cookie_0;
      proxy_pass http://app;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_set_header Cookie $cg_upstream_cookie;
      add_header Set-Cookie $cg_set_cookie_0 always;
    }}
  }}
"""


def forward_auth_mix(
    bench: Bench,
    nginx: str,
    args: argparse.Namespace,
    pool: dict[str, str],
    session_cookie: str,
    up_port: int,
    log: Callable[[str], None],
) -> dict[str, Any]:
    """Forward-auth (docs/forward-auth/): what cookieguard's CPU costs per request when it answers
    an ingress instead of proxying. One cookieguard with `forward_auth` on, session cookies (the
    `session` mix's), measured interleaved:

    - `proxied`: the request through cookieguard to the upstream (session work + forwarding);
    - `answer`: `<admin_prefix>/forward-auth` asked directly, as nginx's auth subrequest asks it;
    - `proxied-static`, `answer-static`: the same on a `refresh: false` route (no session work),
      so `proxied - proxied-static` is a proxied request's session work and `answer -
      answer-static` the forward-auth answer's;
    - `nginx+answer`: through nginx's `auth_request` (nginx.md's configuration) to the upstream:
      cookieguard's CPU per request the browser made, and the req/s of the whole path.
    """
    wd = bench.workdir
    port, ngx_port = free_port(), free_port()
    conf = cookieguard_conf(wd, "cookieguard-fa", port, up_port, pool, args.idp_timeout)
    with conf.open("a") as f:
        f.write("forward_auth:\n  enabled: true\n  ingress: nginx\n")
    guard = bench.start("cookieguard-fa", [PY, "-m", "cookieguard", "run", "--config", str(conf)])
    wait_http(f"http://127.0.0.1:{port}/", guard)
    ngx_conf = nginx_conf(wd, "fa", FORWARD_AUTH_NGINX.format(port=ngx_port, upstream=up_port, guard=port))
    ngx = bench.start("nginx-fa", [nginx, "-p", str(wd), "-c", str(ngx_conf)])
    wait_http(f"http://127.0.0.1:{ngx_port}/", ngx)
    scripts = {}
    for name, path in (("page", "/app/page"), ("static", "/static/app.js")):
        scripts[name] = wd / f"forward-auth-{name}.lua"
        scripts[name].write_text(
            f'wrk.headers["X-Original-URI"] = "{path}"\nwrk.headers["X-Original-Method"] = "GET"\n'
        )
    answer = f"http://127.0.0.1:{port}/.cookieguard/forward-auth"
    mixes: dict[str, tuple[str, Path | None]] = {
        "proxied": (f"http://127.0.0.1:{port}/app/page", None),
        "proxied-static": (f"http://127.0.0.1:{port}/static/app.js", None),
        "answer": (answer, scripts["page"]),
        "answer-static": (answer, scripts["static"]),
        "nginx+answer": (f"http://127.0.0.1:{ngx_port}/app/page", None),
    }
    for url, lua in mixes.values():  # warm-up: connections, the JWKS fetch, the token caches
        wrk(url, args.connections, 1, session_cookie, None, lua)
    runs: dict[str, list[Run]] = {}
    for rnd in range(args.rounds):
        for mix, (url, lua) in mixes.items():
            runs.setdefault(mix, []).append(
                wrk(url, args.connections, args.duration, session_cookie, guard.pid, lua)
            )
        log(f"forward-auth round {rnd + 1}/{args.rounds} done")
    ngx.stop()
    guard.stop()
    return {
        mix: {
            "rps": med([r.rps for r in rs]),
            "cpu_us": med([r.cpu_us for r in rs]),
            "p50_ms": med([r.p50_ms for r in rs]),
            "p99_ms": med([r.p99_ms for r in rs]),
            "errors": sum(r.errors for r in rs),
            "cpu_us_rounds": [round(r.cpu_us or 0) for r in rs],
        }
        for mix, rs in runs.items()
    }


def machine() -> dict[str, str]:
    return {
        "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
        "nproc": str(os.cpu_count()),
        "uname": " ".join(platform.uname()),
        "python": platform.python_version(),
        "uvloop": _version("uvloop"),
        "aiohttp": _version("aiohttp"),
        "nginx": subprocess.run(
            [shutil.which("nginx") or "/usr/sbin/nginx", "-v"], capture_output=True, text=True
        ).stderr.strip(),
    }


def _version(module: str) -> str:
    try:
        return str(__import__(module).__version__)
    except ImportError:
        return "not installed"


def _f(value: float | None, digits: int = 0) -> str:
    return "-" if value is None else f"{value:,.{digits}f}"


def ratio(a: float | None, b: float | None) -> float | None:
    return a / b if a is not None and b else None


def print_report(res: dict[str, Any]) -> None:
    m = res["machine"]
    print()
    print(f"cookieguard bench  {m['date']}  nproc={m['nproc']}  python {m['python']}  uvloop {m['uvloop']}")
    print(f"  {m['uname']}")
    print(
        f"  upstream={res['args']['upstream']}  wrk -t1 -c{res['args']['connections']} "
        f"-d{res['args']['duration']:g}s x {res['args']['rounds']} rounds (medians); "
        f"session cookie {res.get('session_cookie_bytes')} bytes"
    )
    tp = res.get("throughput", {})
    if tp:
        print()
        print(
            f"{'mix':<8} {'contender':<13} {'req/s':>8} {'x nginx':>8} {'cpu µs/req':>11} {'p50 ms':>7} "
            f"{'p99 ms':>7} {'errors':>6}"
        )
        for mix, by_name in tp.items():
            ngx = by_name.get("nginx", {}).get("rps")
            for name, r in by_name.items():
                print(
                    f"{mix:<8} {name:<13} {_f(r['rps']):>8} {_f(ratio(r['rps'], ngx), 2):>8} "
                    f"{_f(r['cpu_us']):>11} {_f(r['p50_ms'], 2):>7} {_f(r['p99_ms'], 2):>7} {r['errors']:>6}"
                )
    lat = res.get("latency", {})
    if lat:
        print()
        print("latency (1 connection, session cookies)   p50 ms  p99 ms  p50 added  p99 added (over direct)")
        d = lat.get("direct", {})
        for name, r in lat.items():
            added50 = r["p50_ms"] - d["p50_ms"] if d else None
            added99 = r["p99_ms"] - d["p99_ms"] if d else None
            print(
                f"  {name:<39} {_f(r['p50_ms'], 3):>7} {_f(r['p99_ms'], 3):>7} {_f(added50, 3):>10} "
                f"{_f(added99, 3):>10}"
            )
    for name, frames in (res.get("profile") or {}).items():
        print()
        print(f"profile {name} (py-spy, session mix, self time): bench/out/profile-{name}.txt")
        for frame, share in frames or ():
            print(f"  {share:5.1f}%  {frame}")
    if "spray" in res:
        sp = res["spray"]
        print(
            f"spray: {sp['spray_sent']} unproven sessions at {sp['spray_per_second']}/s -> "
            f"{sp['idp_calls']} IdP calls, {sp['spray_5xx']} 5xx; fresh p50/p99 "
            f"{_f(sp['fresh_p50_base_ms'], 2)}/{_f(sp['fresh_p99_base_ms'], 2)} ms without, "
            f"{_f(sp['fresh_p50_spray_ms'], 2)}/{_f(sp['fresh_p99_spray_ms'], 2)} ms during"
        )
    if "storm" in res:
        s = res["storm"]
        print()
        print(
            f"refresh storm: 1,000 expired sessions at once -> IdP calls {s['idp_calls']}, "
            f"failed {s['failed']}, "
            f"{s['storm_s']:.1f}s; fresh sessions p99 {s['fresh_p99_storm_ms']:.1f} ms during vs "
            f"{s['fresh_p99_base_ms']:.1f} ms without "
            f"({s['fresh_p99_storm_ms'] / s['fresh_p99_base_ms']:.1f}x; "
            f"p50 {s['fresh_p50_storm_ms']:.1f} vs {s['fresh_p50_base_ms']:.1f} ms)"
        )
        if "storm_floor" in res:
            f = res["storm_floor"]
            print(
                f"  the box itself: fresh sessions sent to the upstream directly during the same storm: "
                f"p99 {f['fresh_p99_storm_ms']:.2f} ms vs {f['fresh_p99_base_ms']:.2f} ms without "
                f"({f['fresh_p99_storm_ms'] / f['fresh_p99_base_ms']:.1f}x)"
            )
    if "storm_defaults" in res:
        d = res["storm_defaults"]
        print()
        print(
            f"storm at the default limits (refresh_wait {d.get('refresh_wait', '10s')}): "
            f"{d['sessions']:,} expired sessions within 2 s -> "
            f"{d['idp_calls']} IdP calls (at most {max(d['idp_calls_per_second'], default=0)} in one "
            f"second at the IdP), {d['not_refreshed']} forwarded without fresh tokens "
            f"{d['limited'] or ''}, took {d['storm_s']:.1f}s"
        )
        print(
            f"  refresh wait for the ceiling p50 {d['refresh_wait_p50_s']:.2f} s / p99 "
            f"{d['refresh_wait_p99_s']:.2f} s (cookieguard's histogram, interpolated in its buckets)"
        )
        print(
            f"  refreshed requests answered in p50 {d['refreshed_answer_p50_s']:.2f} s / p99 "
            f"{d['refreshed_answer_p99_s']:.2f} s (at the client: connecting, the wait, one IdP call); mean "
            f"wait {d['refresh_wait_mean_s']:.2f} s, mean IdP call {d['idp_call_mean_s']:.2f} s"
        )
        print(
            f"  fresh sessions p99 through cookieguard {d['fresh_cg_p99_base_ms']:.1f} -> "
            f"{d['fresh_cg_p99_storm_ms']:.1f} ms; through nginx in the same storm "
            f"{d['fresh_ngx_p99_base_ms']:.2f} -> {d['fresh_ngx_p99_storm_ms']:.2f} ms"
        )
    if "forward_auth" in res:
        fa = res["forward_auth"]
        print()
        print("forward-auth, session cookies (cookieguard's CPU)   req/s  cpu µs/req  p50 ms  errors")
        for mix, r in res["forward_auth"].items():
            cpu, p50 = _f(r["cpu_us"]), _f(r["p50_ms"], 2)
            print(f"  {mix:<48} {_f(r['rps']):>6} {cpu:>11} {p50:>7} {r['errors']:>7}")
        cpu_of = {mix: r["cpu_us"] or 0.0 for mix, r in fa.items()}
        if {"proxied", "proxied-static", "answer", "answer-static"} <= set(cpu_of):
            print(
                f"  session work, µs/req: proxied {cpu_of['proxied'] - cpu_of['proxied-static']:.0f}, "
                f"forward-auth answer {cpu_of['answer'] - cpu_of['answer-static']:.0f}; "
                f"answer/proxied CPU {_f(ratio(cpu_of['answer'], cpu_of['proxied']), 2)}"
            )
    if "rss" in res:
        r = res["rss"]
        print(
            f"rss: {r['rss_mb']:.1f} MB with {r['keepalive']:,} keep-alive connections "
            f"after {r['sessions']:,} "
            f"sessions (start {r['rss_start_mb']:.1f} MB, peak {r['rss_peak_mb']:.1f} MB); new sessions "
            f"{r['rps_new_sessions']:,.0f} req/s, {r['cpu_us_new_session']:.0f} µs CPU each, "
            f"{r['not_200']} not 200"
        )
    if "ab" in res:
        print_ab(res["ab"])
    print(f"took {res.get('took_s', 0):.0f}s")
    session = tp.get("session", {})
    cg, ngx, bare = session.get("cookieguard", {}), session.get("nginx", {}), session.get("bare", {})
    rps_ratio = ratio(cg.get("rps"), ngx.get("rps"))
    cpu_ratio = ratio(cg.get("cpu_us"), bare.get("cpu_us"))
    p50 = p99 = None
    if "cookieguard" in lat and "nginx" in lat:
        p50 = lat["cookieguard"]["p50_ms"] - lat["nginx"]["p50_ms"]
        p99 = lat["cookieguard"]["p99_ms"] - lat["nginx"]["p99_ms"]
    print(
        f"bench: session rps_ratio={_f(rps_ratio, 3)} cpu_ratio={_f(cpu_ratio, 3)} "
        f"p50_added_ms={_f(p50, 3)} p99_added_ms={_f(p99, 3)}"
    )


if __name__ == "__main__":
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    sys.exit(main())
