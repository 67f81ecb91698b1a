"""A GoTrue-compatible server (Supabase Auth) for the tests and the demo, in-process, on aiohttp.

No GoTrue server can be installed here (the Supabase CLI needs Docker images), so this follows
the rules of supabase/auth's own source, read for this purpose:

- `internal/api/token_refresh.go`: the refresh token must be 12 characters `[a-z0-9]` (the
  default, "v1" refresh tokens) or it is refused as `validation_failed`.
- `internal/tokens/service.go` `RefreshTokenGrant`, v1 branch:
  unknown token -> 400 `refresh_token_not_found`; banned user -> 400 `user_banned`; token
  without a session -> 400 `session_not_found`; session past its timebox (or expired by the
  test) -> 400 `session_expired`. A revoked token that is the *parent of the session's active
  token* gets the active token back (no new one: "the client was not able to store the result"),
  whenever it comes; any other revoked token is swapped for a new one while
  `now <= token.updated_at + reuse interval` (PR #466; `updated_at` is when it was revoked), and
  after that the whole family (every token of the session) is revoked -> 400
  `refresh_token_already_used`. Revoking the family also stamps `updated_at = now()` on the
  tokens it revokes (models.RevokeTokenFamily), so for one reuse interval after a family
  revocation the last active token still swaps: that quirk of the real server is kept.
- `internal/models/refresh_token.go`: a swap revokes the old token and creates a child whose
  `parent` is the old token's value; the active token is the newest unrevoked one of the session.
- `internal/api/errors.go` / `apierrors`: errors carry the header `x-sb-error-code`; the body is
  `{"code": <http status>, "error_code", "msg"}`, or `{"code": <error_code>, "message"}` when the
  request sent `X-Supabase-Api-Version: 2024-01-01` (auth-js always does; the answer then echoes
  that header). OAuth-style errors (`invalid_request`) are `{"error", "error_description"}`.
- The `apikey` check is not GoTrue's but the API gateway's (Kong key-auth) in front of it:
  401 `{"message": "No API key found in request", "hint": ...}` or `{"message": "Invalid API
  key", "hint": ...}`. It is emulated here because every Supabase project has it.

Access tokens carry GoTrue's claims (`AccessTokenClaims`: iss `<url>/auth/v1`, sub, aud
`authenticated`, exp, iat, email, phone, app_metadata, user_metadata, role, aal, amr,
session_id, is_anonymous) and are signed ES256 (default) or RS256 with a `kid` published at
`/auth/v1/.well-known/jwks.json`, or HS256 with a JWT secret (legacy projects; the JWKS is then
empty).

Test controls: `sign_in()` (or `POST /auth/v1/token?grant_type=password`), `sign_out()`,
`expire_session()`, `forget_session()`, `ban()`; `fail_next()` (500, 429 with Retry-After, ...),
`delay_next()`; `clock.advance()`; counters in `stats`.
"""

from __future__ import annotations

import asyncio
import json
import re
import secrets
import string
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import jwt
from aiohttp import web
from cryptography.hazmat.primitives.asymmetric import ec, rsa

API_VERSION_HEADER = "X-Supabase-Api-Version"
API_VERSION_2024 = "2024-01-01"
DEFAULT_REUSE_INTERVAL_S = 10.0
_LEGACY_REFRESH_TOKEN = re.compile(r"[a-z0-9]{12}")


class ManualClock:
    """Wall-clock seconds that a test moves by hand (starts at the real time)."""

    def __init__(self, start: float | None = None) -> None:
        self._now = time.time() if start is None else start

    def __call__(self) -> float:
        return self._now

    def advance(self, seconds: float) -> None:
        self._now += seconds


@dataclass
class User:
    id: str
    email: str
    password: str = field(repr=False)
    user_metadata: dict[str, Any] = field(default_factory=dict)
    banned: bool = False
    created_at: float = 0.0

    def as_json(self, now: float) -> dict[str, Any]:
        created = _iso(self.created_at)
        return {
            "id": self.id,
            "aud": "authenticated",
            "role": "authenticated",
            "email": self.email,
            "email_confirmed_at": created,
            "phone": "",
            "confirmed_at": created,
            "last_sign_in_at": _iso(now),
            "app_metadata": {"provider": "email", "providers": ["email"]},
            "user_metadata": self.user_metadata,
            "identities": [],
            "created_at": created,
            "updated_at": _iso(now),
            "is_anonymous": False,
        }


@dataclass
class Session:
    id: str
    user_id: str
    created_at: float
    expired: bool = False


