"""Bodies are streamed both ways, never buffered whole: 1 GiB each way keeps the proxy small."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from tests.support.proxy_process import CookieguardProcess

# 1 GiB each way: `make test PYTEST_ARGS="-m 'not slow'"` skips it
pytestmark = pytest.mark.slow

GIB = 1024**3
CHUNK = b"\xa5" * (256 * 1024)
RSS_LIMIT_KB = 100 * 1024


def peak_rss_kb(pid: int) -> int:
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    raise AssertionError("no VmHWM in /proc status")


async def generate(total: int) -> AsyncIterator[bytes]:
    sent = 0
    while sent < total:
        piece = CHUNK[: min(len(CHUNK), total - sent)]
        sent += len(piece)
        yield piece


async def test_one_gib_down_and_up_keeps_the_proxy_under_100_mb(
    aiohttp_server: Any, cookieguard_process: Callable[..., CookieguardProcess]
) -> None:
    received: list[int] = []

    async def download(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": "application/octet-stream"})
        response.content_length = GIB
        await response.prepare(request)
        async for piece in generate(GIB):
            await response.write(piece)
        await response.write_eof()
        return response

    async def upload(request: web.Request) -> web.Response:
        total = 0
        async for piece in request.content.iter_any():
            total += len(piece)
        received.append(total)
        return web.Response(text=str(total))

    app = web.Application(client_max_size=0)
    app.router.add_get("/download", download)
    app.router.add_post("/upload", upload)
    upstream = await aiohttp_server(app)
    proxy = cookieguard_process({"upstream": str(upstream.make_url(""))})
    assert proxy.proc is not None

    timeout = aiohttp.ClientTimeout(total=300)
    async with aiohttp.ClientSession(timeout=timeout, auto_decompress=False) as s:
        started = time.monotonic()
        got = 0
        async with s.get(f"{proxy.url}/download") as resp:
            assert resp.status == 200 and resp.content_length == GIB
            async for piece in resp.content.iter_any():
                got += len(piece)
        assert got == GIB
        down_s = time.monotonic() - started

        started = time.monotonic()
        async with s.post(f"{proxy.url}/upload", data=generate(GIB)) as resp:
            assert resp.status == 200 and await resp.text() == str(GIB)
        up_s = time.monotonic() - started
    assert received == [GIB]
    rss_kb = peak_rss_kb(proxy.proc.pid)
    print(f"\n1 GiB down {down_s:.1f}s, up {up_s:.1f}s, proxy peak RSS {rss_kb / 1024:.1f} MB")
    assert rss_kb < RSS_LIMIT_KB, f"proxy peak RSS {rss_kb / 1024:.1f} MB"
