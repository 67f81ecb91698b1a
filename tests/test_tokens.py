"""Tests for cookieguard/tokens/claims.py (claim reading, pure) and cookieguard/tokens/verifier.py (verification
against a real JWKS server)."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import jwt
import pytest
from aiohttp import web
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from hypothesis import given
from hypothesis import strategies as st
from structlog.testing import capture_logs

from cookieguard.config import VerifyConfig
from cookieguard.tokens.claims import (
    MAX_TOKEN_CHARS,
    Claims,
    ClaimsReader,
    Expectations,
    TokenKind,
    check_claims,
    clock_drift_ms,
    decode_claims,
    is_cacheable,
    session_id,
)
from cookieguard.tokens.providers import ProviderConfig, RefreshUnavailable
from cookieguard.tokens.providers.cognito import CognitoConfig
from cookieguard.tokens.providers.oidc import OidcConfig
from cookieguard.tokens.providers.supabase import SupabaseConfig
from cookieguard.tokens.verifier import TokenStatus, TokenVerifier, parse_jwks

NOW = 1_750_000_000.0
CLIENT_ID = "3n4b5urk1ft4fl3mg5e62d9ado"
POOL_ID = "us-east-1_AbCdEf123"
COGNITO = CognitoConfig(client_id=CLIENT_ID, user_pool_id=POOL_ID)
COGNITO_ISS = f"https://cognito-idp.us-east-1.amazonaws.com/{POOL_ID}"
OIDC_ISSUER = "https://idp.example.com"
OIDC = OidcConfig(
    client_id="web-app",
    client_secret="s3cret",
    issuer=OIDC_ISSUER,
    token_endpoint=f"{OIDC_ISSUER}/token",
)

# ---------------------------------------------------------------------------------------------
# Keys and tokens
# ---------------------------------------------------------------------------------------------


def _rsa_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


KEY_1 = _rsa_key()
KEY_2 = _rsa_key()  # published only after a "rotation"
ATTACKER_KEY = _rsa_key()


def jwk(private_key: rsa.RSAPrivateKey, kid: str, **extra: Any) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(private_key.public_key()))
    data.update({"kid": kid, "alg": "RS256", "use": "sig"}, **extra)
    return data


def sign(
    payload: dict[str, Any],
    key: rsa.RSAPrivateKey = KEY_1,
    kid: str | None = "k1",
    alg: str = "RS256",
) -> str:
    headers = {"kid": kid} if kid is not None else {}
    return jwt.encode(payload, key, algorithm=alg, headers=headers)


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def unsigned(header: dict[str, Any], payload: Any, signature: bytes = b"") -> str:
    return ".".join(
        [b64url(json.dumps(header).encode()), b64url(json.dumps(payload).encode()), b64url(signature)]
    )


def cognito_access(**overrides: Any) -> dict[str, Any]:
    claims = {
        "sub": "aaaa-bbbb",
        "iss": COGNITO_ISS,
        "client_id": CLIENT_ID,
        "origin_jti": "x",
        "event_id": "y",
        "token_use": "access",
        "scope": "aws.cognito.signin.user.admin",
        "auth_time": int(NOW) - 100,
        "exp": int(NOW) + 3600,
        "iat": int(NOW) - 100,
        "jti": "j",
        "username": "alice@example.com",
    }
    claims.update(overrides)
    return {k: v for k, v in claims.items() if v is not None}


def cognito_id(**overrides: Any) -> dict[str, Any]:
    claims = {
        "sub": "aaaa-bbbb",
        "aud": CLIENT_ID,
        "iss": COGNITO_ISS,
        "token_use": "id",
        "cognito:username": "alice@example.com",
        "email": "alice@example.com",
        "auth_time": int(NOW) - 100,
        "exp": int(NOW) + 3600,
        "iat": int(NOW) - 100,
    }
    claims.update(overrides)
    return {k: v for k, v in claims.items() if v is not None}


def oidc_claims(**overrides: Any) -> dict[str, Any]:
    claims = {"sub": "u1", "iss": OIDC_ISSUER, "exp": int(NOW) + 300, "iat": int(NOW) - 10}
    claims.update(overrides)
    return {k: v for k, v in claims.items() if v is not None}


# ---------------------------------------------------------------------------------------------
# decode_claims and ClaimsReader: the pure part
# ---------------------------------------------------------------------------------------------


def test_decode_claims_of_a_cognito_access_token() -> None:
    claims = decode_claims(sign(cognito_access()), COGNITO.user_claims)
    assert claims == Claims(
        exp=NOW + 3600,
        iat=NOW - 100,
        sub="aaaa-bbbb",
        user="alice@example.com",
        client_id=CLIENT_ID,
        iss=COGNITO_ISS,
        token_use="access",
        alg="RS256",
        kid="k1",
        typ="JWT",
    )


def test_decode_claims_of_an_id_token_takes_cognito_username_and_normalises_aud() -> None:
    claims = decode_claims(sign(cognito_id(email="alice.mail@example.com")), COGNITO.user_claims)
    assert claims is not None
    assert claims.user == "alice@example.com"  # `cognito:username`, not the email
    assert claims.aud == (CLIENT_ID,)
    listed = decode_claims(
        sign(oidc_claims(aud=["api", 7, "web-app"], preferred_username="bob")), OIDC.user_claims
    )
    assert listed is not None
    assert listed.aud == ("api", "web-app")
    assert listed.user == "bob"


@pytest.mark.parametrize(
    ("provider", "user"),
    [
        (CognitoConfig, "carol"),
        (OidcConfig, "bob"),
        (SupabaseConfig, "bob@example.test"),
    ],
    ids=lambda value: getattr(value, "kind", value),
)
def test_the_user_is_the_first_of_the_providers_own_claims(provider: type[ProviderConfig], user: str) -> None:
    """One token carrying every kind's claims: each provider reads its own, in its order."""
    every = {"username": "carol", "preferred_username": "bob", "email": "bob@example.test"}
    token = sign(oidc_claims(**every))
    assert (claims := decode_claims(token, provider.user_claims)) is not None and claims.user == user
    assert ClaimsReader(user_claims=provider.user_claims).read(token) == claims
    # Without a chain nothing names the user (the plan then reports `sub`); an ill-typed claim
    # is skipped for the next one.
    assert (bare := decode_claims(token)) is not None and bare.user is None
    assert (odd := decode_claims(sign(oidc_claims(preferred_username=7, email="e@x")), OIDC.user_claims))
    assert odd.user == "e@x"