@dataclass
class RefreshToken:
    serial: int
    token: str = field(repr=False)
    user_id: str
    session_id: str
    parent: str | None = field(default=None, repr=False)
    revoked: bool = False
    updated_at: float = 0.0


@dataclass
class Stats:
    refresh_calls: int = 0  # every refresh request that reached the server, faults included
    refreshed: int = 0  # answered 200
    reused_parent: int = 0  # 200 with the active token for its parent
    already_used: int = 0  # answered refresh_token_already_used
    errors: Counter[str] = field(default_factory=Counter)  # error_code -> count
    apikeys_seen: list[str | None] = field(default_factory=list, repr=False)


@dataclass
class _Fault:
    status: int
    retry_after: str | None
    body: bytes | None


class GoTrueServer:
    """Start with `await server.start()`, stop with `await server.close()` (or `async with`)."""

    def __init__(
        self,
        *,
        anon_key: str | None = None,
        algorithm: str = "ES256",
        jwt_secret: str | None = None,
        reuse_interval_s: float = DEFAULT_REUSE_INTERVAL_S,
        access_token_ttl_s: int = 3600,
        session_timebox_s: float | None = None,
        clock: ManualClock | None = None,
    ) -> None:
        if algorithm not in ("ES256", "RS256", "HS256"):
            raise ValueError(f"unsupported algorithm {algorithm}")
        self.anon_key = anon_key or "sb_publishable_" + secrets.token_urlsafe(24)
        self.algorithm = algorithm
        self.jwt_secret = jwt_secret or (secrets.token_urlsafe(32) if algorithm == "HS256" else None)
        self.kid = secrets.token_hex(8)
        self._private_key: Any = None
        if algorithm == "ES256":
            self._private_key = ec.generate_private_key(ec.SECP256R1())
        elif algorithm == "RS256":
            self._private_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        self.reuse_interval_s = reuse_interval_s
        self.access_token_ttl_s = access_token_ttl_s
        self.session_timebox_s = session_timebox_s
        self.clock = clock or ManualClock()
        self.stats = Stats()
        self.users: dict[str, User] = {}
        self.sessions: dict[str, Session] = {}
        self.tokens: dict[str, RefreshToken] = {}
        self._serial = 0
        self._faults: list[_Fault] = []
        self._delays: list[float] = []
        self._runner: web.AppRunner | None = None
        self.port = 0

    # -- lifecycle ---------------------------------------------------------------------------

    async def start(self) -> GoTrueServer:
        app = web.Application()
        app.router.add_post("/auth/v1/token", self._token)
        app.router.add_get("/auth/v1/user", self._user)
        app.router.add_get("/auth/v1/.well-known/jwks.json", self._jwks)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.port = self._runner.addresses[0][1]
        return self

    async def close(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def __aenter__(self) -> GoTrueServer:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    @property
    def url(self) -> str:
        """The project URL, as `createClient(url, key)` takes it."""
        return f"http://127.0.0.1:{self.port}"

    # GoTrue's own addresses under the project URL (supabase/auth's routes).
    issuer = property(lambda self: f"{self.url}/auth/v1")
    token_url = property(lambda self: f"{self.issuer}/token")
    jwks_url = property(lambda self: f"{self.issuer}/.well-known/jwks.json")

    # -- test controls -----------------------------------------------------------------------

    def sign_in(
        self, email: str = "alice@example.com", *, user_metadata: dict[str, Any] | None = None
    ) -> dict[str, Any]:
        """A new session for this user (created on first use): GoTrue's token response."""
        now = self.clock()
        user = self._find_user(email)
        if user is None:
            user = User(str(uuid.uuid4()), email, "password", user_metadata or {}, created_at=now)
            self.users[user.id] = user
        elif user_metadata is not None:
            user.user_metadata = user_metadata
        session = Session(str(uuid.uuid4()), user.id, created_at=now)
        self.sessions[session.id] = session
        token = self._new_refresh_token(session, parent=None)
        return self._token_response(user, session, token.token)

    def sign_out(self, session_id: str) -> None:
        """Delete the session; its refresh tokens go with it (ON DELETE CASCADE)."""
        self.sessions.pop(session_id, None)
        for value in [t.token for t in self.tokens.values() if t.session_id == session_id]:
            del self.tokens[value]

    def forget_session(self, session_id: str) -> None:
        """Delete only the session row: its refresh tokens then answer `session_not_found`."""
        self.sessions.pop(session_id, None)

    def expire_session(self, session_id: str) -> None:
        self.sessions[session_id].expired = True

    def ban(self, email: str) -> None:
        user = self._find_user(email)
        assert user is not None
        user.banned = True

    def fail_next(
        self, status: int = 500, *, count: int = 1, retry_after: str | None = None, body: bytes | None = None
    ) -> None:
        """The next `count` refresh requests get this answer instead of being served."""
        self._faults += [_Fault(status, retry_after, body)] * count

    def delay_next(self, seconds: float, *, count: int = 1) -> None:
        """The next `count` refresh requests wait this long (real time) before being served."""
        self._delays += [seconds] * count

    def active_refresh_token(self, session_id: str) -> str | None:
        active = self._active_token(session_id)
        return active.token if active else None

    def session_id_of(self, refresh_token: str) -> str:
        return self.tokens[refresh_token].session_id

    def public_jwks(self) -> dict[str, Any]:
        if self._private_key is None:
            return {"keys": []}
        algo = jwt.algorithms.get_default_algorithms()[self.algorithm]
        jwk = json.loads(algo.to_jwk(self._private_key.public_key()))
        jwk.update({"kid": self.kid, "alg": self.algorithm, "use": "sig", "key_ops": ["verify"]})
        return {"keys": [jwk]}

    def decode(self, access_token: str, *, verify_exp: bool = False) -> dict[str, Any]:
        """The claims of one of this server's access tokens, signature checked."""
        key: Any = self.jwt_secret if self._private_key is None else self._private_key.public_key()
        claims: dict[str, Any] = jwt.decode(
            access_token,
            key,
            algorithms=[self.algorithm],
            audience="authenticated",
            issuer=self.issuer,
            options={"verify_exp": verify_exp},
        )
        return claims

    # -- handlers ----------------------------------------------------------------------------

    async def _token(self, request: web.Request) -> web.Response:
        grant_type = request.query.get("grant_type")
        if grant_type == "refresh_token":
            self.stats.refresh_calls += 1
            self.stats.apikeys_seen.append(request.headers.get("apikey"))
        denied = self._check_apikey(request)
        if denied is not None:
            return denied
        if grant_type == "refresh_token":
            if self._delays:
                await asyncio.sleep(self._delays.pop(0))
            if self._faults:
                return self._fault_response(self._faults.pop(0))
        try:
            body = json.loads(await request.read() or b"{}")
        except ValueError:
            return self._error(request, 400, "bad_json", "Could not parse request body as JSON")
        if not isinstance(body, dict):
            return self._error(request, 400, "bad_json", "Could not parse request body as JSON")
        if grant_type == "refresh_token":
            return self._refresh(request, body.get("refresh_token"))
        if grant_type == "password":
            user = self._find_user(str(body.get("email", "")))
            if user is None or body.get("password") != user.password:
                return self._error(request, 400, "invalid_credentials", "Invalid login credentials")
            return web.json_response(self.sign_in(user.email))
        return web.json_response(
            {"error": "unsupported_grant_type", "error_description": "unsupported_grant_type"}, status=400
        )

    def _refresh(self, request: web.Request, refresh_token: object) -> web.Response:
        # RefreshTokenGrantParams.Validate: v1 tokens are 12 lowercase alphanumerics.
        if not isinstance(refresh_token, str) or not _LEGACY_REFRESH_TOKEN.fullmatch(refresh_token):
            return self._error(request, 400, "validation_failed", "Refresh token is not valid")
        now = self.clock()
        token = self.tokens.get(refresh_token)
        if token is None:
            return self._error(
                request, 400, "refresh_token_not_found", "Invalid Refresh Token: Refresh Token Not Found"
            )
        session = self.sessions.get(token.session_id)
        user = self.users[token.user_id]
        if user.banned:
            return self._error(request, 400, "user_banned", "Invalid Refresh Token: User Banned")
        if session is None:
            return self._error(
                request, 400, "session_not_found", "Invalid Refresh Token: No Valid Session Found"
            )
        timed_out = self.session_timebox_s is not None and now > session.created_at + self.session_timebox_s
        if session.expired or timed_out:
            return self._error(request, 400, "session_expired", "Invalid Refresh Token: Session Expired")

        issued: str | None = None
        if token.revoked:
            active = self._active_token(session.id)
            if active is not None and active.parent == token.token:
                issued = active.token  # the client lost the answer to its last refresh
                self.stats.reused_parent += 1
            elif now > token.updated_at + self.reuse_interval_s:
                for other in self.tokens.values():
                    if other.session_id == session.id and not other.revoked:
                        other.revoked = True
                        other.updated_at = now
                self.stats.already_used += 1
                return self._error(
                    request, 400, "refresh_token_already_used", "Invalid Refresh Token: Already Used"
                )
        if issued is None:
            token.revoked = True
            token.updated_at = now
            issued = self._new_refresh_token(session, parent=token.token).token
        self.stats.refreshed += 1
        return web.json_response(self._token_response(user, session, issued))

    async def _user(self, request: web.Request) -> web.Response:
        denied = self._check_apikey(request)
        if denied is not None:
            return denied
        auth = request.headers.get("Authorization", "")
        try:
            claims = self.decode(auth.removeprefix("Bearer ").strip(), verify_exp=True)
        except jwt.PyJWTError:
            return self._error(request, 403, "bad_jwt", "invalid JWT")
        session = self.sessions.get(str(claims.get("session_id")))
        if session is None:
            return self._error(
                request, 403, "session_not_found", "Session from session_id claim in JWT does not exist"
            )
        return web.json_response(self.users[session.user_id].as_json(self.clock()))

    async def _jwks(self, request: web.Request) -> web.Response:
        return web.json_response(self.public_jwks())

    # -- helpers -----------------------------------------------------------------------------

    def _check_apikey(self, request: web.Request) -> web.Response | None:
        key = request.headers.get("apikey") or request.query.get("apikey")
        if not key:
            return web.json_response(
                {
                    "message": "No API key found in request",
                    "hint": "No `apikey` request header or url param was found.",
                },
                status=401,
            )
        if not secrets.compare_digest(key.encode(), self.anon_key.encode()):
            return web.json_response(
                {
                    "message": "Invalid API key",
                    "hint": "Double check your Supabase `anon` or `service_role` API key.",
                },
                status=401,
            )
        return None

    def _error(self, request: web.Request, status: int, code: str, message: str) -> web.Response:
        self.stats.errors[code] += 1
        headers = {"x-sb-error-code": code}
        if request.headers.get(API_VERSION_HEADER, "") >= API_VERSION_2024:
            headers[API_VERSION_HEADER] = API_VERSION_2024
            return web.json_response({"code": code, "message": message}, status=status, headers=headers)
        return web.json_response(
            {"code": status, "error_code": code, "msg": message}, status=status, headers=headers
        )

    def _fault_response(self, fault: _Fault) -> web.Response:
        headers = {"Retry-After": fault.retry_after} if fault.retry_after is not None else {}
        if fault.body is not None:
            return web.Response(status=fault.status, body=fault.body, headers=headers)
        code = "over_request_rate_limit" if fault.status == 429 else "unexpected_failure"
        self.stats.errors[code] += 1
        return web.json_response(
            {"code": fault.status, "error_code": code, "msg": "injected failure"},
            status=fault.status,
            headers=headers,
        )

    def _find_user(self, email: str) -> User | None:
        return next((u for u in self.users.values() if u.email == email), None)

    def _active_token(self, session_id: str) -> RefreshToken | None:
        live = [t for t in self.tokens.values() if t.session_id == session_id and not t.revoked]
        return max(live, key=lambda t: t.serial) if live else None

    def _new_refresh_token(self, session: Session, *, parent: str | None) -> RefreshToken:
        self._serial += 1
        alphabet = string.ascii_lowercase + string.digits
        value = "".join(secrets.choice(alphabet) for _ in range(12))  # crypto.SecureAlphanumeric(12)
        token = RefreshToken(
            self._serial, value, session.user_id, session.id, parent, updated_at=self.clock()
        )
        self.tokens[value] = token
        return token

    def _token_response(self, user: User, session: Session, refresh_token: str) -> dict[str, Any]:
        now = self.clock()
        issued_at = int(now)
        expires_at = issued_at + self.access_token_ttl_s
        claims = {
            "iss": self.issuer,
            "sub": user.id,
            "aud": "authenticated",
            "exp": expires_at,
            "iat": issued_at,
            "email": user.email,
            "phone": "",
            "app_metadata": {"provider": "email", "providers": ["email"]},
            "user_metadata": user.user_metadata,
            "role": "authenticated",
            "aal": "aal1",
            "amr": [{"method": "password", "timestamp": int(session.created_at)}],
            "session_id": session.id,
            "is_anonymous": False,
        }
        if self._private_key is None:
            assert self.jwt_secret is not None
            access_token = jwt.encode(claims, self.jwt_secret, algorithm="HS256", headers={"typ": "JWT"})
        else:
            access_token = jwt.encode(
                claims, self._private_key, algorithm=self.algorithm, headers={"kid": self.kid, "typ": "JWT"}
            )
        return {
            "access_token": access_token,
            "token_type": "bearer",
            "expires_in": expires_at - int(now),
            "expires_at": expires_at,
            "refresh_token": refresh_token,
            "user": user.as_json(now),
        }


def _iso(epoch_s: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(epoch_s)) + "Z"
