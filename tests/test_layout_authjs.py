"""cookieguard/session/layouts/authjs.py against the real Auth.js (tests/authjs_node, Node): @auth/core
0.41.3 for v5 and next-auth 4.24.15 for v4.

Both directions: a session cookie the library encodes is read by the codec, and what the codec
writes back is decoded and accepted by the library (its `decode`, and its `getToken`, which joins
chunks from a Cookie header), with every claim preserved after a token-field replacement. Chunk
writes are compared with the library's own `SessionStore.chunk`, the chunk join with its
`SessionStore.value`.
"""

from __future__ import annotations

import base64
import json
import math
import time
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from joserfc import jwe
from joserfc.jwk import OctKey

from cookieguard.session.layouts.authjs import (
    CHUNK_SIZE,
    ENC_CBC,
    ENC_GCM,
    CookieWrites,
    Keys,
    TokenFields,
    cookie_writes,
    decrypt,
    derive_key,
    encrypt,
    find_session_cookies,
    flagged,
    is_flagged,
    key_id,
    read_session,
    read_tokens,
    session_names,
    split_chunks,
    with_tokens,
    write_session,
)
from tests.support.authjs import authjs, needs_node

V5 = "authjs.session-token"
V4 = "next-auth.session-token"
SECRET = "a-long-random-app-secret-0123456789"
OLD_SECRET = "the-previous-app-secret-9876543210"
OTHER_SECRET = "somebody-else's-secret-000000000000"
V4_TUTORIAL = TokenFields(
    access_token="accessToken",
    refresh_token="refreshToken",
    expires_at="accessTokenExpires",
    expires_at_unit="ms",
    error="error",
    error_value="RefreshAccessTokenError",
)


def guide_token(**extra: Any) -> dict[str, Any]:
    """What the refresh guide's jwt callback keeps, plus the app's own fields."""
    return {
        "name": "Ada Lovelace",
        "email": "ada@example.test",
        "picture": None,
        "sub": "user-1",
        "access_token": "at-1",
        "refresh_token": "rt-1",
        "expires_at": int(time.time()) + 3600,
        "roles": ["admin", "ops"],
        "profile": {"locale": "de", "bio": "Grüße, 世界"},
        **extra,
    }


def big_token(size: int) -> dict[str, Any]:
    # The guide keeps an id_token too in many apps; big claims are what makes Auth.js chunk.
    return guide_token(id_token="x" * size)


def chunked_token(version: int, chunks: int) -> dict[str, Any]:
    """Claims whose JWE fills `chunks` cookies (base64url makes 4 characters of 3 bytes)."""
    return big_token(max(int((chunks - 0.5) * CHUNK_SIZE[version] * 3 / 4) - 500, 0) if chunks > 1 else 10)


def cookie_header(pairs: list[tuple[str, str]]) -> str:
    return "; ".join(f"{n}={v}" for n, v in pairs)


def library_writes(answer: dict[str, Any]) -> CookieWrites:
    """SessionStore.chunk's cookies as sets and deletions."""
    cookies = answer["cookies"]
    return CookieWrites(
        set=[(c["name"], c["value"]) for c in cookies if c["max_age"] != 0],
        delete=[c["name"] for c in cookies if c["max_age"] == 0],
        secure=False,
    )


# -------------------------------------------------------------------------------------------
# The library encrypts -> cookieguard reads
# -------------------------------------------------------------------------------------------


@needs_node
@pytest.mark.parametrize(
    ("version", "name"), [(5, V5), (5, "__Secure-" + V5), (4, V4), (4, "__Secure-" + V4)]
)
async def test_reads_what_the_library_encodes(version: int, name: str) -> None:
    token = guide_token()
    [encoded] = await authjs(
        [{"op": "encode", "version": version, "secret": SECRET, "salt": name, "token": token}]
    )
    keys = Keys(version, [SECRET])  # type: ignore[arg-type]
    session = read_session(keys, [("theme", "dark"), (name, encoded["jwt"])], time.time())
    assert session is not None
    assert session.cookies.name == name
    assert session.cookies.cookie_names == (name,)
    assert session.jwt.enc == (ENC_CBC if version == 5 else ENC_GCM)
    assert session.jwt.has_kid == (version == 5)
    # The library stamps iat, exp (30 days) and jti; everything else is the app's.
    assert {k: v for k, v in session.claims.items() if k not in ("iat", "exp", "jti")} == token
    assert session.claims["exp"] - session.claims["iat"] == 30 * 24 * 3600
    tokens = read_tokens(session.claims, TokenFields())
    assert (tokens.access_token, tokens.refresh_token, tokens.expires_at_s) == (
        "at-1",
        "rt-1",
        token["expires_at"],
    )