def test_decode_claims_ignores_ill_typed_claims() -> None:
    claims = decode_claims(
        unsigned(
            {"alg": 5, "kid": ["x"]},
            {"exp": "1700000000", "iat": True, "nbf": 10**400, "sub": 42, "aud": {"a": 1}},
        )
    )
    assert claims == Claims()
    not_finite = decode_claims(_with_raw_payload(b'{"exp": NaN, "iat": Infinity, "nbf": -Infinity}'))
    assert not_finite == Claims(alg="RS256")


def _with_raw_payload(payload: bytes) -> str:
    return ".".join([b64url(b'{"alg": "RS256"}'), b64url(payload), "sig"])


GARBAGE = [
    "",
    ".",
    "..",
    "abc",
    "a.b",
    "a.b.c.d",
    "a.b.c.d.e",  # a JWE: five parts we cannot read
    "!!!.###.$$$",
    "eyJhbGciOiJSUzI1NiJ9.not base64!.x",
    f"{b64url(b'not json')}.{b64url(b'{}')}.x",
    f"{b64url(b'{}')}.{b64url(b'not json')}.x",
    f"{b64url(b'{}')}.{b64url(b'[1, 2]')}.x",
    f"{b64url(b'{}')}.{b64url(b'null')}.x",
    _with_raw_payload(b"\xff\xfe"),
    _with_raw_payload(b"[" * 10_000),  # deep nesting: RecursionError inside json
    _with_raw_payload(b"{" * 5_000),
    _with_raw_payload(b'{"exp": ' + b"9" * 5_000 + b"}"),  # past Python's int-digits limit
    "é.ü.ß",
    "\x00.\x00.\x00",
    "a" * (MAX_TOKEN_CHARS + 1),
    sign(cognito_access()) + "x" * MAX_TOKEN_CHARS,
]


@pytest.mark.parametrize("token", GARBAGE, ids=range(len(GARBAGE)))
def test_decode_claims_of_garbage_is_none(token: str) -> None:
    assert decode_claims(token) is None
    assert decode_claims(token) is None


def test_decode_claims_of_non_strings_is_none() -> None:
    assert decode_claims(None) is None  # type: ignore[arg-type]
    assert decode_claims(b"a.b.c") is None  # type: ignore[arg-type]


@given(st.text(max_size=300))
def test_decode_claims_never_raises_on_any_text(text: str) -> None:
    result = decode_claims(text)
    assert result is None or isinstance(result, Claims)


_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=10),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4)
    ),
    max_leaves=12,
)


@given(header=_json, payload=_json, signature=st.binary(max_size=20))
def test_decode_claims_never_raises_on_any_well_formed_segments(
    header: Any, payload: Any, signature: bytes
) -> None:
    token = unsigned(header, payload, signature)
    result = decode_claims(token)
    assert (result is not None) == (isinstance(header, dict) and isinstance(payload, dict))


def test_claims_reader_memoises_per_token() -> None:
    reader = ClaimsReader()
    token = sign(cognito_access(jti="memo"))
    first = reader.read(token)
    assert first is not None and first == decode_claims(token)
    assert reader.read(token) is first
    assert reader.read("".join(list(token))) is first  # an equal string from another cookie parse
    assert ClaimsReader().read(token) is not first  # each reader its own memo: nothing process-wide


