"""The client-facing edge, end to end against `cookieguard run`: slow and idle clients, the
connection cap, error answers that never quote the request, the forwarding headers, absolute-form
targets and path normalisation, and the admin listener."""

from __future__ import annotations

import asyncio
import json
import re
import socket
import statistics
import time
from collections.abc import Callable
from typing import Any

import aiohttp
from aiohttp import web
from yarl import URL

from tests.support.no_secrets import KnownSecrets
from tests.support.proxy_process import CookieguardProcess
from tests.test_proxy import base_config, header, start_upstream

Start = Callable[..., CookieguardProcess]
UPLOADS = 200


async def read_response(
    reader: asyncio.StreamReader, timeout_s: float = 5.0
) -> tuple[int, dict[str, str], bytes]:
    """One HTTP/1.1 answer with a Content-Length body, read off a raw connection."""
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), timeout_s)
    lines = head.decode("latin-1").split("\r\n")
    headers = {}
    for line in lines[1:]:
        if ":" in line:
            name, value = line.split(":", 1)
            headers[name.strip().lower()] = value.strip()
    body = await asyncio.wait_for(reader.readexactly(int(headers.get("content-length", "0"))), timeout_s)
    return int(lines[0].split(" ", 2)[1]), headers, body


async def raw_exchange(port: int, request: bytes, timeout_s: float = 10.0) -> bytes:
    """Send `request`, return everything until cookieguard closes the connection."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(request)
        return await asyncio.wait_for(reader.read(), timeout_s)
    finally:
        writer.close()


def status_of(response: bytes) -> int:
    return int(response.split(b" ", 2)[1]) if response.startswith(b"HTTP/1.") else 0


# -- slow and idle clients ------------------------------------------------------------------------


async def clients_cut(proxy: CookieguardProcess, reason: str) -> float:
    """cookieguard_clients_cut_total{reason} as the proxy's metrics endpoint reports it (polled
    while the scrape itself is refused for lack of a free connection slot)."""
    deadline = time.monotonic() + 5
    async with aiohttp.ClientSession() as s:
        while True:
            async with s.get(f"{proxy.admin_url}/.cookieguard/metrics") as resp:
                text = await resp.text()
            if resp.status != 503 or time.monotonic() > deadline:
                break
            await asyncio.sleep(0.05)
    assert resp.status == 200, resp.status
    found = re.search(rf'^cookieguard_clients_cut_total{{reason="{reason}"}} (\S+)$', text, re.MULTILINE)
    assert found is not None, text
    return float(found.group(1))


RESET = b"<reset>"


async def test_trickled_heads_are_closed_by_the_header_deadline_while_normal_requests_are_served(
    aiohttp_server: Any, cookieguard_process: Start
) -> None:
    upstream = await start_upstream(aiohttp_server)
    proxy = cookieguard_process(base_config(str(upstream.make_url("")), timeouts={"client_header": "1s"}))
    port = proxy.port or 0
    head = b"GET /trickle HTTP/1.1\r\nHost: app.example\r\nX-Padding: " + b"p" * 200 + b"\r\n\r\n"

    async def trickle() -> tuple[float, bytes]:
        """One byte, then at most one more per second, until cookieguard closes the connection."""
        started = time.monotonic()
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        got = b""
        try:
            for byte in head:
                writer.write(bytes([byte]))
                try:
                    got = await asyncio.wait_for(reader.read(), 1.0)  # b"" or an answer: closed
                    break
                except ConnectionResetError:
                    # The 408 went out and the socket closed while this client was still writing:
                    # the kernel answered the next byte with a reset, which may discard the 408
                    # before it is read (TCP, not cookieguard; the metric below counts the cut).
                    got = RESET
                    break
                except TimeoutError:
                    if time.monotonic() - started > 5:
                        break  # not closed by the deadline: the assertion below says so
        finally:
            writer.close()
        return time.monotonic() - started, got

    tricklers = [asyncio.ensure_future(trickle()) for _ in range(200)]
    latencies = []
    async with aiohttp.ClientSession() as session:
        while not all(t.done() for t in tricklers):
            sent = time.monotonic()
            async with session.get(f"{proxy.url}/normal") as resp:
                assert resp.status == 200
                await resp.read()
            latencies.append(time.monotonic() - sent)
    results = await asyncio.gather(*tricklers)
    assert len(latencies) >= 5
    # No visible added latency: normal requests are not queued behind the trickling connections
    # (the median is that of an idle proxy on a busy 2-core box; one slow outlier is the box).
    assert statistics.median(latencies) < 0.25, sorted(latencies)
    assert max(latencies) < 2.0, sorted(latencies)[-5:]
    for elapsed, answer in results:
        assert elapsed < 4.0  # 1 s deadline, generous slack for a loaded machine
        assert answer is RESET or status_of(answer) == 408
        assert b"/trickle" not in answer and b"app.example" not in answer
    assert sum(answer is not RESET for _, answer in results) >= 100  # most read their 408
    assert await clients_cut(proxy, "header_timeout") == 200  # what an operator sees


async def test_slow_uploads_are_cut_by_the_body_deadline_and_release_the_upstream(
    aiohttp_server: Any, cookieguard_process: Start, known_secrets: KnownSecrets
) -> None:
    """Also: the `client_timeout` lines (body and head, logged at debug) never carry the cookies
    the cut requests sent (the autouse fixture scans all of cookieguard's output too)."""
    jwt_like = "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJzbG93In0.c2lnbmF0dXJlLXNsb3c"
    secret = "slow-upload-secret-7c41d2"
    known_secrets.add(jwt_like, secret)
    in_flight = 0
    reached = 0

    async def upload(request: web.Request) -> web.Response:
        nonlocal in_flight, reached
        in_flight += 1
        reached += 1
        try:
            await request.read()
        finally:
            in_flight -= 1
        return web.Response(text="stored")

    app = web.Application()
    app.router.add_post("/upload", upload)
    upstream = await aiohttp_server(app)
    proxy = cookieguard_process(
        {
            **base_config(
                str(upstream.make_url("")), timeouts={"client_body_idle": "1s", "client_header": "1s"}
            ),
            "logging": {"level": "debug", "access_log": True},
        }
    )

    async def slow_upload() -> tuple[float, bytes]:
        started = time.monotonic()
        reader, writer = await asyncio.open_connection("127.0.0.1", proxy.port)
        try:
            writer.write(
                b"POST /upload HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n"
                + f"Cookie: at={jwt_like}; rt={secret}\r\n\r\nfirst-byte".encode()
            )
            # The next byte would come in 2 s; cookieguard must not wait that long.
            answer = await asyncio.wait_for(reader.read(), 5.0)
        finally:
            writer.close()
        return time.monotonic() - started, answer

    results = await asyncio.gather(*(slow_upload() for _ in range(UPLOADS)))
    for elapsed, answer in results:
        assert status_of(answer) == 408, answer[:100]
        assert elapsed < 4.0
    # Bodies up to limits.request_buffer are read whole before the app is asked: these never
    # reached it, so none can be held there.
    assert reached == 0
    deadline = time.monotonic() + 5
    while in_flight and time.monotonic() < deadline:  # ...and none of them is held there
        await asyncio.sleep(0.05)
    assert in_flight == 0
    deadline = time.monotonic() + 5
    while True:  # cookieguard's log lines reach the test through a pipe: poll for all of them
        logged = [e for e in proxy.events("client_timeout") if e["phase"] == "body"]
        if len(logged) >= UPLOADS or time.monotonic() > deadline:
            break
        await asyncio.sleep(0.05)
    assert len(logged) == UPLOADS
    assert await clients_cut(proxy, "body_timeout") == UPLOADS
    # A head cut at its deadline after part of a Cookie header arrived: logged without it.
    reader, writer = await asyncio.open_connection("127.0.0.1", proxy.port)
    try:
        writer.write(f"GET /a HTTP/1.1\r\nHost: x\r\nCookie: rt={secret}".encode())
        assert status_of(await asyncio.wait_for(reader.read(), 5.0)) == 408
    finally:
        writer.close()
    await asyncio.to_thread(proxy.wait_for_event, "client_timeout", 5, lambda e: e.get("phase") == "header")
    logged_text = proxy.output()
    assert secret not in logged_text and jwt_like not in logged_text


async def test_an_idle_keepalive_connection_is_closed_after_timeouts_keepalive(
    aiohttp_server: Any, cookieguard_process: Start
) -> None:
    upstream = await start_upstream(aiohttp_server)
    proxy = cookieguard_process(base_config(str(upstream.make_url("")), timeouts={"keepalive": "1s"}))
    reader, writer = await asyncio.open_connection("127.0.0.1", proxy.port)
    try:
        writer.write(b"GET /a HTTP/1.1\r\nHost: x\r\n\r\n")
        status, _, _ = await read_response(reader)
        assert status == 200
        idle_since = time.monotonic()
        assert await asyncio.wait_for(reader.read(), 5.0) == b""  # closed, nothing more sent
        assert time.monotonic() - idle_since >= 0.8
    finally:
        writer.close()


async def test_max_connections_answers_503_beyond_the_cap_and_keeps_open_connections_working(
    aiohttp_server: Any, cookieguard_process: Start
) -> None:
    upstream = await start_upstream(aiohttp_server)
    proxy = cookieguard_process(base_config(str(upstream.make_url("")), limits={"max_connections": 3}))
    open_ = [await asyncio.open_connection("127.0.0.1", proxy.port) for _ in range(3)]
    try:
        for reader, writer in open_:
            writer.write(b"GET /first HTTP/1.1\r\nHost: x\r\n\r\n")
            assert (await read_response(reader))[0] == 200
        beyond = await raw_exchange(proxy.port or 0, b"GET /beyond HTTP/1.1\r\nHost: x\r\n\r\n", 5.0)
        assert status_of(beyond) == 503 and b"Connection: close" in beyond
        for reader, writer in open_:  # the open ones are unaffected
            writer.write(b"GET /again HTTP/1.1\r\nHost: x\r\n\r\n")
            assert (await read_response(reader))[0] == 200
        open_.pop()[1].close()
        deadline = time.monotonic() + 5
        while True:  # the freed slot is taken by the next connection (once the close is seen)
            answer = await raw_exchange(
                proxy.port or 0, b"GET /b HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
            )
            if status_of(answer) == 200 or time.monotonic() > deadline:
                break
        assert status_of(answer) == 200
        assert await clients_cut(proxy, "max_connections") >= 1
    finally:
        for _, writer in open_:
            writer.close()


# -- error answers ----------------------------------------------------------------------------


async def test_error_answers_never_echo_request_bytes_and_name_no_versions(
    aiohttp_server: Any, cookieguard_process: Start
) -> None:
    upstream = await start_upstream(aiohttp_server)
    proxy = cookieguard_process(base_config(str(upstream.make_url(""))))
    port = proxy.port or 0
    big_cookie = b"sid=MARKER-SECRET-" + b"s" * 70_000
    too_large = await raw_exchange(port, b"GET / HTTP/1.1\r\nHost: x\r\nCookie: " + big_cookie + b"\r\n\r\n")
    assert status_of(too_large) == 431
    assert b"MARKER" not in too_large and b"sid=" not in too_large
    malformed = await raw_exchange(port, b"GET / HTTP/1.1\r\nHost: x\r\nBad Header MARKER-2: sid=abc\r\n\r\n")
    assert status_of(malformed) == 400
    assert b"MARKER" not in malformed and b"sid=" not in malformed
    for answer in (too_large, malformed):
        assert b"\r\nServer: cookieguard\r\n" in answer
        assert b"aiohttp" not in answer and b"Python" not in answer


async def test_server_header_is_cookieguard_on_own_and_proxied_answers(
    aiohttp_server: Any, cookieguard_process: Start
) -> None:
    async def branded(request: web.Request) -> web.Response:
        return web.Response(text="ok", headers={"Server": "upstream-app/1.2.3"})

    app = web.Application()
    app.router.add_get("/branded", branded)
    upstream = await aiohttp_server(app)
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        closed = sock.getsockname()[1]  # nothing listens there once the block ends
    proxy = cookieguard_process(
        base_config(
            str(upstream.make_url("")),
            routes=[
                {"match": "/branded", "upstream": str(upstream.make_url(""))},
                {"match": "/down", "upstream": f"http://127.0.0.1:{closed}"},
            ],
        )
    )
    async with aiohttp.ClientSession() as s:
        for method, path, status in (
            ("GET", "/branded", 200),
            ("HEAD", "/branded", 200),
            ("GET", "/nowhere", 404),
            ("GET", "/down", 502),
            ("GET", "/.cookieguard/healthz", 200),
            ("GET", "/.cookieguard/metrics", 404),  # served on admin_listen only
            ("POST", "/.cookieguard/healthz", 405),
            ("GET", "/.cookieguard/nothing", 404),
        ):
            async with s.request(method, proxy.url + path) as resp:
                assert resp.status == status, (method, path)
                assert resp.headers.getall("Server") == ["cookieguard"], (method, path)
    bad_target = await raw_exchange(
        proxy.port or 0, b"OPTIONS * HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )
    assert status_of(bad_target) == 404  # aiohttp's router: no route takes a target without a path
    assert bad_target.count(b"\r\nServer: ") == 1 and b"\r\nServer: cookieguard\r\n" in bad_target


# Where each target goes (edge/listener.py front_door): proxied requests skip aiohttp's router,
# so every target the router reads as an endpoint (it matches the percent-decoded path) must
# still reach the endpoint, and everything else the upstream. The answers were recorded from
# main before the front door existed; they are the router's.
ROUTED_TARGETS = (
    ("/.cookieguard/healthz", "endpoint"),
    ("/%2Ecookieguard/healthz", "endpoint"),
    ("/%2ecookieguard/healthz", "endpoint"),
    ("/.cookieguard/%68ealthz", "endpoint"),
    ("/.cookieguard/healthz?a=%20", "endpoint"),
    ("/.cookieguard/healthz/", "no endpoint"),
    ("/.cookieguard//healthz", "no endpoint"),
    ("/.cookieguard/", "no endpoint"),
    ("/.Cookieguard/healthz", "upstream"),
    ("/.cookieguard", "upstream"),
    ("/x/../.cookieguard/healthz", "upstream"),
    ("//.cookieguard/healthz", "upstream"),
    ("/app?x=%2F", "upstream"),
    ("/app%2Fx", "upstream"),
    ("/a/./b", "upstream"),
    ("/.well-known/x", "upstream"),
    ("/app", "upstream"),
)


async def test_every_target_reaches_what_the_router_would_send_it_to(
    aiohttp_server: Any, cookieguard_process: Start
) -> None:
    upstream = await start_upstream(aiohttp_server)
    proxy = cookieguard_process(base_config(str(upstream.make_url(""))))
    went = []
    async with aiohttp.ClientSession() as s:
        for target, _ in ROUTED_TARGETS:
            async with s.get(URL(proxy.url + target, encoded=True)) as resp:
                body = await resp.text()
            assert resp.headers.getall("Server") == ["cookieguard"], target
            if resp.status == 200 and body == "ok\n":
                went.append((target, "endpoint"))
            elif resp.status == 404 and "no such endpoint" in body:
                went.append((target, "no endpoint"))
            else:
                assert resp.status == 200 and '"raw_path"' in body, (target, resp.status, body)
                went.append((target, "upstream"))
        # Expect: 100-continue is aiohttp's application's to answer: the body then follows.
        async with s.post(proxy.url + "/app", data=b"x" * 10, expect100=True) as resp:
            assert resp.status == 200 and (await resp.json())["body_len"] == 10
    assert went == list(ROUTED_TARGETS)


# -- forwarding headers -----------------------------------------------------------------------

CLIENT_CLAIMS = {
    "X-Forwarded-For": "198.51.100.9",
    "X-Forwarded-Proto": "https",
    "X-Forwarded-Host": "claimed.example",
    "Forwarded": "for=198.51.100.9;proto=https;host=claimed.example",
    "X-Real-IP": "198.51.100.9",
}


async def test_forwarding_headers_are_set_from_the_socket_for_an_untrusted_client(
    aiohttp_server: Any, cookieguard_process: Start
) -> None:
    upstream = await start_upstream(aiohttp_server)
    proxy = cookieguard_process(base_config(str(upstream.make_url(""))))
    async with (
        aiohttp.ClientSession() as s,
        s.get(
            f"{proxy.url}/h",
            headers={
                **CLIENT_CLAIMS,
                "Host": "app.example",
                "Cookie": "theme=dark",
                "Connection": "keep-alive, Host, Cookie, X-Forwarded-For, X-Forwarded-Proto, Forwarded, X-Real-IP",
            },
        ) as resp,
    ):
        echoed = json.loads(await resp.text())
    assert header(echoed, "X-Forwarded-For") == ["127.0.0.1"]
    assert header(echoed, "X-Forwarded-Proto") == ["http"]
    assert header(echoed, "X-Forwarded-Host") == ["app.example"]
    assert header(echoed, "X-Real-IP") == ["127.0.0.1"]
    assert header(echoed, "Forwarded") == ["for=127.0.0.1;proto=http;host=app.example"]
    # Connection naming them removed none of the headers cookieguard sets.
    assert header(echoed, "Host") == ["app.example"]
    assert header(echoed, "Cookie") == ["theme=dark"]


async def test_a_trusted_proxy_is_appended_to_and_its_scheme_and_host_kept(
    aiohttp_server: Any, cookieguard_process: Start
) -> None:
    upstream = await start_upstream(aiohttp_server)
    config = base_config(str(upstream.make_url("")), limits={"trusted_proxies": ["127.0.0.0/8"]})
    proxy = cookieguard_process(config)
    async with (
        aiohttp.ClientSession() as s,
        s.get(f"{proxy.url}/h", headers={**CLIENT_CLAIMS, "Host": "app.example"}) as resp,
    ):
        echoed = json.loads(await resp.text())
    assert header(echoed, "X-Forwarded-For") == ["198.51.100.9, 127.0.0.1"]
    assert header(echoed, "X-Forwarded-Proto") == ["https"]
    assert header(echoed, "X-Forwarded-Host") == ["claimed.example"]
    assert header(echoed, "Forwarded") == [CLIENT_CLAIMS["Forwarded"]]
    assert header(echoed, "X-Real-IP") == ["198.51.100.9"]


# -- request targets --------------------------------------------------------------------------


async def test_an_absolute_form_target_is_forwarded_in_origin_form_with_its_authority_as_host(
    aiohttp_server: Any, cookieguard_process: Start
) -> None:
    upstream = await start_upstream(aiohttp_server)
    proxy = cookieguard_process(base_config(str(upstream.make_url("/app"))))
    answer = await raw_exchange(
        proxy.port or 0,
        b"GET http://evil.example/admin?x=1 HTTP/1.1\r\nHost: good.example\r\nConnection: close\r\n\r\n",
    )
    assert status_of(answer) == 200
    echoed = json.loads(answer.split(b"\r\n\r\n", 1)[1])
    assert echoed["raw_path"] == "/app/admin?x=1"
    assert header(echoed, "Host") == ["evil.example"]  # RFC 9112 3.2.2: the target's authority


async def test_routes_match_the_normalised_path_and_the_upstream_receives_it(
    aiohttp_server: Any, cookieguard_process: Start
) -> None:
    static = await start_upstream(aiohttp_server)
    app = await start_upstream(aiohttp_server)
    routes = [
        {
            "match": "/_next/static",
            "upstream": str(static.make_url("")),
            "refresh": False,
            "preserve_host": False,
        },
        {"match": "/", "upstream": str(app.make_url("")), "preserve_host": False},
    ]
    proxy = cookieguard_process(base_config(str(app.make_url("")), routes=routes))
    app_host = f"127.0.0.1:{app.port}"
    cases = {
        b"/_next/static/../../dashboard?tab=1": "/dashboard?tab=1",
        b"/_next/static/%2e%2e/%2E%2e/dashboard": "/dashboard",
        b"/_next/static/./..//../settings/%20x": "/settings/%20x",
        b"//_next/static/chunk.js": None,  # merged slashes: the static route
    }
    for target, expected in cases.items():
        answer = await raw_exchange(
            proxy.port or 0, b"GET " + target + b" HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
        )
        assert status_of(answer) == 200, target
        echoed = json.loads(answer.split(b"\r\n\r\n", 1)[1])
        if expected is None:
            assert header(echoed, "Host") == [f"127.0.0.1:{static.port}"]
            assert echoed["raw_path"] == "/_next/static/chunk.js"
        else:
            assert header(echoed, "Host") == [app_host], target
            assert echoed["raw_path"] == expected
    # A dot segment hidden behind an encoded slash: the route and the app could disagree, so 400.
    answer = await raw_exchange(
        proxy.port or 0,
        b"GET /_next/static/..%2f..%2fdashboard HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    )
    assert status_of(answer) == 400


# -- the admin listener -----------------------------------------------------------------------


async def test_admin_listen_serves_readyz_and_metrics_and_takes_them_off_the_main_listener(
    aiohttp_server: Any, cookieguard_process: Start
) -> None:
    upstream = await start_upstream(aiohttp_server)
    proxy = cookieguard_process(base_config(str(upstream.make_url("")), admin_listen="127.0.0.1:0"))
    listening = proxy.wait_for_event("listening")
    admin_url = "http://" + listening["admin_listen"][0]
    async with aiohttp.ClientSession() as s:
        async with s.get(admin_url + "/.cookieguard/metrics") as resp:
            assert resp.status == 200 and "cookieguard_" in await resp.text()
        for name in ("readyz", "healthz"):
            async with s.get(f"{admin_url}/.cookieguard/{name}") as resp:
                assert resp.status == 200, name
        async with s.get(admin_url + "/.cookieguard/session") as resp:
            assert resp.status == 404  # browsers call the session endpoint on the main listener
        async with s.get(admin_url + "/anything") as resp:
            assert resp.status == 404  # nothing is proxied from the admin listener
        for name, status in (("metrics", 404), ("readyz", 404), ("healthz", 200)):
            async with s.get(f"{proxy.url}/.cookieguard/{name}") as resp:
                assert resp.status == status, name