@needs_node
@pytest.mark.parametrize(("version", "name"), [(5, V5), (5, "__Secure-" + V5), (4, V4)])
async def test_reads_a_chunked_cookie_the_library_writes(version: int, name: str) -> None:
    token = chunked_token(version, 3)
    [encoded] = await authjs(
        [{"op": "encode", "version": version, "secret": SECRET, "salt": name, "token": token}]
    )
    [chunked] = await authjs([{"op": "chunk", "version": version, "name": name, "value": encoded["jwt"]}])
    pieces = [(c["name"], c["value"]) for c in chunked["cookies"]]
    assert [n for n, _ in pieces] == [f"{name}.{i}" for i in range(len(pieces))]
    assert len(pieces) == math.ceil(len(encoded["jwt"]) / CHUNK_SIZE[version]) == 3
    # A browser sends them in any order, among other cookies.
    carried = [("a", "1"), pieces[2], pieces[0], ("b", "2"), pieces[1]]
    session = read_session(Keys(version, [SECRET]), carried, time.time())  # type: ignore[arg-type]
    assert session is not None
    assert session.cookies.cookie_names == tuple(n for n, _ in pieces)
    assert session.claims["id_token"] == token["id_token"]


@needs_node
async def test_v5_picks_the_decrypting_secret_by_kid() -> None:
    # The app rotated: it encodes with the new secret first; cookieguard may list them in any order.
    [encoded] = await authjs(
        [{"op": "encode", "version": 5, "secret": [SECRET, OLD_SECRET], "salt": V5, "token": guide_token()}]
    )
    header = json.loads(base64.urlsafe_b64decode(encoded["jwt"].split(".")[0] + "=="))
    assert header == {"alg": "dir", "enc": ENC_CBC, "kid": key_id(derive_key(5, SECRET, V5, ENC_CBC))}
    for secrets in ([SECRET, OLD_SECRET], [OLD_SECRET, SECRET]):
        assert read_session(Keys(5, secrets), [(V5, encoded["jwt"])], time.time()) is not None
    assert read_session(Keys(5, [OLD_SECRET]), [(V5, encoded["jwt"])], time.time()) is None


@needs_node
@pytest.mark.parametrize(("version", "name"), [(5, V5), (4, V4)])
async def test_a_cookie_made_with_another_secret_is_not_a_session(version: int, name: str) -> None:
    [encoded] = await authjs(
        [{"op": "encode", "version": version, "secret": OTHER_SECRET, "salt": name, "token": guide_token()}]
    )
    assert read_session(Keys(version, [SECRET]), [(name, encoded["jwt"])], time.time()) is None  # type: ignore[arg-type]
    # The library agrees.
    [decoded] = await authjs(
        [{"op": "decode", "version": version, "secret": SECRET, "salt": name, "jwt": encoded["jwt"]}]
    )
    assert "payload" not in decoded


@needs_node
async def test_v5_salt_is_the_cookie_name_so_the_secure_variant_is_another_key() -> None:
    [encoded] = await authjs(
        [{"op": "encode", "version": 5, "secret": SECRET, "salt": V5, "token": guide_token()}]
    )
    # The same value under the __Secure- name does not decrypt (v5), as for the library.
    assert read_session(Keys(5, [SECRET]), [("__Secure-" + V5, encoded["jwt"])], time.time()) is None
    [decoded] = await authjs(
        [{"op": "decode", "version": 5, "secret": SECRET, "salt": "__Secure-" + V5, "jwt": encoded["jwt"]}]
    )
    assert "payload" not in decoded