def test_claims_reader_is_bounded() -> None:
    reader = ClaimsReader(size=3)
    tokens = [sign(cognito_access(jti=f"bounded-{i}")) for i in range(4)]
    firsts = [reader.read(t) for t in tokens]
    assert len(reader) == 3
    assert reader.read(tokens[0]) is not firsts[0]  # the least recently used went first
    assert reader.read(tokens[3]) is firsts[3]


def test_claims_reader_refuses_non_strings_and_huge_tokens() -> None:
    reader = ClaimsReader()
    assert reader.read(None) is None  # type: ignore[arg-type]
    assert reader.read("a." * MAX_TOKEN_CHARS) is None
    assert len(reader) == 0


def test_session_id_is_a_short_hash_not_the_token() -> None:
    assert session_id("refresh-token") == hashlib.sha256(b"refresh-token").hexdigest()[:12]
    assert len(session_id("x")) == 12
    assert session_id("a") != session_id("b")


def test_clock_drift_ms() -> None:
    assert clock_drift_ms(Claims(iat=1000.0), 1000.5) == -500
    assert clock_drift_ms(Claims(iat=1002.0), 1000.0) == 2000
    assert clock_drift_ms(Claims(), 1000.0) == 0


def test_check_claims_leeway_for_nbf_and_iat() -> None:
    expect = Expectations(issuers=None)
    assert check_claims(Claims(exp=NOW, iat=NOW + 200), expect, NOW) is None
    assert check_claims(Claims(exp=NOW, iat=NOW + 400), expect, NOW) == "not_yet_valid"
    assert check_claims(Claims(exp=NOW, nbf=NOW + 400), expect, NOW) == "not_yet_valid"
    assert check_claims(Claims(), expect, NOW) == "no_exp"


def test_parse_jwks_drops_symmetric_and_encryption_keys() -> None:
    document = {
        "keys": [
            {"kty": "oct", "k": b64url(b"secret"), "kid": "sym"},
            jwk(KEY_2, "enc", use="enc"),
            {"kty": "RSA", "kid": "broken", "n": "!!", "e": "AQAB"},
            "not a key",
            jwk(KEY_1, "k1"),
        ]
    }
    assert [k.key_id for k in parse_jwks(document)] == ["k1"]
    bad: Any
    for bad in (None, [], {"keys": []}, {"keys": "x"}, {"keys": [{"kty": "oct", "k": "c2VjcmV0"}]}):
        with pytest.raises(ValueError):
            parse_jwks(bad)


# ---------------------------------------------------------------------------------------------
# TokenVerifier against a real JWKS server
# ---------------------------------------------------------------------------------------------


@dataclass
class FakeClock:
    now: float = NOW

    def __call__(self) -> float:
        return self.now


@dataclass
class Jwks:
    """The IdP's JWKS endpoint, with a switch to break it and a count of the requests it served."""

    keys: list[dict[str, Any]] = field(default_factory=lambda: [jwk(KEY_1, "k1")])
    status: int = 200
    body: bytes | None = None
    fetches: int = 0
    url: str = ""

    async def handle(self, request: web.Request) -> web.StreamResponse:
        self.fetches += 1
        if self.status != 200:
            return web.Response(status=self.status, text="unavailable")
        if self.body is not None:
            return web.Response(body=self.body, content_type="application/json")
        return web.json_response({"keys": self.keys})


@pytest.fixture
async def jwks(aiohttp_server: Any) -> Jwks:
    state = Jwks()
    app = web.Application()
    app.router.add_get("/pool/.well-known/jwks.json", state.handle)
    server = await aiohttp_server(app)
    state.url = str(server.make_url("/pool/.well-known/jwks.json"))
    return state


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as s:
        yield s


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


MakeVerifier = Callable[..., TokenVerifier]


@pytest.fixture
def make_verifier(jwks: Jwks, session: aiohttp.ClientSession, clock: FakeClock) -> MakeVerifier:
    def make(
        provider: ProviderConfig = COGNITO, verify: VerifyConfig | None = None, **kwargs: Any
    ) -> TokenVerifier:
        kwargs.setdefault("jwks_url", jwks.url)
        return TokenVerifier(provider, verify or VerifyConfig(), session, clock=clock, **kwargs)

    return make


async def test_valid_cognito_access_and_id_tokens(make_verifier: MakeVerifier, jwks: Jwks) -> None:
    verifier = make_verifier()
    access = await verifier.check(sign(cognito_access()), kind="access")
    assert access.status is TokenStatus.VALID
    assert access.is_valid and access.reason == "ok"
    assert access.claims is not None and access.claims.user == "alice@example.com"
    identity = await verifier.check(sign(cognito_id(email="alice.mail@example.com")), kind="id")
    assert identity.status is TokenStatus.VALID
    assert identity.claims is not None and identity.claims.aud == (CLIENT_ID,)
    assert identity.claims.user == "alice@example.com"  # `cognito:username`, not the email
    assert jwks.fetches == 1  # fetched lazily, once, for both


