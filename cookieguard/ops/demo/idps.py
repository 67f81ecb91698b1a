"""What differs between the demo's two stories, Cognito + Amplify and Supabase + `@supabase/ssr`.

The story (`story.py`), the app (`app.py`) and the browser (`browser.py`) are the same for both
providers; what they need from one is here, behind two small interfaces:

- `AppAuth`: what the app's auth library does against the IdP (sign in, refresh a session) and
  the cookie layout it reads and writes (the browser reads the same layout);
- `DemoIdP`: the IdP for the story: started and stopped, its counters, and the `provider:` and
  `cookies:` sections of cookieguard's configuration for it.

`make_idp` picks one by the name `cookieguard demo --provider` takes.
"""

from __future__ import annotations

import json
import time
import uuid
from dataclasses import dataclass
from typing import Any, Protocol

import aiohttp

from cookieguard.ops.demo.emulator import CognitoEmulator, PoolInfo
from cookieguard.ops.demo.gotrue import API_VERSION_2024, API_VERSION_HEADER, GoTrueServer, ManualClock, User
from cookieguard.session.layouts import AmplifyLayout, FreshTokens, Layout, Session, SupabaseLayout
from cookieguard.session.layouts.supabase import storage_key
from cookieguard.tokens.claims import clock_drift_ms, decode_claims

PROVIDERS = ("cognito", "supabase")
DEMO_PASSWORD = "Demo-Passw0rd!"

_TARGET_PREFIX = "AWSCognitoIdentityProviderService."


@dataclass(frozen=True)
class IdPError:
    """The IdP said no: its error code, never its message."""

    code: str


@dataclass(frozen=True)
class SignedIn:
    """A sign-in's answer, ready for `layout.set_cookies(session, tokens, ...)`."""

    session: Session
    tokens: FreshTokens


class AppAuth(Protocol):
    """The app's auth library: Amplify's server-side auth, or `@supabase/ssr`'s server client."""

    layout: Layout
    demo_user: str  # the demo account (prefilled on the sign-in page)
    reuse_error: str  # the IdP's error code for a refresh token that was already used

    async def sign_in(
        self, http: aiohttp.ClientSession, username: str, password: str, now: float
    ) -> SignedIn | IdPError: ...

    async def refresh(
        self, http: aiohttp.ClientSession, session: Session, now: float
    ) -> FreshTokens | IdPError: ...


class DemoIdP(Protocol):
    """The IdP of one story."""

    kind: str  # cookieguard's `provider.kind`
    layout_name: str  # cookieguard's `cookies.layout`
    title: str  # "Cognito", "Supabase Auth (GoTrue)"

    @property
    def auth(self) -> AppAuth: ...

    @property
    def endpoint(self) -> str: ...

    @property
    def refresh_calls(self) -> int:
        """Refresh requests that reached the IdP, whoever sent them."""

    @property
    def already_used(self) -> int | None:
        """Refreshes the IdP refused because the token was already used; None: it does not count."""

    @property
    def reissued(self) -> int:
        """Refreshes answered with a token issued before (GoTrue's parent exception); else 0."""

    async def start(self) -> None: ...

    async def stop(self) -> None: ...

    def describe(self, token_lifetime_s: int) -> str:
        """What this IdP does, for the story's opening lines."""

    def guard_sections(self) -> tuple[dict[str, Any], dict[str, str]]:
        """cookieguard's `provider:` section and the environment its `${...}` refer to."""


def make_idp(provider: str, token_lifetime_s: int) -> DemoIdP:
    if provider == "supabase":
        return SupabaseIdP(token_lifetime_s)
    if provider == "cognito":
        return CognitoIdP(token_lifetime_s)
    raise ValueError(f"unknown demo provider {provider!r} (one of {', '.join(PROVIDERS)})")


# ---------------------------------------------------------------------------------------------
# Cognito: moto's server, Amplify v6's cookies
# ---------------------------------------------------------------------------------------------