@needs_node
@pytest.mark.parametrize("version", [5, 4])
async def test_expiry_tolerance_is_15_seconds_as_the_library_s(version: int) -> None:
    name = V5 if version == 5 else V4
    ops = [
        {
            "op": "encode",
            "version": version,
            "secret": SECRET,
            "salt": name,
            "token": guide_token(),
            "max_age": age,
        }
        for age in (-5, -30)
    ]
    within, past = await authjs(ops)
    keys = Keys(version, [SECRET])  # type: ignore[arg-type]
    assert read_session(keys, [(name, within["jwt"])], time.time()) is not None
    assert read_session(keys, [(name, past["jwt"])], time.time()) is None
    decoded = await authjs(
        [
            {"op": "decode", "version": version, "secret": SECRET, "salt": name, "jwt": e["jwt"]}
            for e in (within, past)
        ]
    )
    assert "payload" in decoded[0]
    assert decoded[1] == {"error": "ERR_JWT_EXPIRED"}


# -------------------------------------------------------------------------------------------
# cookieguard writes -> the library decrypts and accepts
# -------------------------------------------------------------------------------------------


async def _library_session(version: int, name: str, token: dict[str, Any], secret: Any = SECRET) -> str:
    [encoded] = await authjs(
        [{"op": "encode", "version": version, "secret": secret, "salt": name, "token": token}]
    )
    return str(encoded["jwt"])


@needs_node
@pytest.mark.parametrize(
    ("version", "name", "fields"),
    [
        (5, V5, TokenFields()),
        (5, "__Secure-" + V5, TokenFields(id_token="id_token")),
        (4, V4, TokenFields()),
        (4, "__Secure-" + V4, V4_TUTORIAL),
    ],
)
async def test_fresh_tokens_written_back_keep_every_claim(
    version: int, name: str, fields: TokenFields
) -> None:
    now = time.time()
    if fields is V4_TUTORIAL:
        token = {
            "name": "Ada",
            "sub": "user-1",
            "accessToken": "at-1",
            "refreshToken": "rt-1",
            "accessTokenExpires": int(now * 1000) - 1000,
            "user": {"id": "u1", "email": "ada@example.test"},
        }
    else:
        token = guide_token(id_token="id-1")
    keys = Keys(version, [SECRET])  # type: ignore[arg-type]
    session = read_session(keys, [(name, await _library_session(version, name, token))], now)
    assert session is not None
    before = read_tokens(session.claims, fields)
    assert before.access_token == "at-1"
    if fields is V4_TUTORIAL:
        assert before.expires_at_s == pytest.approx(now - 1, abs=0.01)  # milliseconds, read as seconds

    fresh = with_tokens(
        session.claims,
        fields,
        access_token="at-2",
        refresh_token="rt-2",
        id_token="id-2",
        expires_at_s=now + 60.7,
    )
    writes = write_session(keys, session, fresh)
    assert writes.delete == [] and [n for n, _ in writes.set] == [name]
    assert writes.secure == name.startswith("__Secure-")
    assert writes.expires_at_s == session.claims["exp"]  # the cookie lives as long as the session

    header = cookie_header(writes.cookie_pairs([("theme", "dark"), (name, "old")]))
    decoded, got = await authjs(
        [
            {"op": "decode", "version": version, "secret": SECRET, "salt": name, "jwt": writes.set[0][1]},
            {
                "op": "get_token",
                "version": version,
                "secret": SECRET,
                "cookie": header,
                "secure": name.startswith("__Secure-"),
            },
        ]
    )
    expected = dict(session.claims)  # iat, exp and jti as the app wrote them, not restamped
    expected[fields.access_token] = "at-2"
    expected[fields.refresh_token] = "rt-2"
    expected[fields.expires_at] = (
        math.floor((now + 60.7) * 1000) if fields.expires_at_unit == "ms" else math.floor(now + 60.7)
    )
    if fields.id_token:
        expected[fields.id_token] = "id-2"
    assert decoded["payload"] == expected
    assert got["payload"] == expected
    assert list(decoded["payload"]) == list(expected), "claim order changed"
    if not fields.id_token:
        assert decoded["payload"].get("id_token") == token.get(
            "id_token"
        )  # not a token field here: untouched