async def test_the_verifier_reads_the_user_with_its_providers_claims(make_verifier: MakeVerifier) -> None:
    """The verified payload's user is the provider's (OIDC: `preferred_username` before
    `email`; a `username` claim is Cognito's, not OIDC's), and a shared reader must read the same."""
    verifier = make_verifier(OIDC)
    claims = oidc_claims(
        aud="web-app", username="mallory", preferred_username="bob", email="bob@example.test"
    )
    check = await verifier.check(sign(claims), kind="id")
    assert check.status is TokenStatus.VALID and check.claims is not None and check.claims.user == "bob"
    with pytest.raises(ValueError, match="user_claims"):
        make_verifier(OIDC, claims=ClaimsReader(user_claims=COGNITO.user_claims))


async def test_jwks_is_fetched_only_when_first_needed(make_verifier: MakeVerifier, jwks: Jwks) -> None:
    verifier = make_verifier()
    assert jwks.fetches == 0
    await verifier.check(sign(cognito_access()), kind="access")
    assert jwks.fetches == 1


async def test_expired_token_with_a_good_signature_still_gives_its_claims(
    make_verifier: MakeVerifier,
) -> None:
    verifier = make_verifier()
    result = await verifier.check(
        sign(cognito_access(exp=int(NOW) - 86400, iat=int(NOW) - 90000)), kind="access"
    )
    assert result.status is TokenStatus.VALID
    assert result.claims is not None and result.claims.exp == NOW - 86400


@pytest.mark.parametrize(
    ("kind", "payload", "reason"),
    [
        (
            "access",
            cognito_access(iss="https://cognito-idp.us-east-1.amazonaws.com/us-east-1_Other"),
            "wrong_issuer",
        ),
        ("access", cognito_access(iss=None), "wrong_issuer"),
        ("access", cognito_access(client_id="another-client"), "wrong_client"),
        ("access", cognito_access(client_id=None), "wrong_client"),
        ("access", cognito_id(), "wrong_token_use"),  # an id token presented as an access token
        ("id", cognito_access(), "wrong_token_use"),
        ("id", cognito_id(aud="another-client"), "wrong_audience"),
        ("id", cognito_id(aud=None), "wrong_audience"),
        ("access", cognito_access(exp=None), "no_exp"),
    ],
)
async def test_claims_meant_for_someone_else_are_invalid(
    make_verifier: MakeVerifier, kind: Any, payload: dict[str, Any], reason: str
) -> None:
    result = await make_verifier().check(sign(payload), kind=kind)
    assert result.status is TokenStatus.INVALID
    assert result.reason == reason
    assert result.claims is None


async def test_wrong_signature_is_invalid(make_verifier: MakeVerifier) -> None:
    verifier = make_verifier()
    forged = sign(cognito_access(), key=ATTACKER_KEY, kid="k1")
    assert (await verifier.check(forged, kind="access")).reason == "bad_signature"
    header, _, signature = sign(cognito_access()).split(".")
    tampered = f"{header}.{b64url(json.dumps(cognito_access(username='mallory')).encode())}.{signature}"
    result = await verifier.check(tampered, kind="access")
    assert result.status is TokenStatus.INVALID and result.reason == "bad_signature"


async def test_alg_none_is_refused_without_fetching_keys(make_verifier: MakeVerifier, jwks: Jwks) -> None:
    verifier = make_verifier()
    for alg in ("none", "None", "NONE", ""):
        token = unsigned({"alg": alg, "kid": "k1"}, cognito_access())
        result = await verifier.check(token, kind="access")
        assert result.status is TokenStatus.INVALID and result.reason == "alg_not_allowed"
    assert (await verifier.check(unsigned({"kid": "k1"}, cognito_access()), kind="access")).reason == (
        "alg_not_allowed"
    )
    assert jwks.fetches == 0


def _hs256_with_public_key(payload: dict[str, Any], kid: str) -> str:
    # PyJWT refuses to HMAC with a PEM key, so build the forgery by hand.
    pem = KEY_1.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    signing_input = (
        f"{b64url(json.dumps({'alg': 'HS256', 'kid': kid}).encode())}.{b64url(json.dumps(payload).encode())}"
    )
    return f"{signing_input}.{b64url(hmac.new(pem, signing_input.encode(), hashlib.sha256).digest())}"


