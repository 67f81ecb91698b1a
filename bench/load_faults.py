"""Load with faults: `cookieguard run` under 1,000 keep-alive connections while sessions expire and
the IdP fails 10 % of refresh calls. Nobody may be lost and nobody may be signed out.

    make load                                   # 1,000 connections, 60 s (about 2 minutes in all)
    .venv/bin/python bench/load_faults.py --connections 200 --duration 20   # a quicker run

Everything runs on 127.0.0.1 and ephemeral ports, and is stopped by PID at the end:

- the IdP: moto's Cognito server (cookieguard.ops.demo.emulator) in a subprocess of its own (this file
  with `--serve-idp`; in the load generator's process the GIL starves it), a pool whose client
  rotates refresh tokens (retry grace 60 s), one user per connection. Sign-in tokens are minted
  with lifetimes chosen so that the sessions fall due (at half their lifetime, the before_expiry
  cap) spread evenly over the run, from 5 s after it starts to 10 s before it ends; refreshed
  tokens live `--token-lifetime` s (120: each session is refreshed about once; lower it for more
  refreshes per session, as long as the emulator keeps up, see bench/README.md).
  `fail_ratio` answers that share of refresh calls with a 500 (seeded RNG).
- the upstream: a small aiohttp app in a subprocess (this file with `--serve-upstream`): 200 for
  pages, a 302 to /dashboard for paths under /r/ (the redirect that drops cookies in the bug).
- cookieguard: `python -m cookieguard run` in a subprocess, memory store, `refresh.backoff` 5 s.
- the load: one asyncio task per connection, each a browser with its own cookie jar (Set-Cookie
  in, Cookie out), through one aiohttp session limited to `--connections` keep-alive connections,
  requests back to back until the deadline (and at most `--max-requests-per-connection`).

It prints requests sent and answered, statuses, lost requests (no answer, or a 5xx), users signed
out (a Set-Cookie expiring an auth cookie, a 401, a 302 to the login page), IdP calls and
injected failures, cookieguard's refresh outcomes (from its metrics) and its RSS (from /proc)
during and at the end of the run. Exit status 1 if anything was lost or anybody signed out.
"""

from __future__ import annotations

import argparse
import asyncio
import concurrent.futures
import json
import os
import re
import resource
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import yaml
from aiohttp import web

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from cookieguard.cookies import encode_uri_component  # noqa: E402
from cookieguard.ops.demo.emulator import CognitoEmulator, PoolInfo  # noqa: E402
from cookieguard.session.layouts import AmplifyLayout  # noqa: E402

PASSWORD = "Correct-Horse-9"
LOGIN_URL = "/login"
START_TIMEOUT_S = 30.0
STOP_TIMEOUT_S = 20.0


# -- the upstream (run in its own process) -----------------------------------------------------


def serve_upstream() -> None:
    async def page(request: web.Request) -> web.Response:
        if request.path.startswith("/r/"):
            return web.Response(status=302, headers={"Location": "/dashboard"})
        return web.Response(text="<h1>ok</h1>", content_type="text/html")

    async def main() -> None:
        app = web.Application()
        app.router.add_get("/{tail:.*}", page)
        runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0, backlog=2048)
        await site.start()
        port = runner.addresses[0][1]
        print(json.dumps({"port": port}), flush=True)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        loop.add_signal_handler(signal.SIGTERM, stop.set)
        await stop.wait()
        await runner.cleanup()

    asyncio.run(main())


# -- the processes -----------------------------------------------------------------------------


class Child:
    """A subprocess whose stdout is read line by line in a thread (so its pipe never fills)."""

    def __init__(self, args: list[str], on_line: Any = None) -> None:
        self.proc = subprocess.Popen(
            args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, errors="replace", cwd=ROOT
        )
        self.first_json: dict[str, Any] | None = None
        self.last_json: dict[str, Any] | None = None
        self._ready = threading.Event()
        self._on_line = on_line
        self.tail: list[str] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.tail = [*self.tail, line.rstrip()][-20:]
            try:
                event = json.loads(line)
            except ValueError:
                continue
            if not isinstance(event, dict):
                continue
            self.last_json = event
            if self._on_line is not None:
                self._on_line(event)
            if self.first_json is None and ("port" in event or event.get("event") == "listening"):
                self.first_json = event
                self._ready.set()

    def wait_ready(self, timeout_s: float = START_TIMEOUT_S) -> dict[str, Any]:
        if not self._ready.wait(timeout_s) or self.first_json is None:
            self.stop()
            raise SystemExit("a child process did not start:\n" + "\n".join(self.tail))
        return self.first_json

    def stop(self) -> int | None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._reader.join(timeout=5)  # its last lines (the IdP's counts) are read by then
        return self.proc.returncode