@needs_node
@pytest.mark.parametrize("version", [5, 4])
async def test_odd_claims_survive_the_round_trip(version: int) -> None:
    # What an app's own fields may hold: a lone surrogate (JSON.stringify writes it as an escape),
    # U+2028, an emoji, big and fractional numbers, nesting, an empty key.
    name = V5 if version == 5 else V4
    token = guide_token(
        odd={
            "lone": "\ud800x",
            "sep": "a\u2028b",
            "emoji": "😀",
            "": 0,
            "n": [1.5, -0.0, 2**53, 1e300, None, True],
        }
    )
    keys = Keys(version, [SECRET])  # type: ignore[arg-type]
    session = read_session(keys, [(name, await _library_session(version, name, token))], time.time())
    assert session is not None
    assert session.claims["odd"] == token["odd"]
    writes = write_session(keys, session, session.claims)
    [decoded] = await authjs(
        [{"op": "decode", "version": version, "secret": SECRET, "salt": name, "jwt": writes.set[0][1]}]
    )
    assert decoded["payload"] == session.claims


@needs_node
@pytest.mark.parametrize(("version", "enc"), [(5, ENC_CBC), (5, ENC_GCM), (4, ENC_GCM)])
async def test_the_library_decodes_each_enc_cookieguard_writes(version: int, enc: str) -> None:
    name = V5 if version == 5 else V4
    claims = guide_token(exp=int(time.time()) + 600, iat=int(time.time()), jti="j-1")
    token = encrypt(Keys(version, [SECRET]), claims, name, enc)  # type: ignore[arg-type]
    header = json.loads(base64.urlsafe_b64decode(token.split(".")[0] + "=="))
    if version == 5:
        assert header == {"alg": "dir", "enc": enc, "kid": key_id(derive_key(5, SECRET, name, enc))}
    else:
        assert header == {"alg": "dir", "enc": enc}
    [decoded] = await authjs(
        [{"op": "decode", "version": version, "secret": SECRET, "salt": name, "jwt": token}]
    )
    assert decoded["payload"] == claims


async def test_written_back_with_the_enc_it_was_read_with() -> None:
    keys = Keys(5, [SECRET])
    claims = guide_token(exp=int(time.time()) + 600)
    for enc in (ENC_CBC, ENC_GCM):
        session = read_session(keys, [(V5, encrypt(keys, claims, V5, enc))], time.time())
        assert session is not None and session.jwt.enc == enc
        rewritten = read_session(keys, write_session(keys, session, claims).set, time.time())
        assert rewritten is not None and rewritten.jwt.enc == enc


@needs_node
async def test_rotated_secrets_the_first_encrypts_and_the_library_finds_it_by_kid() -> None:
    # The cookie was made before the rotation (old secret); cookieguard is configured [new, old].
    keys = Keys(5, [SECRET, OLD_SECRET])
    session = read_session(
        keys, [(V5, await _library_session(5, V5, guide_token(), OLD_SECRET))], time.time()
    )
    assert session is not None
    writes = write_session(
        keys,
        session,
        with_tokens(session.claims, TokenFields(), access_token="at-2", expires_at_s=time.time() + 60),
    )
    new_kid = json.loads(base64.urlsafe_b64decode(writes.set[0][1].split(".")[0] + "=="))["kid"]
    assert new_kid == key_id(derive_key(5, SECRET, V5, ENC_CBC))
    with_both, with_old_only = await authjs(
        [
            {
                "op": "decode",
                "version": 5,
                "secret": [OLD_SECRET, SECRET],
                "salt": V5,
                "jwt": writes.set[0][1],
            },
            {"op": "decode", "version": 5, "secret": OLD_SECRET, "salt": V5, "jwt": writes.set[0][1]},
        ]
    )
    assert with_both["payload"]["access_token"] == "at-2"
    assert "payload" not in with_old_only


@needs_node
async def test_a_v5_cookie_without_kid_is_tried_with_the_first_secret_only() -> None:
    # As v5 wrote before kid: a header of alg and enc only, made here with the old secret.
    claims = guide_token(exp=int(time.time()) + 600)
    key = derive_key(5, OLD_SECRET, V5, ENC_GCM)
    token = jwe.encrypt_compact(
        {"alg": "dir", "enc": ENC_GCM}, json.dumps(claims).encode(), OctKey.import_key(key)
    )
    assert read_session(Keys(5, [OLD_SECRET, SECRET]), [(V5, token)], time.time()) is not None
    assert read_session(Keys(5, [SECRET, OLD_SECRET]), [(V5, token)], time.time()) is None
    first, second = await authjs(
        [
            {"op": "decode", "version": 5, "secret": [OLD_SECRET, SECRET], "salt": V5, "jwt": token},
            {"op": "decode", "version": 5, "secret": [SECRET, OLD_SECRET], "salt": V5, "jwt": token},
        ]
    )
    assert first["payload"] == claims
    assert "payload" not in second