async def test_hs256_signed_with_the_public_key_is_refused(make_verifier: MakeVerifier, jwks: Jwks) -> None:
    verifier = make_verifier()
    result = await verifier.check(_hs256_with_public_key(cognito_access(), "k1"), kind="access")
    assert result.status is TokenStatus.INVALID and result.reason == "alg_not_allowed"
    # Also when the key set itself is sloppy: a key without `alg`, and a symmetric key.
    jwks.keys = [
        {k: v for k, v in jwk(KEY_1, "k1").items() if k != "alg"},
        {"kty": "oct", "kid": "k1-hmac", "k": b64url(b"shared")},
    ]
    fresh = make_verifier()
    assert (await fresh.check(_hs256_with_public_key(cognito_access(), "k1"), kind="access")).reason == (
        "alg_not_allowed"
    )
    assert (await fresh.check(sign(cognito_access()), kind="access")).is_valid


async def test_rs_token_with_a_key_declared_for_another_alg_is_refused(
    make_verifier: MakeVerifier, jwks: Jwks
) -> None:
    jwks.keys = [jwk(KEY_1, "k1", alg="RS512")]
    result = await make_verifier().check(sign(cognito_access()), kind="access")
    assert result.status is TokenStatus.INVALID and result.reason == "alg_not_allowed"


async def test_unknown_kid_refetches_once_then_is_rate_limited(
    make_verifier: MakeVerifier, jwks: Jwks, clock: FakeClock
) -> None:
    verifier = make_verifier()
    assert (await verifier.check(sign(cognito_access()), kind="access")).is_valid
    assert jwks.fetches == 1
    # The keys were fetched just now: a kid missing from them is unknown, no need to look again.
    assert (
        await verifier.check(sign(cognito_access(), kid="made-up-0"), kind="access")
    ).reason == "unknown_kid"
    assert jwks.fetches == 1

    clock.now += 61
    result = await verifier.check(sign(cognito_access(), kid="made-up-1"), kind="access")
    assert result.status is TokenStatus.INVALID and result.reason == "unknown_kid"
    assert jwks.fetches == 2  # one look for a freshly rotated key
    for i in range(5):
        clock.now += 10
        result = await verifier.check(sign(cognito_access(), kid=f"made-up-{i + 2}"), kind="access")
        assert result.reason == "unknown_kid"
    assert jwks.fetches == 2  # no more within the minute

    clock.now += 15  # 65 s after the last fetch
    await verifier.check(sign(cognito_access(), kid="made-up-9"), kind="access")
    assert jwks.fetches == 3


async def test_a_rotated_in_key_is_picked_up(
    make_verifier: MakeVerifier, jwks: Jwks, clock: FakeClock
) -> None:
    verifier = make_verifier()
    assert (await verifier.check(sign(cognito_access()), kind="access")).is_valid
    rotated = sign(cognito_access(), key=KEY_2, kid="k2")
    clock.now += 120
    jwks.keys = [jwk(KEY_1, "k1"), jwk(KEY_2, "k2")]
    assert (await verifier.check(rotated, kind="access")).is_valid
    assert jwks.fetches == 2


async def test_unknown_kid_verdict_is_not_cached(
    make_verifier: MakeVerifier, jwks: Jwks, clock: FakeClock
) -> None:
    verifier = make_verifier()
    token = sign(cognito_access(), key=KEY_2, kid="k2")
    assert (await verifier.check(token, kind="access")).reason == "unknown_kid"
    jwks.keys = [jwk(KEY_1, "k1"), jwk(KEY_2, "k2")]
    clock.now += 61
    assert (await verifier.check(token, kind="access")).is_valid


@pytest.mark.parametrize("failure", ["http_503", "not_json", "no_keys", "connection_refused"])
async def test_jwks_down_means_unknown_not_invalid(
    make_verifier: MakeVerifier, jwks: Jwks, clock: FakeClock, failure: str, unused_tcp_port: int
) -> None:
    kwargs: dict[str, Any] = {}
    if failure == "http_503":
        jwks.status = 503
    elif failure == "not_json":
        jwks.body = b"<html>maintenance</html>"
    elif failure == "no_keys":
        jwks.keys = []
    else:
        kwargs["jwks_url"] = f"http://127.0.0.1:{unused_tcp_port}/jwks.json"
    verifier = make_verifier(**kwargs)
    token = sign(cognito_access())
    with capture_logs() as logs:
        result = await verifier.check(token, kind="access")
    assert result.status is TokenStatus.UNKNOWN
    assert result.reason == "jwks_unavailable"
    # The unverified claims, so the proxy can still decide whether to refresh.
    assert result.claims is not None and result.claims.exp == NOW + 3600
    assert [e["event"] for e in logs] == ["jwks_fetch"]
    assert logs[0]["outcome"] == "failed"
    assert token not in repr(logs)

    if failure == "connection_refused":
        return
    # UNKNOWN is not cached, and retries are spaced out.
    assert (await verifier.check(token, kind="access")).status is TokenStatus.UNKNOWN
    assert jwks.fetches == 1
    jwks.status, jwks.body, jwks.keys = 200, None, [jwk(KEY_1, "k1")]
    clock.now += 6
    assert (await verifier.check(token, kind="access")).is_valid
    assert jwks.fetches == 2


