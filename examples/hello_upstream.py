"""A tiny upstream app for trying cookieguard by hand: it shows what the proxy forwarded.

python examples/hello_upstream.py --port 3000
"""

from __future__ import annotations

import argparse
import html

from aiohttp import web


async def index(request: web.Request) -> web.Response:
    rows = "".join(
        f"<tr><td>{html.escape(k)}</td><td>{html.escape(v[:80])}</td></tr>"
        for k, v in request.headers.items()
        if k.lower() != "cookie"
    )
    cookie_names = sorted(
        {c.split("=", 1)[0].strip() for c in request.headers.get("Cookie", "").split(";") if c}
    )
    body = (
        "<!doctype html><title>hello upstream</title><h1>Hello from the upstream app</h1>"
        f"<p>You asked for <code>{html.escape(request.path_qs)}</code>.</p>"
        f"<p>Cookies the app received (names only): {html.escape(', '.join(cookie_names) or 'none')}</p>"
        f"<table border=1>{rows}</table>"
    )
    return web.Response(text=body, content_type="text/html")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=3000)
    args = parser.parse_args()
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", index)
    web.run_app(app, host=args.host, port=args.port, print=None)


if __name__ == "__main__":
    main()
