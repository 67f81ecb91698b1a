"""The floor for any aiohttp proxy: a bare pass-through with no cookie, token or metrics work.

`python bench/bare_proxy.py LISTEN_PORT UPSTREAM_URL [uvloop|asyncio]`. One pooled client,
hop-by-hop headers dropped, bodies streamed; nothing else.
"""

import asyncio
import sys

import aiohttp
from aiohttp import web

HOP = {"connection", "keep-alive", "proxy-connection", "te", "trailer", "transfer-encoding", "upgrade"}


async def main(port: int, upstream: str) -> None:
    client = aiohttp.ClientSession(
        cookie_jar=aiohttp.DummyCookieJar(),
        auto_decompress=False,
        skip_auto_headers=("User-Agent", "Accept-Encoding", "Accept", "Content-Type"),
        connector=aiohttp.TCPConnector(limit=0),
    )

    async def handle(request: web.Request) -> web.StreamResponse:
        headers = {k: v for k, v in request.headers.items() if k.lower() not in HOP}
        data = request.content if request.body_exists else None
        async with client.request(
            request.method, upstream + request.raw_path, headers=headers, data=data, allow_redirects=False
        ) as up:
            response = web.StreamResponse(status=up.status, reason=up.reason)
            response.headers.extend((k, v) for k, v in up.headers.items() if k.lower() not in HOP)
            await response.prepare(request)
            async for chunk in up.content.iter_chunked(65536):
                await response.write(chunk)
            await response.write_eof()
            return response

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", handle)
    runner = web.AppRunner(app, access_log=None, max_field_size=65536)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port, backlog=1024).start()
    await asyncio.Event().wait()


if __name__ == "__main__":
    if (sys.argv[3:] or ["uvloop"])[0] == "uvloop":
        import uvloop

        uvloop.install()
    asyncio.run(main(int(sys.argv[1]), sys.argv[2].rstrip("/")))