async def test_unknown_kid_while_jwks_is_down_is_unknown(
    make_verifier: MakeVerifier, jwks: Jwks, clock: FakeClock
) -> None:
    verifier = make_verifier()
    assert (await verifier.check(sign(cognito_access()), kind="access")).is_valid
    jwks.status = 503
    clock.now += 61
    result = await verifier.check(sign(cognito_access(), key=KEY_2, kid="k2"), kind="access")
    assert result.status is TokenStatus.UNKNOWN  # it may be a key the IdP just rotated in
    # Known keys keep working while the IdP is down.
    assert (await verifier.check(sign(cognito_access(jti="other")), kind="access")).is_valid


async def test_old_keys_keep_working_when_the_periodic_reread_fails(
    make_verifier: MakeVerifier, jwks: Jwks, clock: FakeClock
) -> None:
    verifier = make_verifier()
    assert (await verifier.check(sign(cognito_access(jti="a")), kind="access")).is_valid
    jwks.status = 503
    clock.now += 7200  # keys are stale: re-read, fail, fall back to the old ones
    assert (await verifier.check(sign(cognito_access(jti="b")), kind="access")).is_valid
    assert jwks.fetches == 2


async def test_withdrawn_key_stops_verifying_new_tokens_after_max_age(
    make_verifier: MakeVerifier, jwks: Jwks, clock: FakeClock
) -> None:
    verifier = make_verifier()
    assert (await verifier.check(sign(cognito_access(jti="a")), kind="access")).is_valid
    jwks.keys = [jwk(KEY_2, "k2")]
    clock.now += 3601
    assert (await verifier.check(sign(cognito_access(jti="b")), kind="access")).reason == "unknown_kid"


async def test_concurrent_checks_share_one_jwks_fetch(make_verifier: MakeVerifier, jwks: Jwks) -> None:
    import asyncio

    verifier = make_verifier()
    tokens = [sign(cognito_access(jti=str(i))) for i in range(20)]
    results = await asyncio.gather(*(verifier.check(t, kind="access") for t in tokens))
    assert all(r.is_valid for r in results)
    assert jwks.fetches == 1


async def test_a_cancelled_check_does_not_cancel_the_shared_fetch(
    make_verifier: MakeVerifier, jwks: Jwks
) -> None:
    import asyncio

    verifier = make_verifier()
    first = asyncio.create_task(verifier.check(sign(cognito_access(jti="1")), kind="access"))
    second = asyncio.create_task(verifier.check(sign(cognito_access(jti="2")), kind="access"))
    await asyncio.sleep(0)
    first.cancel()
    assert (await second).is_valid
    assert jwks.fetches == 1
    await verifier.close()


async def test_verdicts_are_cached_per_token(make_verifier: MakeVerifier) -> None:
    verifier = make_verifier()
    token = sign(cognito_access())
    assert verifier.peek(token, "access") is None
    first = await verifier.check(token, kind="access")
    for _ in range(100):
        assert await verifier.check(token, kind="access") is first
    assert verifier.peek(token, "access") is first
    assert verifier.signature_checks == 1
    # Per kind: the same token is judged separately as an id token.
    assert (await verifier.check(token, kind="id")).reason == "wrong_token_use"
    assert verifier.signature_checks == 2
    # Invalid verdicts are cached too.
    forged = sign(cognito_access(), key=ATTACKER_KEY)
    await verifier.check(forged, kind="access")
    await verifier.check(forged, kind="access")
    assert verifier.signature_checks == 3


async def test_verdict_cache_is_bounded(make_verifier: MakeVerifier) -> None:
    verifier = make_verifier(cache_size=3)
    tokens = [sign(cognito_access(jti=str(i))) for i in range(5)]
    for token in tokens:
        await verifier.check(token, kind="access")
    assert [verifier.peek(t, "access") is not None for t in tokens] == [False, False, True, True, True]


async def test_not_yet_valid_is_invalid_and_not_cached(make_verifier: MakeVerifier, clock: FakeClock) -> None:
    verifier = make_verifier()
    token = sign(cognito_access(nbf=int(NOW) + 3600, iat=int(NOW) + 3600, exp=int(NOW) + 7200))
    assert (await verifier.check(token, kind="access")).reason == "not_yet_valid"
    clock.now += 3600
    assert (await verifier.check(token, kind="access")).is_valid


async def test_token_without_kid_uses_the_only_matching_key(make_verifier: MakeVerifier, jwks: Jwks) -> None:
    verifier = make_verifier()
    assert (await verifier.check(sign(cognito_access(), kid=None), kind="access")).is_valid
    jwks.keys = [jwk(KEY_1, "k1"), jwk(KEY_2, "k2")]
    ambiguous = make_verifier()
    assert (await ambiguous.check(sign(cognito_access(), kid=None), kind="access")).reason == "unknown_kid"


