"""`make run`: cookieguard (config/cookieguard.yaml) in front of the bundled example upstream.

Starts examples/hello_upstream.py on 127.0.0.1:3000 and `cookieguard run` on 127.0.0.1:8080,
prints where to point a browser, and stops both on Ctrl-C.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def wait_for(url: str, deadline_s: float = 15.0) -> bool:
    end = time.monotonic() + deadline_s
    while time.monotonic() < end:
        try:
            with urllib.request.urlopen(url, timeout=1):
                return True
        except OSError:
            time.sleep(0.1)
    return False


def main() -> int:
    config = os.environ.get("COOKIEGUARD_CONFIG", str(ROOT / "config" / "cookieguard.yaml"))
    upstream = subprocess.Popen(
        [sys.executable, str(ROOT / "examples" / "hello_upstream.py"), "--port", "3000"]
    )
    proxy = subprocess.Popen([sys.executable, "-m", "cookieguard", "run", "--config", config])
    try:
        if wait_for("http://127.0.0.1:8080/.cookieguard/healthz"):
            print(
                "\n  cookieguard is running in front of the example upstream.\n"
                "  Open http://127.0.0.1:8080/ in a browser (the app itself is on :3000).\n"
                "  Health: http://127.0.0.1:8080/.cookieguard/healthz\n"
                "  Metrics: http://127.0.0.1:9090/.cookieguard/metrics (admin_listen)\n"
                "  Ctrl-C stops both.\n",
                flush=True,
            )
        return proxy.wait()
    except KeyboardInterrupt:
        return 0
    finally:
        for proc in (proxy, upstream):
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in (proxy, upstream):
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()


if __name__ == "__main__":
    sys.exit(main())
