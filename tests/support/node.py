"""Running one of the tests' Node fixtures (a script over real npm libraries): JSON in on stdin,
JSON out on stdout, the process stopped by its own PID if it outlives the deadline."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

NODE_TIMEOUT_S = 30.0


async def run_json(cwd: Path, script: str, request: Any) -> Any:
    process = await asyncio.create_subprocess_exec(
        "node",
        script,
        cwd=cwd,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        stdout, stderr = await asyncio.wait_for(
            process.communicate(json.dumps(request).encode()), NODE_TIMEOUT_S
        )
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
    assert process.returncode == 0, stderr.decode(errors="replace")[-2000:]
    return json.loads(stdout)