# -------------------------------------------------------------------------------------------
# Chunks: written and deleted as SessionStore.chunk does, joined as SessionStore.value does
# -------------------------------------------------------------------------------------------


@needs_node
@pytest.mark.parametrize("version", [5, 4])
@pytest.mark.parametrize(
    ("carried", "written"),
    [
        (1, 1),  # plain -> plain
        (1, 3),  # plain -> chunks: the plain cookie is deleted
        (3, 1),  # chunks -> plain: every chunk deleted
        (3, 2),  # 3 chunks -> 2: the stale .2 deleted
        (2, 3),  # 2 chunks -> 3
    ],
)
@pytest.mark.parametrize("secure", [False, True])
async def test_chunk_writes_match_the_library(version: int, carried: int, written: int, secure: bool) -> None:
    name = ("__Secure-" if secure else "") + (V5 if version == 5 else V4)
    keys = Keys(version, [SECRET])  # type: ignore[arg-type]
    enc = ENC_CBC if version == 5 else ENC_GCM
    old_pieces = split_chunks(version, name, encrypt(keys, chunked_token(version, carried), name, enc))  # type: ignore[arg-type]
    assert len(old_pieces) == carried
    session = read_session(keys, old_pieces, time.time())
    assert session is not None
    new_claims = chunked_token(version, written)
    writes = write_session(keys, session, new_claims)
    assert len(writes.set) == written
    [library] = await authjs(
        [
            {
                "op": "chunk",
                "version": version,
                "name": name,
                "value": "".join(v for _, v in writes.set),
                "cookie": cookie_header(old_pieces),
            }
        ]
    )
    theirs = library_writes(library)
    assert writes.set == theirs.set
    assert sorted(writes.delete) == sorted(theirs.delete)
    # The user-visible rule: no cookie of the old session survives unless a new piece took its name.
    assert set(writes.delete) == {n for n, _ in old_pieces} - {n for n, _ in writes.set}
    assert writes.secure == secure
    # What the browser keeps (deletions applied), read by the library's getToken.
    [got] = await authjs(
        [
            {
                "op": "get_token",
                "version": version,
                "secret": SECRET,
                "cookie": cookie_header(writes.set),
                "secure": secure,
            }
        ]
    )
    assert got["payload"] == new_claims


@pytest.mark.parametrize(("version", "size"), [(5, 3936), (4, 3933)])
def test_chunk_size_per_version(version: int, size: int) -> None:
    assert split_chunks(version, "n", "x" * size) == [("n", "x" * size)]  # type: ignore[arg-type]
    assert [len(v) for _, v in split_chunks(version, "n", "x" * (size + 1))] == [size, 1]  # type: ignore[arg-type]
    assert [n for n, _ in split_chunks(version, "n", "x" * (2 * size + 1))] == ["n.0", "n.1", "n.2"]  # type: ignore[arg-type]


@needs_node
@pytest.mark.parametrize("version", [5, 4])
async def test_the_chunk_join_matches_the_library_whatever_the_names(version: int) -> None:
    name = V5 if version == 5 else V4
    layouts = [
        [(f"{name}.1", "b"), (name, "P"), (f"{name}.0", "a")],  # a plain cookie left beside chunks
        [(name, "P"), (f"{name}.1", "b"), (f"{name}.0", "a")],
        [(f"{name}.0", "a"), (f"{name}.1", "b"), (name, "P")],
        [
            (f"{name}.2", "c"),
            (f"{name}.10", "k"),
            (f"{name}.1", "b"),
            (f"{name}.0", "a"),
        ],  # numeric, not text, order
        [(f"{name}.x", "X"), (f"{name}.1", "b"), (f"{name}.", "E"), (f"{name}.0", "a")],
        [(f"{name}-other", "O"), (f"{name}.1", "b"), (f"{name}.0", "a"), (f"{name}.0", "dup")],
        [(f"{name}.0", ""), (f"{name}.1", "b")],  # v5 skips empty values
        [(f"{name}.0x1", "h"), (f"{name}.-1", "m"), (f"{name}.01", "z")],
    ]
    answers = await authjs(
        [{"op": "join", "version": version, "name": name, "cookie": cookie_header(p)} for p in layouts]
    )
    for pairs, answer in zip(layouts, answers, strict=True):
        found = find_session_cookies(version, pairs, name)  # type: ignore[arg-type]
        assert (found.value if found else "") == answer["value"], pairs