async def test_garbage_tokens_never_raise(make_verifier: MakeVerifier) -> None:
    verifier = make_verifier()
    kinds: tuple[TokenKind, ...] = ("access", "id")
    for token in GARBAGE:
        for kind in kinds:
            result = await verifier.check(token, kind=kind)
            assert result.status is TokenStatus.INVALID and result.claims is None


async def test_cognito_jwks_url_defaults_to_the_pool(session: aiohttp.ClientSession) -> None:
    verifier = TokenVerifier(COGNITO, VerifyConfig(), session)
    assert verifier.jwks_url == f"{COGNITO_ISS}/.well-known/jwks.json"
    assert "amazonaws" in repr(verifier)


# -- OIDC ---------------------------------------------------------------------------------------


async def test_opaque_oidc_access_token(make_verifier: MakeVerifier, jwks: Jwks) -> None:
    verifier = make_verifier(OIDC)
    result = await verifier.check("2YotnFZFEjr1zCsicMWpAA", kind="access")
    assert result.status is TokenStatus.OPAQUE and result.claims is None
    # Opaque is allowed only there: Cognito access tokens and id tokens are JWTs.
    assert (await verifier.check("2YotnFZFEjr1zCsicMWpAA", kind="id")).reason == "not_a_jwt"
    cognito = make_verifier(COGNITO)
    assert (await cognito.check("2YotnFZFEjr1zCsicMWpAA", kind="access")).reason == "not_a_jwt"
    assert jwks.fetches == 0


async def test_oidc_access_token_audience_checked_only_when_configured(make_verifier: MakeVerifier) -> None:
    for_api = sign(oidc_claims(aud="https://api.example.com"), kid="k1")
    no_aud = sign(oidc_claims(), kid="k1")
    other = sign(oidc_claims(aud=["https://other.example.com"]), kid="k1")

    unchecked = make_verifier(OIDC, VerifyConfig(audience=None))
    for token in (for_api, no_aud, other):
        assert (await unchecked.check(token, kind="access")).is_valid

    checked = make_verifier(OIDC, VerifyConfig(audience="https://api.example.com"))
    assert (await checked.check(for_api, kind="access")).is_valid
    assert (await checked.check(no_aud, kind="access")).reason == "wrong_audience"
    assert (await checked.check(other, kind="access")).reason == "wrong_audience"


async def test_oidc_id_token_audience_and_azp(make_verifier: MakeVerifier) -> None:
    verifier = make_verifier(OIDC)
    assert (await verifier.check(sign(oidc_claims(aud="web-app")), kind="id")).is_valid
    assert (
        await verifier.check(sign(oidc_claims(aud=["web-app", "api"], azp="web-app")), kind="id")
    ).is_valid
    assert (await verifier.check(sign(oidc_claims(aud="api")), kind="id")).reason == "wrong_audience"
    assert (await verifier.check(sign(oidc_claims(aud=["web-app"], azp="evil")), kind="id")).reason == (
        "wrong_audience"
    )


async def test_oidc_issuer(make_verifier: MakeVerifier) -> None:
    verifier = make_verifier(OIDC)
    assert (await verifier.check(sign(oidc_claims(iss=OIDC_ISSUER + "/")), kind="access")).is_valid
    assert (
        await verifier.check(sign(oidc_claims(iss="https://evil.example.com")), kind="access")
    ).reason == ("wrong_issuer")
    # Only a token endpoint configured: the issuer is unknown and not checked.
    endpoint_only = OidcConfig(client_id="web-app", token_endpoint=f"{OIDC_ISSUER}/token")
    lenient = make_verifier(endpoint_only)
    assert (
        await lenient.check(sign(oidc_claims(iss="https://anything.example.com")), kind="access")
    ).is_valid


async def test_the_jwks_url_is_resolved_when_first_needed_and_retried_after_a_failure(
    jwks: Jwks, session: aiohttp.ClientSession, clock: FakeClock
) -> None:
    """docs/providers/oidc.md "Any OIDC provider", its start-up item: the verifier is built before the IdP can tell where its keys are;
    until it can, tokens are UNKNOWN (never INVALID), and it asks again after the retry interval."""
    answers: list[str | None] = []

    async def resolve() -> str | None:
        answers.append(jwks.url if clock.now >= NOW + 10 else None)
        if answers[-1] is None:
            raise RefreshUnavailable("discovery_connection_error")
        return answers[-1]

    verifier = TokenVerifier(
        OIDC, VerifyConfig(), session, resolve_jwks_url=resolve, clock=clock, retry_after_failure_s=5.0
    )
    assert verifier.jwks_url is None and answers == []  # nothing asked at construction
    token = sign(oidc_claims())
    down = await verifier.check(token, kind="access")
    assert (down.status, down.reason) == (TokenStatus.UNKNOWN, "jwks_unavailable")
    assert (await verifier.check(token, kind="access")).status is TokenStatus.UNKNOWN
    assert len(answers) == 1 and jwks.fetches == 0  # the second check waited for the interval
    clock.now += 10
    assert (await verifier.check(token, kind="access")).is_valid
    assert verifier.jwks_url == jwks.url and len(answers) == 2 and jwks.fetches == 1