class CognitoAuth:
    """Amplify v6's server-side calls: InitiateAuth USER_PASSWORD_AUTH, GetTokensFromRefreshToken."""

    demo_user = "demo"
    reuse_error = "RefreshTokenReuseException"

    def __init__(self, pool: PoolInfo) -> None:
        self.pool = pool
        self.layout: Layout = AmplifyLayout(pool.client_id)

    async def _call(
        self, http: aiohttp.ClientSession, operation: str, body: dict[str, Any]
    ) -> dict[str, Any] | IdPError:
        headers = {
            "Content-Type": "application/x-amz-json-1.1",
            "X-Amz-Target": _TARGET_PREFIX + operation,
        }
        async with http.post(self.pool.endpoint + "/", data=json.dumps(body), headers=headers) as resp:
            text = await resp.text()
            if resp.status != 200:
                code = resp.headers.get("x-amzn-ErrorType") or f"HTTP {resp.status}"
                return IdPError(code.split(":", 1)[0])
        answer: dict[str, Any] = json.loads(text)
        return answer

    def _tokens(self, result: dict[str, Any], refresh_token: str, now: float) -> FreshTokens:
        access_token = result["AccessToken"]
        claims = decode_claims(access_token)
        return FreshTokens(
            access_token=access_token,
            id_token=result.get("IdToken"),
            refresh_token=result.get("RefreshToken") or refresh_token,
            clock_drift_ms=clock_drift_ms(claims, now) if claims is not None else 0,
        )

    async def sign_in(
        self, http: aiohttp.ClientSession, username: str, password: str, now: float
    ) -> SignedIn | IdPError:
        answer = await self._call(
            http,
            "InitiateAuth",
            {
                "ClientId": self.pool.client_id,
                "AuthFlow": "USER_PASSWORD_AUTH",
                "AuthParameters": {"USERNAME": username, "PASSWORD": password},
            },
        )
        if isinstance(answer, IdPError):
            return answer
        if "AuthenticationResult" not in answer:
            return IdPError("ChallengeRequired")
        result = answer["AuthenticationResult"]
        session = Session(user=username, access_token=None, id_token=None, refresh_token=None)
        return SignedIn(session, self._tokens(result, result["RefreshToken"], now))

    async def refresh(
        self, http: aiohttp.ClientSession, session: Session, now: float
    ) -> FreshTokens | IdPError:
        assert session.refresh_token is not None
        body = {"ClientId": self.pool.client_id, "RefreshToken": session.refresh_token}
        if self.pool.client_secret:
            body["ClientSecret"] = self.pool.client_secret
        answer = await self._call(http, "GetTokensFromRefreshToken", body)
        if isinstance(answer, IdPError):
            return answer
        return self._tokens(answer["AuthenticationResult"], session.refresh_token, now)


class CognitoIdP:
    """moto's Cognito server with an app client that rotates refresh tokens (no grace period)."""

    kind = "cognito"
    layout_name = "amplify"
    title = "Cognito"

    def __init__(self, token_lifetime_s: int) -> None:
        self.emulator = CognitoEmulator(
            access_token_lifetime_s=token_lifetime_s, rotate_refresh_tokens=True, retry_grace_period_s=0
        )
        self._pool: PoolInfo | None = None

    @property
    def pool(self) -> PoolInfo:
        assert self._pool is not None, "start() first"
        return self._pool

    @property
    def auth(self) -> AppAuth:
        return CognitoAuth(self.pool)

    @property
    def endpoint(self) -> str:
        return self.pool.endpoint

    @property
    def refresh_calls(self) -> int:
        return self.emulator.refresh_calls

    @property
    def already_used(self) -> int | None:
        return None

    @property
    def reissued(self) -> int:
        return 0

    async def start(self) -> None:
        # Blocking, on purpose: nothing else runs on the loop yet (raises EmulatorUnavailable).
        self.emulator.start()
        try:
            self._pool = self.emulator.create_pool(name="cookieguard-demo")
            self.emulator.create_user(self._pool, CognitoAuth.demo_user, DEMO_PASSWORD)
        except BaseException:
            self.emulator.stop()
            raise

    async def stop(self) -> None:
        self.emulator.stop()

    def describe(self, token_lifetime_s: int) -> str:
        return (
            f"moto's Cognito server on {self.endpoint}: access tokens live {token_lifetime_s} s, "
            "refresh tokens rotate (a used one is rejected)"
        )

    def guard_sections(self) -> tuple[dict[str, Any], dict[str, str]]:
        return self.pool.provider_yaml(), {}


# ---------------------------------------------------------------------------------------------
# Supabase: the GoTrue-compatible server, @supabase/ssr's cookie
# ---------------------------------------------------------------------------------------------