# -------------------------------------------------------------------------------------------
# Pure: token fields, names, bad input
# -------------------------------------------------------------------------------------------


def test_token_fields_by_configured_names_and_units() -> None:
    claims = {"accessToken": "a", "refreshToken": "r", "accessTokenExpires": 1_700_000_000_500, "sub": "s"}
    tokens = read_tokens(claims, V4_TUTORIAL)
    assert (tokens.access_token, tokens.refresh_token, tokens.expires_at_s) == ("a", "r", 1_700_000_000.5)
    assert read_tokens(claims, TokenFields()).access_token is None
    assert read_tokens({"expires_at": "soon", "access_token": 7}, TokenFields()) == read_tokens(
        {}, TokenFields()
    )
    fresh = with_tokens(claims, V4_TUTORIAL, access_token="a2", expires_at_s=1_700_000_100.25)
    assert fresh == {
        "accessToken": "a2",
        "refreshToken": "r",
        "accessTokenExpires": 1_700_000_100_250,
        "sub": "s",
    }
    assert claims["accessToken"] == "a", "the input was changed"
    # An id token is written only where fields.id_token names one.
    assert "id_token" not in with_tokens({}, TokenFields(), access_token="a", expires_at_s=1, id_token="i")
    assert with_tokens({}, TokenFields(id_token="idt"), access_token="a", expires_at_s=1.9, id_token="i") == {
        "access_token": "a",
        "expires_at": 1,
        "idt": "i",
    }


def test_flag_sets_the_error_and_keeps_the_tokens() -> None:
    claims = guide_token()
    assert not is_flagged(claims, TokenFields())
    marked = flagged(claims, TokenFields())
    assert marked == {**claims, "error": "RefreshTokenError"}
    assert is_flagged(marked, TokenFields())
    assert flagged(claims, V4_TUTORIAL)["error"] == "RefreshAccessTokenError"
    assert is_flagged({"error": "anything the app set"}, TokenFields())


def test_session_names_keep_the_secure_variant_as_the_request_had_it() -> None:
    assert session_names(5) == ("__Secure-authjs.session-token", "authjs.session-token")
    assert session_names(4) == ("__Secure-next-auth.session-token", "next-auth.session-token")
    assert session_names(5, "__Secure-custom") == ("__Secure-custom",)
    keys = Keys(5, [SECRET])
    claims = guide_token(exp=int(time.time()) + 60)
    secure = encrypt(keys, claims, "__Secure-" + V5, ENC_CBC)
    session = read_session(keys, [(V5, "junk"), ("__Secure-" + V5, secure)], time.time())
    assert session is not None and session.cookies.name == "__Secure-" + V5
    writes = write_session(keys, session, claims)
    assert [n for n, _ in writes.set] == ["__Secure-" + V5] and writes.secure


def test_chunks_replace_the_old_cookies_in_the_outgoing_header_in_place() -> None:
    writes = CookieWrites(set=[("s.0", "A"), ("s.1", "B")], delete=["s"], secure=False)
    assert writes.cookie_pairs([("a", "1"), ("s", "old"), ("b", "2")]) == [
        ("a", "1"),
        ("s.0", "A"),
        ("s.1", "B"),
        ("b", "2"),
    ]
    assert writes.cookie_pairs([("a", "1")]) == [("a", "1"), ("s.0", "A"), ("s.1", "B")]