def rss_mib(pid: int) -> tuple[float, float]:
    """(VmRSS, VmHWM) of a process, in MiB, from /proc."""
    values = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, rest = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            values[key] = int(rest.split()[0]) / 1024
    return values.get("VmRSS", 0.0), values.get("VmHWM", 0.0)


# -- the users ---------------------------------------------------------------------------------


@dataclass
class User:
    username: str
    jar: dict[str, str] = field(default_factory=dict)

    def cookie_header(self) -> str:
        return "; ".join(f"{k}={v}" for k, v in self.jar.items())


def sign_in_users(
    emulator: CognitoEmulator, pool: PoolInfo, count: int, duration_s: float
) -> list[dict[str, str]]:
    """Sign `count` users in, in batches whose access tokens fall due spread over the run.

    The run starts when the last batch is signed in, so each batch's lifetime is twice the time
    left until then (estimated from the batches so far) plus its place in the run.
    """
    signed_in: list[dict[str, str]] = []
    batches = 10
    per_batch = -(-count // batches)
    started = time.monotonic()
    batch_s = per_batch * 0.03  # a first guess; measured after the first batch

    def sign_in(n: int) -> dict[str, str]:
        username = f"load-{n:05d}@example.com"
        emulator.create_user(pool, username, PASSWORD, email=username)
        result = emulator.sign_in(pool, username, PASSWORD)
        return {
            "username": username,
            "accessToken": result["AccessToken"],
            "idToken": result["IdToken"],
            "refreshToken": result["RefreshToken"],
        }

    with concurrent.futures.ThreadPoolExecutor(8) as pool_exec:
        for batch in range(batches):
            if batch:
                batch_s = (time.monotonic() - started) / batch
            until_run_s = (batches - batch) * batch_s + 3.0  # + starting cookieguard
            due_in_run_s = 5.0 + batch * (duration_s - 15.0) / (batches - 1)
            emulator.access_token_lifetime_s = round(2 * (until_run_s + due_in_run_s))
            numbers = range(batch * per_batch, min(count, (batch + 1) * per_batch))
            signed_in += list(pool_exec.map(sign_in, numbers))
    return signed_in


def browser(client_id: str, signed_in: dict[str, str]) -> User:
    """The cookies Amplify writes after sign-in."""
    layout = AmplifyLayout(client_id)
    user = User(signed_in["username"])
    user.jar["_ga"] = "GA1.1.123456789.1700000000"
    user.jar[layout.last_auth_user_name] = encode_uri_component(user.username)
    for key in ("accessToken", "idToken", "refreshToken"):
        user.jar[layout.cookie_name(user.username, key)] = encode_uri_component(signed_in[key])
    user.jar[layout.cookie_name(user.username, "clockDrift")] = "0"
    return user


def serve_idp(args: argparse.Namespace) -> None:
    """The IdP process: sign the users in, write them to `--users-file`, print the pool as JSON,
    inject failures until SIGTERM, then print the IdP's counts as JSON."""
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    with CognitoEmulator(rotate_refresh_tokens=True, retry_grace_period_s=60) as emulator:
        pool = emulator.create_pool()
        users = sign_in_users(emulator, pool, args.connections, args.duration)
        Path(args.users_file).write_text(json.dumps(users))
        emulator.fail_seed = args.seed
        emulator.reset()  # counters from zero (sign-ins are not refresh calls), RNG seeded
        emulator.access_token_lifetime_s = args.token_lifetime
        emulator.fail_ratio = args.fail_ratio
        emulator.fail_with = 500
        print(
            json.dumps(
                {
                    "port": emulator.port,
                    "user_pool_id": pool.user_pool_id,
                    "client_id": pool.client_id,
                    "endpoint": pool.endpoint,
                }
            ),
            flush=True,
        )
        stop.wait(args.duration + 3600)  # bounded: the parent stops it long before
        counts = {"refresh_calls": emulator.refresh_calls, "injected_failures": emulator.injected_failures}
        print(json.dumps(counts), flush=True)


# -- the load ----------------------------------------------------------------------------------


@dataclass
class Tally:
    sent: int = 0
    answered: int = 0
    statuses: Counter[int] = field(default_factory=Counter)
    lost: int = 0  # no answer (exception) or a 5xx
    errors: Counter[str] = field(default_factory=Counter)
    signed_out: set[str] = field(default_factory=set)
    sign_out_answers: int = 0
    refreshed_answers: int = 0


_MAX_AGE_0 = re.compile(r";\s*max-age\s*=\s*0\b", re.IGNORECASE)


def apply_answer(user: User, layout: AmplifyLayout, status: int, headers: Any, tally: Tally) -> None:
    auth = {layout.cookie_name(user.username, k) for k in ("accessToken", "idToken", "refreshToken")}
    set_cookies = headers.getall("Set-Cookie", [])
    signed_out = status == 401 or (status in (302, 303, 307) and headers.get("Location", "") == LOGIN_URL)
    for line in set_cookies:
        name, _, value = line.split(";", 1)[0].partition("=")
        name = name.strip()
        if name in auth and (_MAX_AGE_0.search(line) or not value.strip()):
            signed_out = True
        elif _MAX_AGE_0.search(line):
            user.jar.pop(name, None)
        else:
            user.jar[name] = value.strip()
    if any(line.startswith(layout.cookie_name(user.username, "accessToken") + "=") for line in set_cookies):
        tally.refreshed_answers += 1
    if signed_out:
        tally.sign_out_answers += 1
        tally.signed_out.add(user.username)


async def browse(
    session: aiohttp.ClientSession,
    url: str,
    user: User,
    layout: AmplifyLayout,
    deadline: float,
    max_requests: int,
    tally: Tally,
) -> None:
    for n in range(max_requests):
        if time.monotonic() >= deadline:
            return
        path = f"/r/{n}" if n % 3 == 2 else f"/page/{n}"
        tally.sent += 1
        try:
            async with session.get(
                url + path, headers={"Cookie": user.cookie_header()}, allow_redirects=False
            ) as resp:
                await resp.read()
                tally.answered += 1
                tally.statuses[resp.status] += 1
                if resp.status >= 500:
                    tally.lost += 1
                apply_answer(user, layout, resp.status, resp.headers, tally)
        except (aiohttp.ClientError, TimeoutError) as exc:
            tally.lost += 1
            tally.errors[type(exc).__name__] += 1


async def run_load(
    url: str, users: list[User], layout: AmplifyLayout, args: argparse.Namespace, pid: int
) -> tuple[Tally, list[tuple[int, float]], float]:
    tally = Tally()
    rss_series: list[tuple[int, float]] = []
    connector = aiohttp.TCPConnector(limit=args.connections, limit_per_host=args.connections)
    timeout = aiohttp.ClientTimeout(total=args.request_timeout)
    started = time.monotonic()
    deadline = started + args.duration
    async with aiohttp.ClientSession(
        connector=connector, timeout=timeout, cookie_jar=aiohttp.DummyCookieJar()
    ) as session:
        workers = [
            asyncio.ensure_future(
                browse(
                    session,
                    url,
                    users[i % len(users)],
                    layout,
                    deadline,
                    args.max_requests_per_connection,
                    tally,
                )
            )
            for i in range(args.connections)
        ]
        while not all(w.done() for w in workers) and time.monotonic() < deadline + args.request_timeout + 5:
            await asyncio.wait(workers, timeout=5.0)
            rss_series.append((round(time.monotonic() - started), rss_mib(pid)[0]))
        for worker in workers:
            worker.cancel()  # only those still stuck past the bound; counted as unanswered below
        await asyncio.gather(*workers, return_exceptions=True)
    return tally, rss_series, time.monotonic() - started


async def scrape_metrics(url: str) -> dict[str, float]:
    async with aiohttp.ClientSession() as s, s.get(url + "/.cookieguard/metrics") as resp:
        text = await resp.text()
    out = {}
    for match in re.finditer(r'^cookieguard_refresh_total\{outcome="(\w+)"\} (\S+)$', text, re.MULTILINE):
        out[match.group(1)] = float(match.group(2))
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--connections", type=int, default=1000)
    parser.add_argument("--duration", type=float, default=60.0, help="seconds of load")
    parser.add_argument("--fail-ratio", type=float, default=0.10, help="share of IdP refresh calls that fail")
    parser.add_argument("--token-lifetime", type=int, default=120, help="lifetime of refreshed tokens (s)")
    parser.add_argument("--request-timeout", type=float, default=30.0)
    parser.add_argument("--max-requests-per-connection", type=int, default=100_000)
    parser.add_argument("--seed", type=int, default=8)
    parser.add_argument("--serve-upstream", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--serve-idp", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--users-file", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve_upstream:
        serve_upstream()
        return 0
    if args.serve_idp:
        serve_idp(args)
        return 0

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    needed = 4 * args.connections + 1024  # children inherit it: cookieguard holds 2 per connection
    if soft < needed:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(needed, hard), hard))

    idp: Child | None = None
    upstream: Child | None = None
    guard: Child | None = None
    tmp = tempfile.TemporaryDirectory(prefix="cookieguard-load-")
    events: Counter[str] = Counter()
    try:
        t0 = time.monotonic()
        users_file = Path(tmp.name) / "users.json"
        idp_args = [sys.executable, __file__, "--serve-idp", "--users-file", str(users_file)]
        for option in ("connections", "duration", "fail_ratio", "token_lifetime", "seed"):
            idp_args += ["--" + option.replace("_", "-"), str(getattr(args, option))]
        idp = Child(idp_args)
        ready = idp.wait_ready(timeout_s=START_TIMEOUT_S + args.connections * 0.1)
        pool = PoolInfo(
            user_pool_id=ready["user_pool_id"],
            client_id=ready["client_id"],
            client_secret=None,
            region=ready["user_pool_id"].split("_", 1)[0],
            endpoint=ready["endpoint"],
            rotate_refresh_tokens=True,
        )
        users = [browser(pool.client_id, u) for u in json.loads(users_file.read_text())]
        print(f"signed in {len(users)} users in {time.monotonic() - t0:.1f} s", flush=True)

        upstream = Child([sys.executable, __file__, "--serve-upstream"])
        upstream_port = upstream.wait_ready()["port"]
        config = {
            "listen": "127.0.0.1:0",
            "admin_listen": "127.0.0.1:0",  # metrics are scraped there
            "upstream": f"http://127.0.0.1:{upstream_port}",
            "provider": pool.provider_yaml(),
            "refresh": {"before_expiry": "5m", "backoff": "5s", "login_url": LOGIN_URL},
            "routes": [{"match": "/"}],
            "logging": {"level": "info"},
        }
        config_path = Path(tmp.name) / "cookieguard.yaml"
        config_path.write_text(yaml.safe_dump(config, sort_keys=False))

        def on_event(event: dict[str, Any]) -> None:
            name = event.get("event")
            if name == "token_refresh":
                events[f"token_refresh:{event.get('outcome')}:{event.get('error') or ''}"] += 1
            elif isinstance(name, str):
                events[name] += 1

        guard = Child([sys.executable, "-m", "cookieguard", "run", "--config", str(config_path)], on_event)
        listening = guard.wait_ready()
        url = "http://" + listening["listen"][0]
        pid = guard.proc.pid
        rss_start = rss_mib(pid)[0]
        print(
            f"load: {args.connections} keep-alive connections for {args.duration:.0f} s against {url} "
            f"(cookieguard pid {pid}), IdP failing {args.fail_ratio:.0%} of refresh calls",
            flush=True,
        )
        layout = AmplifyLayout(pool.client_id)
        tally, rss_series, elapsed = asyncio.run(run_load(url, users, layout, args, pid))
        rss_end, rss_peak = rss_mib(pid)
        outcomes = asyncio.run(scrape_metrics("http://" + listening["admin_listen"][0]))
        code = guard.stop()
        guard = None
        idp.stop()
        counts = idp.last_json or {}
        idp_calls, idp_failures = counts.get("refresh_calls", -1), counts.get("injected_failures", -1)
    finally:
        for child in (guard, upstream, idp):
            if child is not None:
                child.stop()
        tmp.cleanup()

    unanswered = tally.sent - tally.answered
    print()
    print(f"requests sent            {tally.sent}  ({tally.sent / elapsed:.0f}/s over {elapsed:.1f} s)")
    print(f"requests answered        {tally.answered}")
    print(f"statuses                 {dict(sorted(tally.statuses.items()))}")
    print(f"lost (no answer or 5xx)  {tally.lost}  {dict(tally.errors) or ''}")
    print(f"users signed out         {len(tally.signed_out)}  ({tally.sign_out_answers} answers)")
    print(f"answers with new tokens  {tally.refreshed_answers}")
    print(
        f"IdP refresh calls        {idp_calls}, failed by injection {idp_failures}"
        f" ({idp_failures / max(idp_calls, 1):.1%})"
    )
    print(f"cookieguard refreshes    {json.dumps({k: int(v) for k, v in sorted(outcomes.items())})}")
    print(f"log events               {json.dumps(dict(sorted(events.items())))}")
    print(
        f"cookieguard RSS          start {rss_start:.1f} MiB, end {rss_end:.1f} MiB, peak {rss_peak:.1f} MiB"
    )
    print(f"RSS every 5 s (MiB)      {[round(r) for _, r in rss_series]}")
    print(f"cookieguard exit status  {code} (SIGTERM after the run)")
    load_average = Path("/proc/loadavg").read_text().split()[0]
    print(f"machine                  {os.cpu_count()} CPUs, 1-min load average {load_average} at the end")
    ok = tally.lost == 0 and unanswered == 0 and not tally.signed_out and code == 0
    print("verdict                  " + ("OK: nothing lost, nobody signed out" if ok else "FAILED"))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
