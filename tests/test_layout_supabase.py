"""cookieguard/session/layouts/supabase.py against the real @supabase/ssr (tests/supabase_ssr, Node).

Round trips both ways: cookies the library writes are read by our codec, and cookies our codec
writes are read by the library's `createServerClient(...).auth.getSession()`, unchunked and
chunked, and after a refresh (ours, and the library's own against the GoTrue test server).
The Node script gets the request's `Cookie` header and answers with the `Set-Cookie` headers the
library serialized, so both sides meet in what a browser really carries.
"""

from __future__ import annotations

import base64
import json
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
from hypothesis import given
from hypothesis import strategies as st

from cookieguard.config import CookieAttributes
from cookieguard.cookies import SetCookie, encode_uri_component, parse_cookie_header
from cookieguard.session.layouts import LAYOUTS, FreshTokens, Session, SupabaseLayout
from cookieguard.session.layouts.supabase import (
    DEFAULT_MAX_AGE_S,
    MAX_CHUNK_SIZE,
    decode_value,
    encode_value,
    read_session,
    session_cookies,
    split_chunks,
    storage_key,
    updated_session,
)
from tests.support.gotrue import GoTrueServer
from tests.support.ssr import Jar, needs_node, ssr

# What `cookies.attributes` is for this layout when the YAML leaves it out: @supabase/ssr's.
SSR_ATTRS = CookieAttributes(**LAYOUTS["supabase"].attribute_defaults)


def headers(writes: list[SetCookie]) -> list[str]:
    return [w.header() for w in writes]


@pytest.fixture
async def gotrue() -> AsyncIterator[GoTrueServer]:
    async with GoTrueServer() as server:
        yield server


def big_metadata(size: int) -> dict[str, Any]:
    # Unicode on purpose: multi-byte characters near chunk boundaries.
    return {"bio": ("Grüße, 世界! " * (size // 12 + 1))[:size], "avatar": "https://example.com/a.png"}


# -------------------------------------------------------------------------------------------
# Pure codec
# -------------------------------------------------------------------------------------------


def test_storage_key() -> None:
    assert storage_key("https://abcdefghijklmnop.supabase.co") == "sb-abcdefghijklmnop-auth-token"
    assert storage_key("http://127.0.0.1:54321") == "sb-127-auth-token"
    assert storage_key("https://x.supabase.co", "my-key") == "my-key"


def test_value_is_unpadded_base64url_of_compact_json() -> None:
    value = encode_value({"a": "é?>"})
    assert value.startswith("base64-") and "=" not in value
    assert value == "base64-eyJhIjoiw6k_PiJ9"  # JSON.stringify + UTF-8, `_` not `/`
    assert decode_value(value) == {"a": "é?>"}
    assert decode_value('{"plain": 1}') == {"plain": 1}
    for broken in ["base64-!!!", "base64-", "base64-bm90IGpzb24", "[1]", "", "base64-eyJh"]:
        assert decode_value(broken) is None


def test_chunks_hold_at_most_3180_encoded_characters() -> None:
    value = encode_value({"user": big_metadata(9000)})
    chunks = split_chunks("k", value)
    assert [name for name, _ in chunks] == [f"k.{i}" for i in range(len(chunks))]
    assert all(len(part) == MAX_CHUNK_SIZE for _, part in chunks[:-1])
    assert "".join(part for _, part in chunks) == value
    assert split_chunks("k", "x" * MAX_CHUNK_SIZE) == [("k", "x" * MAX_CHUNK_SIZE)]


def test_reads_the_unchunked_cookie_first_then_chunks_in_order() -> None:
    value = encode_value({"access_token": "a", "user": big_metadata(5000)})
    chunks = split_chunks("k", value)
    shuffled = [*reversed(chunks), ("other", "1")]
    assert read_session(shuffled, "k") == decode_value(value)
    assert read_session([*chunks, ("k", encode_value({"x": 1}))], "k") == {"x": 1}
    # A gap ends the chunks: .0 and .2 alone are not a session.
    assert read_session([chunks[0], chunks[2]], "k") is None
    assert read_session([("k.00", value)], "k") is None


def test_a_refresh_keeps_every_field_cookieguard_does_not_own() -> None:
    old = {
        "access_token": "a",
        "refresh_token": "r",
        "expires_in": 1,
        "expires_at": 2,
        "token_type": "bearer",
    }
    old |= {"user": {"id": "u"}, "provider_token": "p", "weak_password": None}
    new = updated_session(old, access_token="A", refresh_token="R", expires_in=3600, expires_at=99)
    assert new == old | {"access_token": "A", "refresh_token": "R", "expires_in": 3600, "expires_at": 99}


def test_stale_chunks_are_deleted_first() -> None:
    small = {"access_token": "a", "refresh_token": "r", "expires_at": 1}
    writes = session_cookies("k", small, ["k.0", "k.1", "k.2", "other", "k.x"], SSR_ATTRS)
    assert [(w.name, w.max_age_s) for w in writes] == [
        ("k.0", 0),
        ("k.1", 0),
        ("k.2", 0),
        ("k", DEFAULT_MAX_AGE_S),
    ]
    attrs = CookieAttributes(
        **LAYOUTS["supabase"].attribute_defaults | {"domain": "example.com", "secure": True}
    )
    with_domain = headers(session_cookies("k", small, ["k", "k.0"], attrs))
    assert with_domain[0] == "k.0=; Path=/; Max-Age=0; Secure; SameSite=Lax"  # host-only first
    assert with_domain[1] == "k.0=; Path=/; Domain=example.com; Max-Age=0; Secure; SameSite=Lax"
    assert with_domain[2].startswith("k=base64-") and with_domain[2].endswith(
        "; Path=/; Domain=example.com; Max-Age=34560000; Secure; SameSite=Lax"
    )


json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**53), 2**53) | st.text(),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(), children, max_size=4),
    max_leaves=20,
)