def test_cookie_writes_delete_every_cookie_read_but_the_new_names() -> None:
    old = find_session_cookies(5, [("s.0", "a"), ("s.1", "b"), ("s.2", "c")], "s")
    assert old is not None
    writes = cookie_writes(5, old, "short")
    assert writes.set == [("s", "short")] and writes.delete == ["s.0", "s.1", "s.2"]


def _tamper(token: str, part: int) -> str:
    parts = token.split(".")
    raw = bytearray(base64.urlsafe_b64decode(parts[part] + "=" * (-len(parts[part]) % 4)))
    raw[0] ^= 1
    parts[part] = base64.urlsafe_b64encode(bytes(raw)).rstrip(b"=").decode()
    return ".".join(parts)


def _jwe(header: dict[str, Any], payload: bytes, key: bytes) -> str:
    # Raw compact JWE with any header (the JOSE library refuses to make some of these).
    def b64(data: bytes) -> str:
        return base64.urlsafe_b64encode(data).rstrip(b"=").decode()

    good = jwe.encrypt_compact({"alg": "dir", "enc": ENC_GCM}, payload, OctKey.import_key(key))
    return ".".join([b64(json.dumps(header).encode()), *good.split(".")[1:]])


def test_bad_input_is_not_a_session() -> None:
    keys = Keys(5, [SECRET])
    now = time.time()
    good = encrypt(keys, guide_token(exp=int(now) + 60), V5, ENC_CBC)
    gcm_key = derive_key(5, SECRET, V5, ENC_GCM)
    bad = [
        "",
        "not-a-jwe",
        "a.b.c.d.e",
        "....",
        good + ".",
        good[:-10],
        _tamper(good, 0),  # header changed: the tag covers it
        _tamper(good, 3),  # ciphertext
        _tamper(good, 4),  # tag
        good.replace(".", "!", 1),
        encrypt(keys, ["not", "an", "object"], V5, ENC_CBC),  # type: ignore[arg-type]
        encrypt(keys, {"exp": "tomorrow"}, V5, ENC_CBC),
        encrypt(keys, {"iat": None}, V5, ENC_CBC),
        encrypt(keys, {"nbf": now + 3600}, V5, ENC_CBC),
        _jwe({"alg": "dir", "enc": ENC_GCM, "kid": 7}, b"{}", gcm_key),
        _jwe({"alg": "A256KW", "enc": ENC_GCM}, b"{}", gcm_key),
        _jwe({"alg": "dir", "enc": "A128GCM"}, b"{}", gcm_key),
        _jwe({"alg": "dir", "enc": ENC_GCM, "zip": "DEF"}, b"{}", gcm_key),
        _jwe({"alg": "dir", "enc": ENC_GCM}, b'{"exp": NaN}', gcm_key),
        _jwe({"alg": "dir", "enc": ENC_GCM}, b'{"exp": 1e999}', gcm_key),
        _jwe({"alg": "dir", "enc": ENC_GCM}, b"\xff\xfe{}", gcm_key),
        _jwe({"alg": "dir", "enc": ENC_GCM}, b"[" * 100_000, gcm_key),
    ]
    assert decrypt(keys, good, V5, now) is not None
    for token in bad:
        assert decrypt(keys, token, V5, now) is None, token[:80]
        assert read_session(keys, [(V5, token)], now) is None


@settings(max_examples=300, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.one_of(
                st.sampled_from([V5, V5 + ".0", V5 + ".1", "__Secure-" + V5, V5 + ".x"]), st.text(max_size=30)
            ),
            st.text(max_size=200),
        ),
        max_size=8,
    )
)
def test_garbage_cookies_never_raise(pairs: list[tuple[str, str]]) -> None:
    for version in (5, 4):
        keys = Keys(version, [SECRET])  # type: ignore[arg-type]
        assert read_session(keys, pairs, time.time()) is None
        for name in session_names(version):  # type: ignore[arg-type]
            find_session_cookies(version, pairs, name)  # type: ignore[arg-type]


@settings(max_examples=300, deadline=None)
@given(st.text(alphabet="abcdefghijklmnopqrstuvwxyzABCDEF0123456789-_.", max_size=400))
def test_garbage_tokens_never_raise(token: str) -> None:
    assert decrypt(Keys(5, [SECRET]), token, V5, time.time()) is None
    assert decrypt(Keys(4, [SECRET]), token, V4, time.time()) is None
