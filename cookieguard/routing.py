"""Pick the route for a request path: routes are tried in order, the first match wins."""

from __future__ import annotations

from collections.abc import Sequence

from .config import Route


class Router:
    def __init__(self, routes: Sequence[Route]) -> None:
        self.routes = tuple(routes)

    def match(self, path: str) -> Route | None:
        """`path` is the decoded request path without the query string."""
        for route in self.routes:
            if route.regex is not None:
                if route.regex.match(path):
                    return route
            elif path.startswith(route.match):
                return route
        return None


def describe_routes(routes: Sequence[Route]) -> list[str]:
    """One line per route, as `cookieguard check` prints them."""
    lines = []
    for i, r in enumerate(routes):
        flags = [] if r.refresh else ["refresh: off"]
        if not r.preserve_host:
            flags.append("host: upstream's")
        if r.timeout_s is not None:
            flags.append(f"timeout: {r.timeout_s:g}s")
        extra = f"  ({', '.join(flags)})" if flags else ""
        lines.append(f"  [{i}] {r.match:<24} -> {r.upstream}{extra}")
    return lines