async def test_no_jwks_url_at_all_leaves_tokens_unknown(session: aiohttp.ClientSession) -> None:
    """Only a token endpoint and no jwks_url: nothing can verify a signature, but the proxy runs
    (tokens UNKNOWN: forwarded, refreshed on their unverified expiry) instead of failing to start."""
    endpoint_only = OidcConfig(client_id="web-app", token_endpoint=f"{OIDC_ISSUER}/token")
    verifier = TokenVerifier(endpoint_only, VerifyConfig(), session)
    check = await verifier.check(sign(oidc_claims()), kind="access")
    assert check.status is TokenStatus.UNKNOWN and check.claims is not None
    assert verifier.jwks_fetches == 0


# -- verify.signature: false --------------------------------------------------------------------


async def test_without_signature_checks_claims_come_from_decode_claims(
    make_verifier: MakeVerifier, jwks: Jwks
) -> None:
    verifier = make_verifier(verify=VerifyConfig(signature=False))
    forged = sign(cognito_access(client_id="whatever"), key=ATTACKER_KEY)
    result = await verifier.check(forged, kind="access")
    assert result.status is TokenStatus.VALID and result.reason == "unverified"
    assert result.claims == decode_claims(forged, COGNITO.user_claims)
    assert (await verifier.check("garbage", kind="access")).reason == "not_a_jwt"
    assert jwks.fetches == 0 and verifier.signature_checks == 0


# -- no token leaks -----------------------------------------------------------------------------


async def test_results_and_claims_hold_no_token(make_verifier: MakeVerifier) -> None:
    token = sign(cognito_access())
    result = await make_verifier().check(token, kind="access")
    header, payload, signature = token.split(".")
    for part in (header, payload, signature):
        assert part not in repr(result)


# ---------------------------------------------------------------------------------------------
# Cost, printed with -s (never asserted: machines differ)
# ---------------------------------------------------------------------------------------------


# -- what the caches may hold (docs/security.md "Threat model") ---------------------------------------


def _big_none_token(n: int, size: int = 16_000) -> str:
    # What the issue measured: 16 KB alg:none tokens with their bulk in a claim we keep (`sub`).
    token = unsigned({"alg": "none"}, cognito_access(sub=f"{n}-" + "x" * (size * 3 // 4 - 400)))
    return token[:MAX_TOKEN_CHARS]


async def test_alg_none_tokens_never_grow_the_caches(make_verifier: MakeVerifier, jwks: Jwks) -> None:
    reader = ClaimsReader(user_claims=COGNITO.user_claims)
    verifier = make_verifier(claims=reader)
    for n in range(1_000):
        token = _big_none_token(n)
        assert reader.read(token) is not None  # still read (the proxy judges it), never remembered
        assert (await verifier.check(token, kind="access")).reason == "alg_not_allowed"
    assert len(reader) == 0
    # The verdicts are remembered without claims: a key and a shared reason, not the token's bulk.
    cached = [verifier.peek(_big_none_token(n), "access") for n in range(1_000)]
    assert all(check is not None and check.claims is None for check in cached)
    assert jwks.fetches == 0


async def test_claims_are_remembered_only_for_sane_tokens(make_verifier: MakeVerifier) -> None:
    normal = sign(cognito_access(jti="sane"))
    huge_sub = sign(cognito_access(sub="s" * 3_000))
    huge_token = sign(cognito_access(padding="p" * 9_000))
    many_auds = unsigned({"alg": "RS256", "kid": "k1"}, oidc_claims(aud=[f"aud-{i:04}" for i in range(300)]))
    reader = ClaimsReader()
    for token in (normal, huge_sub, huge_token, many_auds):
        assert reader.read(token) is not None
    assert len(reader) == 1
    assert reader.read(normal) is reader.read(normal)
    assert reader.read(huge_sub) is not reader.read(huge_sub)
    # A verdict with claims follows the same rule when verify.signature is off.
    verifier = make_verifier(verify=VerifyConfig(signature=False))
    for token in (normal, huge_sub, unsigned({"alg": "none"}, cognito_access(jti="unverified"))):
        assert (await verifier.check(token, kind="access")).reason == "unverified"
    assert verifier.peek(normal, "access") is not None
    assert verifier.peek(huge_sub, "access") is None


@pytest.mark.parametrize("alg", ["none", "HS256", None])
def test_claims_of_a_token_that_cannot_pass_the_alg_check_are_not_cacheable(alg: str | None) -> None:
    header = {"alg": alg} if alg else {}
    token = unsigned(header, cognito_access())
    assert not is_cacheable(token, decode_claims(token))
    assert is_cacheable("opaque-token", None)
