"""The real Auth.js session-cookie code (tests/authjs_node, Node: @auth/core for v5, next-auth 4),
driven from Python. `authjs([operation, ...])` runs a batch of tests/authjs_node/jwt.mjs operations
(see its header) in one Node process and returns one answer per operation."""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

import pytest

from tests.support.node import run_json

AUTHJS_DIR = Path(__file__).resolve().parents[1] / "authjs_node"

_node_missing = (
    shutil.which("node") is None
    or not (AUTHJS_DIR / "node_modules" / "@auth" / "core").is_dir()
    or not (AUTHJS_DIR / "node_modules" / "next-auth").is_dir()
)
# Under CI (`make test` installs the node_modules first) a missing install is a failure, not a skip.
if _node_missing and os.environ.get("CI") == "true":
    raise RuntimeError("node or tests/authjs_node/node_modules missing (make authjs-node)")
needs_node = pytest.mark.skipif(
    _node_missing, reason="node or tests/authjs_node/node_modules missing (make authjs-node)"
)


async def authjs(operations: list[dict[str, Any]]) -> list[dict[str, Any]]:
    answers: list[dict[str, Any]] = await run_json(AUTHJS_DIR, "jwt.mjs", operations)
    assert len(answers) == len(operations)
    return answers
