"""The real @supabase/ssr (tests/supabase_ssr, Node), driven from Python, and a browser jar.

`ssr(request)` runs one operation of tests/supabase_ssr/ssr.mjs (see its header): the cookies the
library writes for a session, or what its server client reads (and refreshes) from a Cookie header.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

import pytest

from tests.support.node import run_json

SSR_DIR = Path(__file__).resolve().parents[1] / "supabase_ssr"

_node_missing = shutil.which("node") is None or not (SSR_DIR / "node_modules" / "@supabase" / "ssr").is_dir()
# Under CI (`make test` installs the node_modules first) a missing install is a failure, not a skip.
if _node_missing and os.environ.get("CI") == "true":
    raise RuntimeError("node or tests/supabase_ssr/node_modules missing (make supabase-node)")
needs_node = pytest.mark.skipif(
    _node_missing, reason="node or tests/supabase_ssr/node_modules missing (make supabase-node)"
)


async def ssr(request: dict[str, Any]) -> dict[str, Any]:
    """One call of tests/supabase_ssr/ssr.mjs (the real library)."""
    answer: dict[str, Any] = await run_json(SSR_DIR, "ssr.mjs", request)
    return answer


class Jar:
    """A browser's cookies for one site: applies Set-Cookie headers, sends a Cookie header."""

    def __init__(self) -> None:
        self.cookies: dict[str, str] = {}

    def apply(self, set_cookies: list[str]) -> None:
        for header in set_cookies:
            pair, *attributes = header.split(";")
            name, _, value = pair.partition("=")
            max_age = next(
                (a.split("=")[1] for a in attributes if a.strip().lower().startswith("max-age=")), None
            )
            if max_age is not None and int(max_age) <= 0:
                self.cookies.pop(name, None)
            else:
                self.cookies[name] = value

    def header(self) -> str:
        return "; ".join(f"{name}={value}" for name, value in self.cookies.items())

    def pairs(self) -> list[tuple[str, str]]:
        return list(self.cookies.items())