@given(st.dictionaries(st.text(), json_values, max_size=6), st.integers(0, 6000))
def test_encode_then_read_gives_the_session_back(session: dict[str, Any], padding: int) -> None:
    session = session | {"pad": "ü" * padding}
    writes = session_cookies("sb-x-auth-token", session, [], SSR_ATTRS)
    assert all(len(w.value) <= MAX_CHUNK_SIZE for w in writes)
    assert read_session([(w.name, w.value) for w in writes], "sb-x-auth-token") == session


@given(st.text(min_size=0, max_size=8000), st.integers(12, 400))
def test_chunks_never_split_an_escape_or_a_character(value: str, chunk_size: int) -> None:
    chunks = split_chunks("k", value, chunk_size)
    assert "".join(part for _, part in chunks) == value
    assert all(len(encode_uri_component(part)) <= chunk_size for _, part in chunks)


# -------------------------------------------------------------------------------------------
# Against the real @supabase/ssr
# -------------------------------------------------------------------------------------------

URL = "https://abcdefghijklmnop.supabase.co"
KEY = "sb-abcdefghijklmnop-auth-token"


def a_session(gotrue: GoTrueServer, metadata_size: int) -> dict[str, Any]:
    return gotrue.sign_in(f"user{metadata_size}@example.com", user_metadata=big_metadata(metadata_size))


@needs_node
@pytest.mark.parametrize("metadata_size", [10, 4000, 12000])
async def test_library_writes_our_codec_reads(gotrue: GoTrueServer, metadata_size: int) -> None:
    session = a_session(gotrue, metadata_size)
    answer = await ssr({"op": "write", "url": URL, "session": session, "cookieHeader": ""})
    assert answer["key"] == KEY == storage_key(URL)
    jar = Jar()
    jar.apply(answer["setCookie"])
    names = list(jar.cookies)
    assert names == ([KEY] if metadata_size == 10 else [f"{KEY}.{i}" for i in range(len(names))])
    # The prefix is part of the value that is chunked: only the first chunk carries it.
    assert "".join(jar.cookies.values()).startswith("base64-")
    assert all(len(value) <= MAX_CHUNK_SIZE for value in jar.cookies.values())
    assert read_session(jar.pairs(), KEY) == session
    # The library's attributes are our defaults, and it asks for no caching.
    assert {json.dumps(item["options"], sort_keys=True) for item in answer["setAll"]} == {
        json.dumps(
            {"httpOnly": False, "maxAge": DEFAULT_MAX_AGE_S, "path": "/", "sameSite": "lax"}, sort_keys=True
        )
    }
    assert answer["headers"]["Cache-Control"] == "private, no-cache, no-store, must-revalidate, max-age=0"