class _WallClock(ManualClock):
    """The real time: the demo's tokens expire while the story waits."""

    def __call__(self) -> float:
        return time.time()


class SupabaseAuth:
    """`@supabase/ssr`'s server client (auth-js): password sign-in and the refresh-token grant."""

    demo_user = "demo@example.com"
    reuse_error = "refresh_token_already_used"

    def __init__(self, url: str, anon_key: str) -> None:
        self.url = url
        self._anon_key = anon_key
        self.layout: Layout = SupabaseLayout(storage_key(url))

    async def _token(
        self, http: aiohttp.ClientSession, grant_type: str, body: dict[str, str]
    ) -> dict[str, Any] | IdPError:
        # The headers auth-js sends: the key twice, and the API version that selects the error shape.
        headers = {
            "apikey": self._anon_key,
            "Authorization": f"Bearer {self._anon_key}",
            API_VERSION_HEADER: API_VERSION_2024,
        }
        url = f"{self.url}/auth/v1/token?grant_type={grant_type}"
        async with http.post(url, json=body, headers=headers) as resp:
            text = await resp.text()
            if resp.status != 200:
                return IdPError(resp.headers.get("x-sb-error-code") or f"HTTP {resp.status}")
        answer: dict[str, Any] = json.loads(text)
        return answer

    @staticmethod
    def _tokens(answer: dict[str, Any]) -> FreshTokens:
        return FreshTokens(
            access_token=answer["access_token"],
            id_token=None,
            refresh_token=answer["refresh_token"],
            expires_in_s=answer.get("expires_in"),
        )

    async def sign_in(
        self, http: aiohttp.ClientSession, username: str, password: str, now: float
    ) -> SignedIn | IdPError:
        answer = await self._token(http, "password", {"email": username, "password": password})
        if isinstance(answer, IdPError):
            return answer
        # @supabase/ssr stores the whole answer (with `user`) as the session JSON.
        session = Session(user=username, access_token=None, id_token=None, refresh_token=None, payload=answer)
        return SignedIn(session, self._tokens(answer))

    async def refresh(
        self, http: aiohttp.ClientSession, session: Session, now: float
    ) -> FreshTokens | IdPError:
        assert session.refresh_token is not None
        answer = await self._token(http, "refresh_token", {"refresh_token": session.refresh_token})
        if isinstance(answer, IdPError):
            return answer
        return self._tokens(answer)


class SupabaseIdP:
    """The GoTrue-compatible server (`demo.gotrue`): rotation with GoTrue's own reuse rules."""

    kind = "supabase"
    layout_name = "supabase"
    title = "Supabase Auth (GoTrue)"

    def __init__(self, token_lifetime_s: int) -> None:
        self.server = GoTrueServer(access_token_ttl_s=token_lifetime_s, clock=_WallClock())

    @property
    def auth(self) -> AppAuth:
        return SupabaseAuth(self.server.url, self.server.anon_key)

    @property
    def endpoint(self) -> str:
        return self.server.url

    @property
    def refresh_calls(self) -> int:
        return self.server.stats.refresh_calls

    @property
    def already_used(self) -> int | None:
        return self.server.stats.already_used

    @property
    def reissued(self) -> int:
        return self.server.stats.reused_parent

    async def start(self) -> None:
        await self.server.start()
        now = time.time()
        user = User(str(uuid.uuid4()), SupabaseAuth.demo_user, DEMO_PASSWORD, created_at=now)
        self.server.users[user.id] = user

    async def stop(self) -> None:
        await self.server.close()

    def describe(self, token_lifetime_s: int) -> str:
        return (
            f"a GoTrue-compatible server on {self.endpoint}: access tokens live {token_lifetime_s} s, "
            f"refresh tokens rotate with GoTrue's reuse rules (the parent of the active token may "
            f"come back at any time; an older one within {self.server.reuse_interval_s:g} s of its "
            "revocation, else `refresh_token_already_used` and the session is revoked)"
        )

    def guard_sections(self) -> tuple[dict[str, Any], dict[str, str]]:
        # The key goes through the environment, as in config/supabase.yaml.
        provider = {
            "kind": "supabase",
            "url": self.server.url,
            "anon_key": "${SUPABASE_ANON_KEY}",
            "timeout": "5s",
        }
        return provider, {"SUPABASE_ANON_KEY": self.server.anon_key}
