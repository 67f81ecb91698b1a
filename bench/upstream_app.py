"""The aiohttp upstream (`--upstream aiohttp`): a 1 KB body for every path, like the nginx one.

`python bench/upstream_app.py PORT BODY_FILE`
"""

import sys
from pathlib import Path

from aiohttp import web


def main(port: int, body_file: str) -> None:
    body = Path(body_file).read_bytes()

    async def page(request: web.Request) -> web.Response:
        return web.Response(body=body, content_type="text/html")

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", page)
    try:
        import uvloop

        loop_factory = uvloop.new_event_loop
    except ImportError:
        loop_factory = None
    if loop_factory is not None:
        import asyncio

        asyncio.set_event_loop(loop_factory())
    web.run_app(app, host="127.0.0.1", port=port, access_log=None, print=None, max_field_size=65536)


if __name__ == "__main__":
    main(int(sys.argv[1]), sys.argv[2])