@needs_node
@pytest.mark.parametrize("metadata_size", [10, 4000, 12000])
async def test_our_codec_writes_library_reads(gotrue: GoTrueServer, metadata_size: int) -> None:
    session = a_session(gotrue, metadata_size)
    jar = Jar()
    jar.apply(headers(session_cookies(KEY, session, [], SSR_ATTRS)))
    answer = await ssr({"op": "read", "url": URL, "cookieHeader": jar.header()})
    assert answer["error"] is None
    assert answer["session"] == session
    assert answer["setAll"] == []  # nothing to fix, nothing written


@needs_node
@pytest.mark.parametrize(
    ("before", "after", "stale"),
    [
        (12000, 10, True),  # chunks -> one cookie: every chunk deleted
        (10, 12000, True),  # one cookie -> chunks: the unchunked cookie deleted
        (12000, 4000, True),  # fewer chunks
        (4000, 12000, False),  # more chunks: nothing stale
    ],
)
async def test_our_writes_match_the_library_when_the_chunk_count_changes(
    gotrue: GoTrueServer, before: int, after: int, stale: bool
) -> None:
    jar = Jar()
    jar.apply(headers(session_cookies(KEY, a_session(gotrue, before), [], SSR_ATTRS)))
    new = a_session(gotrue, after)
    library = await ssr({"op": "write", "url": URL, "session": new, "cookieHeader": jar.header()})
    ours = session_cookies(KEY, new, list(jar.cookies), SSR_ATTRS)
    theirs = [
        (item["name"], encode_uri_component(item["value"]), item["options"]["maxAge"])
        for item in library["setAll"]
    ]
    assert [(w.name, w.value, w.max_age_s) for w in ours] == theirs
    deleted = {w.name for w in ours if w.max_age_s == 0}
    assert deleted == set(jar.cookies) - {w.name for w in ours if w.max_age_s > 0}
    assert bool(deleted) == stale


@needs_node
async def test_legacy_plain_json_cookies_are_read(gotrue: GoTrueServer) -> None:
    # @supabase/ssr before 0.4 wrote the JSON itself, URI-encoded and chunked on the encoded form.
    session = a_session(gotrue, 7000)
    answer = await ssr(
        {"op": "write", "url": URL, "session": session, "cookieHeader": "", "cookieEncoding": "raw"}
    )
    jar = Jar()
    jar.apply(answer["setCookie"])
    assert len(jar.cookies) > 2 and not any(v.startswith("base64-") for v in jar.cookies.values())
    assert read_session(jar.pairs(), KEY) == session
    raw = json.dumps(session, separators=(",", ":"), ensure_ascii=False)
    assert [value for _, value in split_chunks(KEY, raw)] == [item["value"] for item in answer["setAll"]]


@needs_node
async def test_after_our_refresh_the_library_reads_our_cookie(gotrue: GoTrueServer) -> None:
    session = a_session(gotrue, 9000)
    jar = Jar()
    jar.apply(headers(session_cookies(KEY, session, [], SSR_ATTRS)))
    chunks_before = len(jar.cookies)
    async with (
        aiohttp.ClientSession() as http,
        http.post(
            f"{gotrue.token_url}?grant_type=refresh_token",
            json={"refresh_token": session["refresh_token"]},
            headers={"apikey": gotrue.anon_key},
        ) as response,
    ):
        tokens = await response.json()
    stored = read_session(jar.pairs(), KEY)
    assert stored is not None
    fresh = updated_session(
        stored,
        access_token=tokens["access_token"],
        refresh_token=tokens["refresh_token"],
        expires_in=tokens["expires_in"],
        expires_at=tokens["expires_at"],
    )
    fresh["user"]["user_metadata"] = {"bio": "short now"}  # fewer chunks: stale ones must go
    jar.apply(headers(session_cookies(KEY, fresh, list(jar.cookies), SSR_ATTRS)))
    assert len(jar.cookies) < chunks_before
    answer = await ssr({"op": "read", "url": URL, "cookieHeader": jar.header()})
    assert answer["session"] == fresh
    assert answer["session"]["refresh_token"] == gotrue.active_refresh_token(
        gotrue.session_id_of(tokens["refresh_token"])
    )


