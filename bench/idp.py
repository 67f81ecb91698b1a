"""The Cognito emulator in a process of its own, driven over stdin/stdout (one JSON per line).

moto answers in threads of the process that runs it; keeping it out of the load generator's
process keeps the two from sharing a GIL. Commands: `pool`, `sessions` (users x per_user sign-ins,
each a distinct refresh token, at a given token lifetime), `lifetime`, `calls`, `call_times`,
`reset`, `quit`.
"""

import json
import os
import sys
import time
from concurrent.futures import ThreadPoolExecutor

from cookieguard.ops.demo.emulator import CognitoEmulator, PoolInfo

PASSWORD = "Bench-Passw0rd!"


def main() -> None:
    out = os.fdopen(os.dup(1), "w", buffering=1)
    os.dup2(2, 1)  # moto and werkzeug may print: keep the protocol channel clean
    emulator = CognitoEmulator().start()
    pool: PoolInfo | None = None
    try:
        for line in sys.stdin:
            cmd = json.loads(line)
            op = cmd["cmd"]
            if op == "quit":
                break
            if op == "pool":
                pool = emulator.create_pool()
                answer = {
                    "user_pool_id": pool.user_pool_id,
                    "client_id": pool.client_id,
                    "endpoint": pool.endpoint,
                    "jwks_url": pool.jwks_url,
                }
            elif op == "sessions":
                assert pool is not None
                answer = {"sessions": sessions(emulator, pool, cmd), "took_s": 0.0}
            elif op == "lifetime":
                emulator.access_token_lifetime_s = int(cmd["value"])
                answer = {}
            elif op == "calls":
                answer = {"calls": emulator.refresh_calls}
            elif op == "call_times":  # when each refresh call arrived, time.monotonic()
                answer = {"at": [call.at for call in emulator.refresh_log]}
            elif op == "reset":
                emulator.reset()
                answer = {}
            else:
                answer = {"error": f"unknown command {op}"}
            out.write(json.dumps(answer) + "\n")
    finally:
        emulator.stop()


def sessions(emulator: CognitoEmulator, pool: PoolInfo, cmd: dict[str, object]) -> list[dict[str, str]]:
    prefix, users, per_user = str(cmd["prefix"]), int(cmd["users"]), int(cmd["per_user"])  # type: ignore[call-overload]
    emulator.access_token_lifetime_s = int(cmd.get("lifetime", 3600))  # type: ignore[call-overload]
    names = [f"{prefix}{i}@example.com" for i in range(users)]

    def one_user(name: str) -> list[dict[str, str]]:
        emulator.create_user(pool, name, PASSWORD)
        found = []
        for _ in range(per_user):
            r = emulator.sign_in(pool, name, PASSWORD)
            found.append(
                {"user": name, "access": r["AccessToken"], "id": r["IdToken"], "refresh": r["RefreshToken"]}
            )
        return found

    started = time.monotonic()
    with ThreadPoolExecutor(8) as threads:
        result = [s for batch in threads.map(one_user, names) for s in batch]
    print(f"idp: {len(result)} sessions in {time.monotonic() - started:.1f}s", file=sys.stderr)
    return result


if __name__ == "__main__":
    main()
