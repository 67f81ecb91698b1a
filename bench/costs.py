"""What the expensive steps cost on this machine, step by step: reading a JWT's claims (cold and
memoised), a signature check (first one with the JWKS fetch, then per distinct token, then a
cache hit), and one refresh end to end against the Cognito emulator (both APIs) and, when its
node_modules are installed (`make node`), against oidc-provider.

    .venv/bin/python bench/costs.py

Prints figures only; the targets live in bench/run.py (`make bench`). These used to be tests that
asserted nothing (tests/test_tokens.py, tests/test_provider_*.py); a benchmark belongs here.
"""

from __future__ import annotations

import asyncio
import json
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import aiohttp
import jwt
from aiohttp import web
from cryptography.hazmat.primitives.asymmetric import rsa

from cookieguard.config import VerifyConfig
from cookieguard.ops.demo.emulator import CognitoEmulator
from cookieguard.tokens.claims import ClaimsReader, decode_claims
from cookieguard.tokens.providers.cognito import CognitoConfig
from cookieguard.tokens.verifier import TokenVerifier

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # tests.support.oidc_idp runs the test IdP
POOL_ID = "us-east-1_Bench0001"
CLIENT_ID = "benchclient0001"
ISSUER = f"https://cognito-idp.us-east-1.amazonaws.com/{POOL_ID}"


def per_call_us(fn: Callable[[], object], n: int) -> float:
    started = time.perf_counter()
    for _ in range(n):
        fn()
    return (time.perf_counter() - started) / n * 1e6


def access_token(key: rsa.RSAPrivateKey, jti: str) -> str:
    now = int(time.time())
    claims = {
        "sub": "0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0",
        "iss": ISSUER,
        "client_id": CLIENT_ID,
        "token_use": "access",
        "scope": "aws.cognito.signin.user.admin",
        "username": "alice@example.com",
        "iat": now,
        "exp": now + 3600,
        "jti": jti,
    }
    return jwt.encode(claims, key, algorithm="RS256", headers={"kid": "k1"})


async def token_costs() -> None:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    public = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(key.public_key()))
    public.update(kid="k1", alg="RS256", use="sig")
    app = web.Application()
    app.router.add_get("/jwks.json", lambda _r: web.json_response({"keys": [public]}))
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    token = access_token(key, "bench")
    copies = ["".join(list(token)) for _ in range(20_000)]  # as if parsed from fresh Cookie headers
    # Read as the proxy reads them: with the provider's user claims.
    user_claims = CognitoConfig.user_claims
    reader = ClaimsReader(user_claims=user_claims)
    reader.read(token)
    it = iter(copies)
    cold = per_call_us(lambda: decode_claims(token, user_claims), 20_000)
    hit_same = per_call_us(lambda: reader.read(token), 200_000)
    hit_fresh = per_call_us(lambda: reader.read(next(it)), 20_000)
    provider = CognitoConfig(client_id=CLIENT_ID, user_pool_id=POOL_ID)
    async with aiohttp.ClientSession() as session:
        verifier = TokenVerifier(
            provider, VerifyConfig(), session, jwks_url=f"http://127.0.0.1:{port}/jwks.json"
        )
        started = time.perf_counter()
        await verifier.check(token, kind="access")
        first_ms = (time.perf_counter() - started) * 1e3
        distinct = [access_token(key, f"b{i}") for i in range(200)]
        started = time.perf_counter()
        for t in distinct:
            await verifier.check(t, kind="access")
        verify_us = (time.perf_counter() - started) / len(distinct) * 1e6
        peek = per_call_us(lambda: verifier.peek(token, "access"), 200_000)
        started = time.perf_counter()
        for _ in range(100_000):
            await verifier.check(token, kind="access")
        check_hit = (time.perf_counter() - started) / 100_000 * 1e6
    await runner.cleanup()
    print(f"token: {len(token)} chars (RS256, Cognito access token shape)")
    print(f"  decode_claims (base64 + json)       {cold:8.2f} us")
    print(f"  ClaimsReader, memo hit (same str)   {hit_same:8.3f} us")
    print(f"  ClaimsReader, memo hit (equal str)  {hit_fresh:8.3f} us")
    print(f"  first check incl. JWKS fetch        {first_ms:8.2f} ms")
    print(f"  RS256 verify + claims, per token    {verify_us:8.1f} us")
    print(f"  peek, verdict cache hit             {peek:8.3f} us")
    print(f"  await check, verdict cache hit      {check_hit:8.3f} us")


async def timed_refreshes(refresh: Callable[[str], object], token: str, n: int = 30) -> list[float]:
    samples = []
    for _ in range(n):
        started = time.perf_counter()
        result = await refresh(token)  # type: ignore[misc]
        samples.append((time.perf_counter() - started) * 1000)
        token = getattr(result, "refresh_token", None) or token
    return samples


def describe(what: str, samples: list[float]) -> None:
    ordered = sorted(samples)
    p90 = ordered[int(len(ordered) * 0.9) - 1]
    print(f"  {what:44} median {statistics.median(samples):6.1f} ms  p90 {p90:6.1f} ms  n={len(samples)}")


async def cognito_costs() -> None:
    print("one refresh, end to end, on loopback:")
    with CognitoEmulator() as emulator:
        pool = emulator.create_pool()
        emulator.create_user(pool, "bench@example.com", "Bench-Passw0rd!")
        refresh_token = emulator.sign_in(pool, "bench@example.com", "Bench-Passw0rd!")["RefreshToken"]
        async with aiohttp.ClientSession() as http:
            for api in ("get_tokens_from_refresh_token", "initiate_auth"):
                client = pool.provider_config(api=api).make_provider(http)
                await client.refresh(refresh_token)  # warm-up
                describe(f"cognito {api} (moto)", await timed_refreshes(client.refresh, refresh_token))


async def oidc_costs() -> None:
    if not (ROOT / "tests/oidc_provider/node_modules").exists():
        print("  oidc: skipped (run `make node` first)")
        return
    from tests.support.oidc_idp import start_oidc_idp

    with start_oidc_idp() as idp:
        async with aiohttp.ClientSession() as http:
            client = idp.provider_config().make_provider(http)
            refresh_token = idp.mint("ivy")["refresh_token"]
            samples = await timed_refreshes(client.refresh, refresh_token)
            describe("oidc refresh_token grant (oidc-provider)", samples)


async def main() -> None:
    await token_costs()
    await cognito_costs()
    await oidc_costs()


if __name__ == "__main__":
    asyncio.run(main())