@needs_node
async def test_after_the_library_refreshes_our_codec_reads_its_cookie(gotrue: GoTrueServer) -> None:
    # Signed in two hours ago (the library looks at the real clock): the access token has expired.
    gotrue.clock.advance(-7200)
    session = a_session(gotrue, 9000)
    gotrue.clock.advance(7200)
    key = storage_key(gotrue.url)
    jar = Jar()
    jar.apply(headers(session_cookies(key, session, [], SSR_ATTRS)))
    answer = await ssr(
        {"op": "read", "url": gotrue.url, "anonKey": gotrue.anon_key, "cookieHeader": jar.header()}
    )
    assert answer["error"] is None
    assert gotrue.stats.refresh_calls == 1 and gotrue.stats.refreshed == 1
    jar.apply(answer["setCookie"])
    refreshed = read_session(jar.pairs(), key)
    assert refreshed is not None
    assert refreshed["refresh_token"] == gotrue.active_refresh_token(
        gotrue.session_id_of(session["refresh_token"])
    )
    assert refreshed["refresh_token"] != session["refresh_token"]
    assert refreshed["expires_at"] > session["expires_at"]


# -------------------------------------------------------------------------------------------
# The layout (what the proxy calls)
# -------------------------------------------------------------------------------------------


def jwt_like(claims: dict[str, Any]) -> str:
    def part(value: dict[str, Any]) -> str:
        return base64.urlsafe_b64encode(json.dumps(value).encode()).decode().rstrip("=")

    return f"{part({'alg': 'ES256'})}.{part(claims)}.sig"


def test_the_layout_rewrites_the_chunks_in_place_and_writes_the_whole_session_back() -> None:
    layout = SupabaseLayout("sb-x-auth-token")
    old = {
        "access_token": jwt_like({"exp": 100, "iat": 50}),
        "refresh_token": "oldrefresh12",
        "expires_in": 50,
        "expires_at": 100,
        "token_type": "bearer",
        "user": {"id": "u1", "email": "a@example.com", "user_metadata": {"bio": "x" * 6000}},
        "provider_token": "gh-token",
    }
    writes = session_cookies(layout.key, old, [], SSR_ATTRS)
    cookies = [("a", "1"), *((w.name, w.value) for w in writes), ("z", "2")]
    session = layout.read(layout.relevant_cookies("; ".join(f"{n}={v}" for n, v in cookies)))
    assert session is not None and session.user == "a@example.com"
    assert session.refresh_token == "oldrefresh12" and session.id_token is None
    assert session.cookie_names == {w.name for w in writes} and len(writes) == 3

    tokens = FreshTokens(
        access_token=jwt_like({"exp": 4000, "iat": 400}), id_token=None, refresh_token="newrefresh12"
    )
    new = layout.fresh_session(session, tokens)
    assert new == old | {
        "access_token": tokens.access_token,
        "refresh_token": "newrefresh12",
        "expires_at": 4000,
        "expires_in": 3600,
    }
    header = layout.cookie_header(cookies, session, tokens)
    names = [name for name, _ in parse_cookie_header(header)]
    assert names[0] == "a" and names[-1] == "z"  # the new chunks where the old ones were
    assert read_session(parse_cookie_header(header), layout.key) == new

    # Fewer chunks after the refresh (the user object shrank elsewhere): the stale one goes.
    smaller = Session(
        user=session.user,
        access_token=session.access_token,
        id_token=None,
        refresh_token=session.refresh_token,
        cookie_names=session.cookie_names | {f"{layout.key}.7"},
        payload=old | {"user": {"id": "u1"}},
    )
    written = layout.set_cookies(smaller, tokens, SSR_ATTRS)
    deleted = [c.name for c in written if c.max_age_s == 0]
    assert deleted == [f"{layout.key}.0", f"{layout.key}.1", f"{layout.key}.2", f"{layout.key}.7"]
    assert [c.name for c in written if c.max_age_s > 0] == [layout.key]
    assert {c.name for c in layout.clear_cookies(session, SSR_ATTRS)} == session.cookie_names


def test_what_is_not_a_session_is_passed_through() -> None:
    layout = SupabaseLayout("sb-x-auth-token")
    for header in [
        "sb-x-auth-token=base64-!!!",
        "sb-x-auth-token.1=abc",
        "other=1",
        "sb-x-auth-token=%7B%7D",
    ]:
        session = layout.read(layout.relevant_cookies(header))
        assert session is None or (session.access_token is None and session.refresh_token is None)
