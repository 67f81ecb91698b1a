"""The proxy core end to end: `cookieguard run` as a subprocess in front of real aiohttp upstreams."""

from __future__ import annotations

import asyncio
import json
import signal
import socket
import time
from collections.abc import Callable
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from cookieguard.edge.proxy import Pacer
from tests.support.apps import reset_mid_body
from tests.support.no_secrets import KnownSecrets
from tests.support.proxy_process import CookieguardProcess

Start = Callable[..., CookieguardProcess]
CANCELLED = web.AppKey("cancelled", asyncio.Event)
ARRIVED = web.AppKey("arrived", asyncio.Event)  # a request reached /hang or /held
RELEASE = web.AppKey("release", asyncio.Event)  # lets /held answer


async def start_upstream(aiohttp_server: Any, seen: list[web.Request] | None = None) -> TestServer:
    """An upstream that echoes what it received and offers a few misbehaving paths."""
    seen = seen if seen is not None else []
    cancelled = asyncio.Event()
    arrived = asyncio.Event()
    release = asyncio.Event()

    async def echo(request: web.Request) -> web.Response:
        seen.append(request)
        body = await request.read()
        return web.json_response(
            {
                "method": request.method,
                "raw_path": request.raw_path,
                "path": request.path,
                "headers": [[k, v] for k, v in request.headers.items()],
                "body_len": len(body),
            }
        )

    async def cookies(request: web.Request) -> web.Response:
        response = web.Response(status=302, headers={"Location": "/next"})
        for n in range(3):
            response.headers.add(
                "Set-Cookie", f"c{n}=v{n}; Expires=Wed, 21 Oct 2037 07:28:00 GMT; Path=/; HttpOnly"
            )
        response.headers["Connection"] = "close, X-Secret-Hop"
        response.headers["X-Secret-Hop"] = "must not reach the client"
        response.headers["Keep-Alive"] = "timeout=5"
        return response

    async def slow_chunks(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse()
        await response.prepare(request)
        for n in range(3):
            await response.write(f"chunk{n}\n".encode())
            await asyncio.sleep(0.4)
        await response.write_eof()
        return response

    async def hang(request: web.Request) -> web.Response:
        arrived.set()
        try:
            await asyncio.sleep(60)
        except asyncio.CancelledError:
            cancelled.set()
            raise
        return web.Response(text="late")

    async def slow(request: web.Request) -> web.Response:
        await asyncio.sleep(float(request.query.get("s", "1")))
        return web.Response(text="done")

    async def held(request: web.Request) -> web.Response:
        arrived.set()
        await release.wait()
        return web.Response(text="done")

    async def ws(request: web.Request) -> web.WebSocketResponse:
        sock = web.WebSocketResponse(protocols=("chat",))
        await sock.prepare(request)
        async for msg in sock:
            if msg.type == aiohttp.WSMsgType.TEXT:
                await sock.send_str("echo:" + msg.data)
            elif msg.type == aiohttp.WSMsgType.BINARY:
                await sock.send_bytes(msg.data[::-1])
        return sock

    app = web.Application(client_max_size=0)
    app.router.add_route("*", "/cookies", cookies)
    app.router.add_get("/slow-chunks", slow_chunks)
    app.router.add_get("/hang", hang)
    app.router.add_get("/slow", slow)
    app.router.add_get("/held", held)
    app.router.add_get("/ws", ws)
    app.router.add_route("*", "/{tail:.*}", echo)
    app[CANCELLED] = cancelled
    app[ARRIVED] = arrived
    app[RELEASE] = release
    server: TestServer = await aiohttp_server(app)
    return server


def base_config(upstream: str, **extra: Any) -> dict[str, Any]:
    return {"upstream": upstream, "logging": {"level": "info", "access_log": True}, **extra}


async def get_json(session: aiohttp.ClientSession, url: str, **kw: Any) -> dict[str, Any]:
    async with session.get(url, **kw) as resp:
        assert resp.status == 200, await resp.text()
        return json.loads(await resp.text())  # type: ignore[no-any-return]


def header(echoed: dict[str, Any], name: str) -> list[str]:
    return [v for k, v in echoed["headers"] if k.lower() == name.lower()]


async def test_forwards_method_path_query_and_body(aiohttp_server: Any, cookieguard_process: Start) -> None:
    upstream = await start_upstream(aiohttp_server)
    proxy = cookieguard_process(base_config(str(upstream.make_url(""))))
    async with aiohttp.ClientSession() as s:
        async with s.post(f"{proxy.url}/items?a=1&b=%20x", data=b"x" * 1000) as resp:
            echoed = await resp.json()
        assert echoed["method"] == "POST" and echoed["raw_path"] == "/items?a=1&b=%20x"
        assert echoed["body_len"] == 1000
        for raw in ("/a%2Fb/c", "/space%20here", "/%E2%9C%93/caf%C3%A9", "/q?x=%2F&y=a+b&z=%E2%9C%93"):
            echoed = await get_json(s, aiohttp.client.URL(f"{proxy.url}{raw}", encoded=True))
            assert echoed["raw_path"] == raw


async def test_hop_by_hop_headers_removed_and_forwarded_headers_set_from_the_socket(
    aiohttp_server: Any, cookieguard_process: Start
) -> None:
    upstream = await start_upstream(aiohttp_server)
    proxy = cookieguard_process(base_config(str(upstream.make_url(""))))
    async with aiohttp.ClientSession() as s:
        echoed = await get_json(
            s,
            f"{proxy.url}/h",
            headers={
                "Connection": "keep-alive, X-Private",
                "X-Private": "hop",
                "Keep-Alive": "timeout=5",
                "Proxy-Authorization": "Basic Zm9vOmJhcg==",
                "TE": "trailers",
                "Trailer": "X-Foo",
                "Upgrade": "h2c",
                "X-Forwarded-For": "203.0.113.7",
                "X-Custom": "kept",
                "Host": "app.example.com",
            },
        )
    names = {k.lower() for k, _ in echoed["headers"]}
    for gone in ("x-private", "keep-alive", "proxy-authorization", "te", "trailer", "upgrade"):
        assert gone not in names, gone
    assert header(echoed, "X-Custom") == ["kept"]
    assert header(echoed, "X-Forwarded-For") == ["127.0.0.1"]  # the client's own is dropped
    assert header(echoed, "X-Forwarded-Proto") == ["http"]
    assert header(echoed, "X-Forwarded-Host") == ["app.example.com"]
    assert header(echoed, "Host") == ["app.example.com"]  # the original Host is kept by default


async def test_preserve_host_false_sends_the_upstreams_host(
    aiohttp_server: Any, cookieguard_process: Start
) -> None:
    upstream = await start_upstream(aiohttp_server)
    url = str(upstream.make_url(""))
    proxy = cookieguard_process(base_config(url, routes=[{"match": "/", "preserve_host": False}]))
    async with aiohttp.ClientSession() as s:
        echoed = await get_json(s, f"{proxy.url}/h", headers={"Host": "app.example.com"})
    assert header(echoed, "Host") == [f"127.0.0.1:{upstream.port}"]
    assert header(echoed, "X-Forwarded-Host") == ["app.example.com"]


async def test_set_cookie_headers_stay_separate_and_hop_by_hop_response_headers_go(
    aiohttp_server: Any, cookieguard_process: Start
) -> None:
    upstream = await start_upstream(aiohttp_server)
    proxy = cookieguard_process(base_config(str(upstream.make_url(""))))
    async with aiohttp.ClientSession() as s, s.get(f"{proxy.url}/cookies", allow_redirects=False) as resp:
        assert resp.status == 302 and resp.headers["Location"] == "/next"
        assert resp.headers.getall("Set-Cookie") == [
            f"c{n}=v{n}; Expires=Wed, 21 Oct 2037 07:28:00 GMT; Path=/; HttpOnly" for n in range(3)
        ]
        assert "X-Secret-Hop" not in resp.headers and "Keep-Alive" not in resp.headers


async def test_routes_first_match_wins_prefix_and_regex(
    aiohttp_server: Any, cookieguard_process: Start
) -> None:
    app_seen: list[web.Request] = []
    api_seen: list[web.Request] = []
    app_upstream = await start_upstream(aiohttp_server, app_seen)
    api_upstream = await start_upstream(aiohttp_server, api_seen)
    proxy = cookieguard_process(
        base_config(
            str(app_upstream.make_url("")),
            routes=[
                {"match": "regex:^/api/v[0-9]+/", "upstream": str(api_upstream.make_url(""))},
                {"match": "/api/"},
                {"match": "/"},
            ],
        )
    )
    async with aiohttp.ClientSession() as s:
        await get_json(s, f"{proxy.url}/api/v2/users")
        await get_json(s, f"{proxy.url}/api/legacy")
        await get_json(s, f"{proxy.url}/page")
    assert [r.path for r in api_seen] == ["/api/v2/users"]
    assert [r.path for r in app_seen] == ["/api/legacy", "/page"]
    await asyncio.to_thread(proxy.wait_for_event, "access", 5, lambda e: e["path"] == "/page")
    access = proxy.events("access")
    assert [e["route"] for e in access] == ["regex:^/api/v[0-9]+/", "/api/", "/"]


async def test_unmatched_path_is_404_and_admin_paths_are_never_proxied(
    aiohttp_server: Any, cookieguard_process: Start
) -> None:
    seen: list[web.Request] = []
    upstream = await start_upstream(aiohttp_server, seen)
    proxy = cookieguard_process(base_config(str(upstream.make_url("")), routes=[{"match": "/app/"}]))
    async with aiohttp.ClientSession() as s:
        async with s.get(f"{proxy.url}/elsewhere") as resp:
            assert resp.status == 404
        async with s.get(f"{proxy.url}/.cookieguard/healthz") as resp:
            assert resp.status == 200 and await resp.text() == "ok\n"
        async with s.get(f"{proxy.admin_url}/.cookieguard/readyz") as resp:
            assert resp.status == 200 and (await resp.json())["ready"] is True
        async with s.get(f"{proxy.admin_url}/.cookieguard/metrics") as resp:
            assert resp.status == 200 and "cookieguard_requests_total" in await resp.text()
    assert seen == []


async def test_upstream_refused_is_502_with_a_log_event(cookieguard_process: Start) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # closed when the block ends: nothing listens there
    proxy = cookieguard_process(base_config(f"http://127.0.0.1:{port}"))
    async with aiohttp.ClientSession() as s, s.get(f"{proxy.url}/x") as resp:
        assert resp.status == 502
        assert "upstream unreachable" in await resp.text()
    event = await asyncio.to_thread(proxy.wait_for_event, "upstream_error")
    assert event["status"] == 502 and event["route"] == "/"


async def test_upstream_read_timeout_is_504(aiohttp_server: Any, cookieguard_process: Start) -> None:
    upstream = await start_upstream(aiohttp_server)
    proxy = cookieguard_process(base_config(str(upstream.make_url("")), timeouts={"upstream_read": "500ms"}))
    async with aiohttp.ClientSession() as s:
        started = time.monotonic()
        async with s.get(f"{proxy.url}/slow?s=5") as resp:
            assert resp.status == 504 and "timed out" in await resp.text()
        assert time.monotonic() - started < 4
    event = await asyncio.to_thread(proxy.wait_for_event, "upstream_error")
    assert event["status"] == 504 and event["error"] == "timeout"


async def test_route_timeout_overrides_the_default(aiohttp_server: Any, cookieguard_process: Start) -> None:
    upstream = await start_upstream(aiohttp_server)
    proxy = cookieguard_process(
        base_config(
            str(upstream.make_url("")),
            timeouts={"upstream_read": "300ms"},
            routes=[{"match": "/slow", "timeout": "5s"}, {"match": "/"}],
        )
    )
    async with aiohttp.ClientSession() as s, s.get(f"{proxy.url}/slow?s=1") as resp:
        assert resp.status == 200 and await resp.text() == "done"


async def test_slow_stream_arrives_chunk_by_chunk(aiohttp_server: Any, cookieguard_process: Start) -> None:
    upstream = await start_upstream(aiohttp_server)
    proxy = cookieguard_process(base_config(str(upstream.make_url(""))))
    arrivals: list[tuple[float, bytes]] = []
    async with aiohttp.ClientSession() as s, s.get(f"{proxy.url}/slow-chunks") as resp:
        started = time.monotonic()
        async for chunk in resp.content.iter_any():
            arrivals.append((time.monotonic() - started, chunk))
    assert b"".join(c for _, c in arrivals) == b"chunk0\nchunk1\nchunk2\n"
    # The first chunk is there long before the last one was written (0.8 s later).
    assert arrivals[0][1].startswith(b"chunk0") and arrivals[0][0] < 0.3
    assert len(arrivals) >= 3


async def test_client_disconnect_cancels_the_upstream_request(
    aiohttp_server: Any, cookieguard_process: Start
) -> None:
    upstream = await start_upstream(aiohttp_server)
    proxy = cookieguard_process(base_config(str(upstream.make_url(""))))
    _reader, writer = await asyncio.open_connection("127.0.0.1", proxy.port)
    writer.write(b"GET /hang HTTP/1.1\r\nHost: x\r\n\r\n")
    await writer.drain()
    assert upstream.app is not None
    await asyncio.wait_for(upstream.app[ARRIVED].wait(), timeout=5)
    writer.close()
    await asyncio.wait_for(upstream.app[CANCELLED].wait(), timeout=5)


async def test_websocket_is_proxied_both_ways(aiohttp_server: Any, cookieguard_process: Start) -> None:
    upstream = await start_upstream(aiohttp_server)
    proxy = cookieguard_process(base_config(str(upstream.make_url(""))))
    async with aiohttp.ClientSession() as s, s.ws_connect(f"{proxy.url}/ws", protocols=("chat",)) as ws:
        assert ws.protocol == "chat"
        await ws.send_str("hello")
        assert (await ws.receive(timeout=5)).data == "echo:hello"
        await ws.send_bytes(b"\x01\x02\x03")
        assert (await ws.receive(timeout=5)).data == b"\x03\x02\x01"


async def test_sigterm_lets_the_in_flight_request_finish_then_exits_0(
    aiohttp_server: Any, cookieguard_process: Start
) -> None:
    upstream = await start_upstream(aiohttp_server)
    proxy = cookieguard_process(base_config(str(upstream.make_url(""))))
    assert upstream.app is not None
    async with aiohttp.ClientSession() as s:
        pending = asyncio.ensure_future(s.get(f"{proxy.url}/held"))
        await asyncio.wait_for(upstream.app[ARRIVED].wait(), timeout=5)
        proxy.signal(signal.SIGTERM)
        await asyncio.to_thread(proxy.wait_for_event, "draining")
        upstream.app[RELEASE].set()  # the in-flight request finishes only now, while draining
        resp = await pending
        assert resp.status == 200 and await resp.text() == "done"
        resp.release()
    assert await asyncio.to_thread(proxy.stop) == 0
    with pytest.raises(OSError):
        await asyncio.open_connection("127.0.0.1", proxy.port)


async def test_drain_is_bounded(aiohttp_server: Any, cookieguard_process: Start) -> None:
    upstream = await start_upstream(aiohttp_server)
    proxy = cookieguard_process(base_config(str(upstream.make_url("")), timeouts={"drain": "1s"}))
    async with aiohttp.ClientSession() as s:
        pending = asyncio.ensure_future(s.get(f"{proxy.url}/hang"))
        assert upstream.app is not None
        await asyncio.wait_for(upstream.app[ARRIVED].wait(), timeout=5)
        started = time.monotonic()
        proxy.signal(signal.SIGTERM)
        code = await asyncio.to_thread(proxy.stop)
        assert code == 0 and time.monotonic() - started < 5
        with pytest.raises(aiohttp.ClientError):
            await pending


async def test_access_log_has_no_query_string(aiohttp_server: Any, cookieguard_process: Start) -> None:
    upstream = await start_upstream(aiohttp_server)
    proxy = cookieguard_process(base_config(str(upstream.make_url(""))))
    async with aiohttp.ClientSession() as s:
        await get_json(s, f"{proxy.url}/p?code=abc123secret")
    event = await asyncio.to_thread(proxy.wait_for_event, "access")
    assert event["path"] == "/p" and event["status"] == 200 and event["method"] == "GET"
    assert "abc123secret" not in proxy.output()
    loaded = proxy.events("config_loaded")[0]
    assert loaded["routes"] == 1


async def test_the_pacer_lets_a_bounded_number_of_requests_through_per_loop_turn() -> None:
    """Ten requests that all need a signature check arrive at once: three go per turn of the
    event loop, so whatever else is ready (a fresh session's request) runs in between."""
    loop = asyncio.get_running_loop()
    turns = 0
    ticking = True

    def tick() -> None:  # counts turns of the event loop
        nonlocal turns
        turns += 1
        if ticking:
            loop.call_soon(tick)

    loop.call_soon(tick)
    pacer = Pacer(3)
    passed: list[int] = []

    async def expensive_request() -> None:
        await pacer.turn()
        passed.append(turns)

    await asyncio.gather(*(expensive_request() for _ in range(10)))
    ticking = False
    per_turn = {t: passed.count(t) for t in passed}
    assert len(passed) == 10
    assert max(per_turn.values()) <= 3 and len(per_turn) >= 4, per_turn


async def test_upstream_error_events_never_carry_the_requests_cookies(
    aiohttp_server: Any, cookieguard_process: Start, known_secrets: KnownSecrets
) -> None:
    """Every upstream_error cause (refused, silent past the timeout, broken mid-body) is logged
    with its route, status and cause only, never the Cookie header the request carried. The
    autouse fixture also scans all of cookieguard's output for the secret and for JWTs."""
    jwt_like = "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJhbGljZSJ9.c2lnbmF0dXJlLXNlY3JldA"
    secret = "refresh-secret-3f9c2a7e1b"
    known_secrets.add(jwt_like, secret)
    cookie = f"accessToken={jwt_like}; refreshToken={secret}; theme=dark"

    async def slow(request: web.Request) -> web.Response:
        await asyncio.sleep(5)
        return web.Response()

    app = web.Application()
    app.router.add_get("/broken", reset_mid_body)
    app.router.add_get("/slow", slow)
    upstream = await aiohttp_server(app)
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        closed_port = sock.getsockname()[1]
    proxy = cookieguard_process(
        {
            "upstream": str(upstream.make_url("")),
            "logging": {"level": "debug", "access_log": True},
            "timeouts": {"upstream_read": "300ms"},
            "routes": [{"match": "/down", "upstream": f"http://127.0.0.1:{closed_port}"}, {"match": "/"}],
        }
    )
    async with aiohttp.ClientSession() as s:
        for path, status in (("/down", 502), ("/slow", 504)):
            async with s.get(f"{proxy.url}{path}", headers={"Cookie": cookie}) as resp:
                assert resp.status == status
        with pytest.raises(aiohttp.ClientPayloadError):
            async with s.get(f"{proxy.url}/broken", headers={"Cookie": cookie}) as resp:
                await resp.read()
    await asyncio.to_thread(proxy.wait_for_event, "upstream_error", 10, lambda e: e.get("phase") == "body")
    events = proxy.events("upstream_error")
    assert {e.get("error") for e in events} >= {"ConnectionRefusedError", "timeout", "closed_mid_body"}
    logged = proxy.output()
    assert secret not in logged and jwt_like not in logged and "theme=dark" not in logged
