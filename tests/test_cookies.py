"""The cookie core: Cookie header parsing, the amplify and named layouts, Set-Cookie writing."""

from __future__ import annotations

import base64
import json
from http.cookies import SimpleCookie

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cookieguard.config import CookieAttributes, CookiesConfig
from cookieguard.cookies import (
    MAX_COOKIE_BYTES,
    SetCookie,
    encode_uri_component,
    format_cookie_header,
    js_cookie_name,
    parse_cookie_header,
    percent_decode,
    select_cookies,
)
from cookieguard.session.layouts import (
    AmplifyLayout,
    FreshTokens,
    NamedLayout,
    Session,
    SessionReader,
    make_layout,
)
from cookieguard.session.layouts.base import Chunks
from cookieguard.session.layouts.named import CookieNames
from cookieguard.session.merge import clears_cookie
from cookieguard.tokens.providers.cognito import CognitoConfig
from tests.support.properties import CORE_EXAMPLES, core_property

CLIENT_ID = "3n4b5urk1ft4fl3mg5e62d9ado"
PREFIX = f"CognitoIdentityServiceProvider.{CLIENT_ID}"
USER = "user+tag@example.com"
USER_IN_NAME = "user+tag%40example.com"  # what js-cookie / adapter-nextjs put in the cookie name


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def jwt(**claims: object) -> str:
    header = b64url(json.dumps({"kid": "abc", "alg": "RS256"}).encode())
    payload = b64url(json.dumps(claims).encode())
    return f"{header}.{payload}.{b64url(b'signature' * 30)}"


ACCESS = jwt(sub="11111111-2222", token_use="access", client_id=CLIENT_ID, exp=1700000000, iat=1699996400)
ID = jwt(sub="11111111-2222", token_use="id", aud=CLIENT_ID, email=USER, exp=1700000000)
# Cognito refresh tokens are JWEs: five base64url parts.
REFRESH = "eyJjdHkiOiJKV1QiLCJlbmMiOiJBMjU2R0NNIiwiYWxnIjoiUlNBLU9BRVAifQ.a-b_c.iv_x.cipher-text.tag_z"
FRESH = FreshTokens(access_token="NEW." + ACCESS, id_token="NEW." + ID, refresh_token="ROTATED." + REFRESH)


def amplify_header(user: str = USER, user_in_name: str = USER_IN_NAME) -> str:
    return "; ".join(
        [
            "_ga=GA1.1.123456789.1700000000",
            f"{PREFIX}.LastAuthUser={encode_uri_component(user)}",
            f"{PREFIX}.{user_in_name}.accessToken={ACCESS}",
            f"{PREFIX}.{user_in_name}.idToken={ID}",
            f"{PREFIX}.{user_in_name}.refreshToken={REFRESH}",
            f"{PREFIX}.{user_in_name}.clockDrift=-1042",
            f"{PREFIX}.{user_in_name}.signInDetails=%7B%22loginId%22%3A%22{encode_uri_component(user)}%22%7D",
            f"{PREFIX}.{user_in_name}.deviceKey=us-east-1_0b9a6e3c-1f2d",
            "theme=dark",
        ]
    )


class Browser:
    """A cookie jar that applies Set-Cookie header strings and sends a Cookie header back."""

    def __init__(self, header: str = "") -> None:
        self.jar = dict(parse_cookie_header(header))

    def apply(self, headers: list[str]) -> None:
        for header in headers:
            pair, *attributes = header.split("; ")
            name, _, value = pair.partition("=")
            if "Max-Age=0" in attributes:
                self.jar.pop(name, None)
            else:
                self.jar[name] = value

    def cookie_header(self) -> str:
        return format_cookie_header(list(self.jar.items()))


# ---------------------------------------------------------------------------------------------
# parse_cookie_header / format_cookie_header
# ---------------------------------------------------------------------------------------------


def test_parse_keeps_order_duplicates_and_raw_values() -> None:
    header = '_ga=GA1.1.123.456; a=1; b="quoted value"; a=2; jwt=x.y.z; b64=dGVzdA==; q=a=b=c; e='
    assert parse_cookie_header(header) == [
        ("_ga", "GA1.1.123.456"),
        ("a", "1"),
        ("b", '"quoted value"'),
        ("a", "2"),
        ("jwt", "x.y.z"),
        ("b64", "dGVzdA=="),
        ("q", "a=b=c"),
        ("e", ""),
    ]


def test_parse_does_not_percent_decode() -> None:
    assert parse_cookie_header("u=user%2Btag%40example.com") == [("u", "user%2Btag%40example.com")]


def test_parse_pairs_without_equals_have_an_empty_name() -> None:
    assert parse_cookie_header("flag; =bare; a=1;; ;\t") == [("", "flag"), ("", "bare"), ("a", "1")]


def test_parse_strips_spaces_and_tabs_around_names_and_values() -> None:
    assert parse_cookie_header(" a = 1 ;\tb\t=\t2\t") == [("a", "1"), ("b", "2")]


def test_one_bad_cookie_does_not_lose_the_others() -> None:
    header = f'bad"name=1; spaced=a b; {PREFIX}.LastAuthUser=u'
    # SimpleCookie gives up at the first pair it cannot parse and drops all that follow.
    simple = SimpleCookie()
    simple.load(header)
    assert f"{PREFIX}.LastAuthUser" not in simple
    assert parse_cookie_header(header) == [
        ('bad"name', "1"),
        ("spaced", "a b"),
        (f"{PREFIX}.LastAuthUser", "u"),
    ]


def test_parse_drops_pieces_with_line_breaks() -> None:
    assert parse_cookie_header("a=1; b=x\r\nSet-Cookie: evil=1; c=\x003; d=4") == [("a", "1"), ("d", "4")]


def test_parse_keeps_undecodable_bytes_as_aiohttp_gave_them() -> None:
    header = b"a=\xff\xfe; b=caf\xc3\xa9".decode("utf-8", "surrogateescape")
    assert parse_cookie_header(header) == [("a", "\udcff\udcfe"), ("b", "café")]
    latin1 = b"a=\xff".decode("latin-1")
    assert parse_cookie_header(latin1) == [("a", "ÿ")]


def test_parse_many_and_large_cookies() -> None:
    header = "; ".join(f"c{i}={'v' * 8192}" for i in range(200))
    pairs = parse_cookie_header(header)
    assert len(pairs) == 200
    assert pairs[199] == ("c199", "v" * 8192)


def test_format_round_trips_what_browsers_send() -> None:
    header = '_ga=GA1.1.123.456; flag; a="x"; b=c=d; e='
    assert format_cookie_header(parse_cookie_header(header)) == header


def test_format_drops_pairs_with_line_breaks() -> None:
    assert format_cookie_header([("a", "1"), ("b", "x\r\ny"), ("c\n", "2"), ("d", "4")]) == "a=1; d=4"


@core_property
@given(st.text(alphabet=st.characters(exclude_categories=())))
def test_parse_never_raises(header: str) -> None:
    for name, value in parse_cookie_header(header):
        assert ";" not in name + value
        assert "\r" not in name + value and "\n" not in name + value
    assert "\n" not in format_cookie_header(parse_cookie_header(header))


# The hot path's parser against the full one: a header built from pieces the prefixes and the
# separators make interesting (auth-looking names, spaces, tabs, bare values, line breaks).
_PREFIXES = ("CognitoIdentityServiceProvider.", "at", "sb-")
_piece = st.one_of(
    st.sampled_from(
        ["CognitoIdentityServiceProvider.c.u.accessToken", "at", "at.0", "att", "sb-x-auth-token"]
    ),
    st.text(alphabet='abcAT.-_ =\t\r\n\0%"', max_size=12),
)


@settings(max_examples=min(CORE_EXAMPLES, 2_000), deadline=None)  # ~10 s in CI
@given(
    st.lists(st.tuples(_piece, st.sampled_from(["=", "", "=="]), _piece), max_size=8),
    st.sampled_from(["; ", ";", " ; ", ";\t", ";;"]),
    st.lists(st.sampled_from(_PREFIXES), min_size=1, max_size=3, unique=True),
)
def test_select_cookies_agrees_with_the_full_parser(
    pieces: list[tuple[str, str, str]], separator: str, prefixes: list[str]
) -> None:
    header = separator.join(name + eq + value for name, eq, value in pieces)
    wanted = tuple(prefixes)
    expected = [(n, v) for n, v in parse_cookie_header(header) if n.startswith(wanted)]
    assert select_cookies(header, wanted) == expected


# ---------------------------------------------------------------------------------------------
# Percent-encoding
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "encoded"),
    [
        ("user+tag@example.com", "user+tag%40example.com"),
        ("a#b$c&d+e^f`g|h", "a#b$c&d+e^f`g|h"),  # js-cookie v3 un-escapes these
        ("john.doe", "john.doe"),
        ("a b", "a%20b"),
        ("a;b,c=d", "a%3Bb%2Cc%3Dd"),
        ("josé", "jos%C3%A9"),
        ("(x)", "(x)"),  # as adapter-nextjs writes it; js-cookie would write %28x%29
        ("11111111-2222-3333-4444-555555555555", "11111111-2222-3333-4444-555555555555"),
    ],
)
def test_js_cookie_name(name: str, encoded: str) -> None:
    assert js_cookie_name(name) == encoded


def test_encode_uri_component_like_javascript() -> None:
    assert encode_uri_component("a b;c,d\r\n") == "a%20b%3Bc%2Cd%0D%0A"
    assert encode_uri_component("-_.!~*'()") == "-_.!~*'()"
    assert encode_uri_component("user+tag@example.com") == "user%2Btag%40example.com"
    assert encode_uri_component("dGVzdA==") == "dGVzdA%3D%3D"
    assert encode_uri_component("😀") == "%F0%9F%98%80"


def test_encode_uri_component_never_raises_on_lone_surrogates() -> None:
    assert encode_uri_component("\udcff") == "%FF"  # surrogateescape'd byte comes back as the byte
    assert encode_uri_component("\ud800") == "%ED%A0%80"


def test_percent_decode_is_lenient() -> None:
    assert percent_decode("user%2Btag%40example.com") == "user+tag@example.com"
    assert percent_decode("%c3%a9") == "é"
    assert percent_decode("100%") == "100%"
    assert percent_decode("%zz%4") == "%zz%4"
    assert percent_decode("ok%E0%A4bad") == "ok%E0%A4bad"  # truncated UTF-8 stays as written
    assert percent_decode("plain") == "plain"


@given(st.text())
def test_percent_decode_inverts_encode_uri_component(text: str) -> None:
    assert percent_decode(encode_uri_component(text)) == text


# ---------------------------------------------------------------------------------------------
# amplify layout: read
# ---------------------------------------------------------------------------------------------

amplify = AmplifyLayout(CLIENT_ID)


def read_amplify(header: str) -> Session:
    """The amplify layout's session in a Cookie header; there must be one."""
    session = amplify.read(parse_cookie_header(header))
    assert session is not None
    return session


def test_the_session_reader_reads_each_header_once_and_stays_bounded() -> None:
    reader = SessionReader(amplify, size=2)
    header = amplify_header()
    first = reader.read(header)
    assert first == amplify.read(parse_cookie_header(header)) and first is not None
    assert reader.read(header[:-1] + header[-1]) is first, "an equal header is not read again"
    assert reader.read("theme=dark") is None
    reader.read(header)  # `header` is now the most recently used, "theme=dark" the least
    other = reader.read(header + "; theme=dark")  # the third distinct header: one has to go
    assert other == first and other is not first
    assert len(reader) == 2
    assert reader.read(header) is first, "the most recently used header stayed"


def test_amplify_reads_a_real_session() -> None:
    session = amplify.read(parse_cookie_header(amplify_header()))
    assert session is not None
    assert session.user == USER
    assert session.access_token == ACCESS
    assert session.id_token == ID
    assert session.refresh_token == REFRESH
    assert session.clock_drift_ms == -1042
    # What the Cognito provider needs to refresh: the username (SECRET_HASH) and the device key.
    assert session.refresh_context == {"username": USER, "device_key": "us-east-1_0b9a6e3c-1f2d"}
    assert session.cookie_names == {
        f"{PREFIX}.LastAuthUser",
        f"{PREFIX}.{USER_IN_NAME}.accessToken",
        f"{PREFIX}.{USER_IN_NAME}.idToken",
        f"{PREFIX}.{USER_IN_NAME}.refreshToken",
        f"{PREFIX}.{USER_IN_NAME}.clockDrift",
        f"{PREFIX}.{USER_IN_NAME}.signInDetails",
    }


def test_amplify_session_repr_hides_tokens() -> None:
    session = amplify.read(parse_cookie_header(amplify_header()))
    text = repr(session) + repr(FRESH)
    assert ACCESS not in text and REFRESH not in text and ID not in text and "ROTATED" not in text
    assert "us-east-1_0b9a6e3c" not in text


@pytest.mark.parametrize(
    "header",
    [
        "",
        "_ga=GA1.1.1.1; theme=dark",
        # another app client's cookies are not ours
        f"CognitoIdentityServiceProvider.otherclient.LastAuthUser=bob; "
        f"CognitoIdentityServiceProvider.otherclient.bob.accessToken={ACCESS}",
        # per-user cookies without LastAuthUser: no way to tell whose they are
        f"{PREFIX}.{USER_IN_NAME}.accessToken={ACCESS}; {PREFIX}.{USER_IN_NAME}.refreshToken={REFRESH}",
        f"{PREFIX}.LastAuthUser=",
    ],
)
def test_amplify_no_session(header: str) -> None:
    assert amplify.read(parse_cookie_header(header)) is None


def test_amplify_last_auth_user_without_tokens_is_still_a_session() -> None:
    session = amplify.read(parse_cookie_header(f"{PREFIX}.LastAuthUser=bob"))
    assert session is not None
    assert (session.user, session.access_token, session.refresh_token, session.id_token) == (
        "bob",
        None,
        None,
        None,
    )
    assert session.clock_drift_ms == 0 and "device_key" not in session.refresh_context


def test_amplify_tokens_without_refresh_token_is_still_a_session() -> None:
    header = f"{PREFIX}.LastAuthUser=bob; {PREFIX}.bob.accessToken={ACCESS}; {PREFIX}.bob.refreshToken="
    session = read_amplify(header)
    assert session.access_token == ACCESS and session.refresh_token is None


def test_amplify_only_last_auth_user_counts() -> None:
    header = (
        f"{PREFIX}.alice.accessToken=alice-at; {PREFIX}.alice.refreshToken=alice-rt; "
        f"{PREFIX}.LastAuthUser=bob; {PREFIX}.bob.accessToken=bob-at; {PREFIX}.bob.refreshToken=bob-rt"
    )
    session = read_amplify(header)
    assert (session.user, session.access_token, session.refresh_token) == ("bob", "bob-at", "bob-rt")
    assert not any("alice" in name for name in session.cookie_names)


def test_amplify_user_with_dots_is_not_confused_with_a_longer_name() -> None:
    header = (
        f"{PREFIX}.LastAuthUser=john.doe; {PREFIX}.john.doe.accessToken=mine; "
        f"{PREFIX}.john.doe.x.accessToken=other-user; {PREFIX}.john.accessToken=other"
    )
    session = read_amplify(header)
    assert session.access_token == "mine"
    assert session.cookie_names == {f"{PREFIX}.LastAuthUser", f"{PREFIX}.john.doe.accessToken"}


def test_amplify_finds_cookies_spelled_by_js_cookie_in_the_browser() -> None:
    # js-cookie escapes ( and ) in names; Amplify's server side does not. Both spell the same cookie.
    header = f"{PREFIX}.LastAuthUser=a(b); {PREFIX}.a%28b%29.accessToken=at; {PREFIX}.a(b).refreshToken=rt"
    session = read_amplify(header)
    assert (session.access_token, session.refresh_token) == ("at", "rt")


def test_amplify_first_duplicate_wins() -> None:
    header = f"{PREFIX}.LastAuthUser=bob; {PREFIX}.bob.accessToken=deep-path; {PREFIX}.bob.accessToken=root"
    session = read_amplify(header)
    assert session.access_token == "deep-path"


def test_amplify_values_are_percent_decoded_leniently() -> None:
    header = (
        f'{PREFIX}.LastAuthUser="jos%C3%A9"; {PREFIX}.jos%C3%A9.accessToken=a%2Eb%zz; '
        f"{PREFIX}.jos%C3%A9.refreshToken=%E0%A4"
    )
    session = read_amplify(header)
    assert session.user == "josé"
    assert session.access_token == "a.b%zz"
    assert session.refresh_token == "%E0%A4"


@pytest.mark.parametrize(
    ("raw", "drift"), [("42", 42), ("-1042", -1042), ("abc", 0), ("", 0), ("1.5", 0), ("9" * 5000, 0)]
)
def test_amplify_clock_drift(raw: str, drift: int) -> None:
    session = amplify.read(parse_cookie_header(f"{PREFIX}.LastAuthUser=bob; {PREFIX}.bob.clockDrift={raw}"))
    assert session is not None and session.clock_drift_ms == drift


# ---------------------------------------------------------------------------------------------
# amplify layout: write
# ---------------------------------------------------------------------------------------------


def test_amplify_cookie_header_replaces_tokens_in_place() -> None:
    cookies = parse_cookie_header(amplify_header())
    session = amplify.read(cookies)
    assert session is not None
    fresh = FreshTokens(access_token="at2", id_token="id2", refresh_token="rt2", clock_drift_ms=7)
    assert parse_cookie_header(amplify.cookie_header(cookies, session, fresh)) == [
        ("_ga", "GA1.1.123456789.1700000000"),
        (f"{PREFIX}.LastAuthUser", "user%2Btag%40example.com"),
        (f"{PREFIX}.{USER_IN_NAME}.accessToken", "at2"),
        (f"{PREFIX}.{USER_IN_NAME}.idToken", "id2"),
        (f"{PREFIX}.{USER_IN_NAME}.refreshToken", "rt2"),
        (f"{PREFIX}.{USER_IN_NAME}.clockDrift", "7"),
        (f"{PREFIX}.{USER_IN_NAME}.signInDetails", cookies[6][1]),
        (f"{PREFIX}.{USER_IN_NAME}.deviceKey", "us-east-1_0b9a6e3c-1f2d"),
        ("theme", "dark"),
    ]


def test_amplify_cookie_header_adds_missing_tokens_and_keeps_id_token_when_none_came() -> None:
    cookies = parse_cookie_header(f"a=1; {PREFIX}.LastAuthUser=bob; {PREFIX}.bob.idToken=old-id; z=2")
    session = amplify.read(cookies)
    assert session is not None
    fresh = FreshTokens(access_token="at2", id_token=None, refresh_token="rt2", clock_drift_ms=0)
    assert amplify.cookie_header(cookies, session, fresh) == (
        f"a=1; {PREFIX}.LastAuthUser=bob; {PREFIX}.bob.idToken=old-id; z=2; "
        f"{PREFIX}.bob.accessToken=at2; {PREFIX}.bob.refreshToken=rt2; {PREFIX}.bob.clockDrift=0"
    )


def test_amplify_cookie_header_replaces_every_duplicate() -> None:
    cookies = parse_cookie_header(
        f"{PREFIX}.LastAuthUser=bob; {PREFIX}.bob.accessToken=a; {PREFIX}.bob.accessToken=b"
    )
    session = amplify.read(cookies)
    assert session is not None
    out = parse_cookie_header(amplify.cookie_header(cookies, session, FRESH))
    assert [v for n, v in out if n.endswith(".accessToken")] == [FRESH.access_token, FRESH.access_token]


def test_amplify_stripped_cookie_header_keeps_device_and_unrelated_cookies() -> None:
    cookies = parse_cookie_header(amplify_header())
    session = amplify.read(cookies)
    assert session is not None
    assert amplify.stripped_cookie_header(cookies, session) == (
        f"_ga=GA1.1.123456789.1700000000; {PREFIX}.{USER_IN_NAME}.deviceKey=us-east-1_0b9a6e3c-1f2d; theme=dark"
    )


def test_amplify_set_cookies_after_refresh() -> None:
    session = amplify.read(parse_cookie_header(amplify_header()))
    assert session is not None
    fresh = FreshTokens(access_token=ACCESS, id_token=ID, refresh_token="rt/2+x==", clock_drift_ms=-3)
    headers = [c.header() for c in amplify.set_cookies(session, fresh, CookieAttributes())]
    attrs = "Path=/; Max-Age=31536000; Secure; SameSite=Lax"
    assert headers == [
        f"{PREFIX}.LastAuthUser=user%2Btag%40example.com; {attrs}",
        f"{PREFIX}.{USER_IN_NAME}.accessToken={ACCESS}; {attrs}",
        f"{PREFIX}.{USER_IN_NAME}.idToken={ID}; {attrs}",
        f"{PREFIX}.{USER_IN_NAME}.refreshToken=rt%2F2%2Bx%3D%3D; {attrs}",
        f"{PREFIX}.{USER_IN_NAME}.clockDrift=-3; {attrs}",
    ]


def test_amplify_set_cookies_for_a_new_user_name_build_names_from_last_auth_user() -> None:
    session = Session(
        user="a b;c",
        access_token=None,
        id_token=None,
        refresh_token="rt",
        cookie_names=frozenset({f"{PREFIX}.LastAuthUser"}),
    )
    cookies = amplify.set_cookies(session, FRESH, CookieAttributes())
    assert [c.name for c in cookies] == [
        f"{PREFIX}.LastAuthUser",
        f"{PREFIX}.a%20b%3Bc.accessToken",
        f"{PREFIX}.a%20b%3Bc.idToken",
        f"{PREFIX}.a%20b%3Bc.refreshToken",
        f"{PREFIX}.a%20b%3Bc.clockDrift",
    ]
    assert cookies[0].value == "a%20b%3Bc"


def test_amplify_set_cookies_overwrite_the_spelling_the_browser_has() -> None:
    cookies = parse_cookie_header(f"{PREFIX}.LastAuthUser=a(b); {PREFIX}.a%28b%29.refreshToken=rt")
    session = amplify.read(cookies)
    assert session is not None
    names = [c.name for c in amplify.set_cookies(session, FRESH, CookieAttributes())]
    assert f"{PREFIX}.a%28b%29.refreshToken" in names
    assert f"{PREFIX}.a(b).refreshToken" not in names
    assert f"{PREFIX}.a(b).accessToken" in names  # none yet: the canonical spelling


def test_amplify_set_cookies_without_id_token_leave_it_alone() -> None:
    session = amplify.read(parse_cookie_header(amplify_header()))
    assert session is not None
    fresh = FreshTokens(access_token="at", id_token=None, refresh_token="rt", clock_drift_ms=0)
    assert not any(
        c.name.endswith(".idToken") for c in amplify.set_cookies(session, fresh, CookieAttributes())
    )


def test_set_cookie_attributes_follow_the_config() -> None:
    session = amplify.read(parse_cookie_header(f"{PREFIX}.LastAuthUser=bob"))
    assert session is not None
    attrs = CookieAttributes(
        secure=False, same_site=None, path="/app", max_age_s=3600, http_only=True, domain=".ex.com"
    )
    header = amplify.set_cookies(session, FRESH, attrs)[0].header()
    assert header == f"{PREFIX}.LastAuthUser=bob; Path=/app; Domain=.ex.com; Max-Age=3600; HttpOnly"
    strict = CookieAttributes(same_site="Strict")
    assert amplify.set_cookies(session, FRESH, strict)[0].header().endswith("; Secure; SameSite=Strict")
    none = CookieAttributes(same_site="None")
    assert amplify.set_cookies(session, FRESH, none)[0].header().endswith("; Secure; SameSite=None")


def test_a_cookie_that_ends_with_its_own_claims_carries_expires_instead_of_max_age() -> None:
    """For a layout whose cookie expires with its own claims (Auth.js: the JWT's `exp`); a browser
    and the merge's own reader agree on when it ends."""
    cookie = SetCookie("__Secure-authjs.session-token", "v", "/", None, 0, True, True, "Lax", 1_800_000_000)
    header = cookie.header()
    assert header == (
        "__Secure-authjs.session-token=v; Path=/; Expires=Fri, 15 Jan 2027 08:00:00 GMT; Secure; HttpOnly; SameSite=Lax"
    )
    assert not clears_cookie(header, 1_799_999_999.0) and clears_cookie(header, 1_800_000_001.0)


def test_amplify_clear_cookies_expire_every_session_cookie() -> None:
    session = amplify.read(parse_cookie_header(amplify_header()))
    assert session is not None
    cleared = amplify.clear_cookies(session, CookieAttributes(domain="example.com"))
    assert {c.name for c in cleared} == session.cookie_names
    for cookie in cleared:
        assert (
            cookie.header() == f"{cookie.name}=; Path=/; Domain=example.com; Max-Age=0; Secure; SameSite=Lax"
        )


def test_clear_cookies_skip_names_that_cannot_be_written() -> None:
    session = amplify.read(parse_cookie_header(f"{PREFIX}.LastAuthUser=josé; {PREFIX}.josé.accessToken=at"))
    assert session is not None and session.access_token == "at"
    assert [c.name for c in amplify.clear_cookies(session, CookieAttributes())] == [f"{PREFIX}.LastAuthUser"]


def test_amplify_needs_a_user_to_write() -> None:
    session = Session(user=None, access_token=None, id_token=None, refresh_token="rt")
    with pytest.raises(ValueError, match="LastAuthUser"):
        amplify.set_cookies(session, FRESH, CookieAttributes())


@pytest.mark.parametrize(
    "evil", ["x\r\nSet-Cookie: admin=1", "x; Domain=evil.com", "a,b=c", 'q"uote\\', "\x00\x7f"]
)
def test_header_injection_is_impossible(evil: str) -> None:
    session = Session(user=evil, access_token=None, id_token=None, refresh_token=evil)
    fresh = FreshTokens(access_token=evil, id_token=evil, refresh_token=evil, clock_drift_ms=0)
    for layout in (amplify, NamedLayout(CookieNames(id_token="idt"))):
        for cookie in layout.set_cookies(session, fresh, CookieAttributes()):
            header = cookie.header()
            assert not any(c in header for c in '\r\n\x00\x7f,"\\')
            assert header.count(";") == 4  # Path, Max-Age, Secure, SameSite: no smuggled attribute
        header = layout.cookie_header([("a", "1")], session, fresh)
        assert not any(c in header for c in '\r\n\x00,"\\')
        assert parse_cookie_header(header)[0][0] == "a"
        assert all(n for n, _ in parse_cookie_header(header))


@pytest.mark.parametrize(
    "kwargs",
    [
        {"name": ""},
        {"name": "a b"},
        {"name": "a;b"},
        {"name": "a=b"},
        {"name": "a\r\nb"},
        {"name": "josé"},
        {"value": "a;b"},
        {"value": "a b"},
        {"value": "a,b"},
        {"value": "x\r\n"},
        {"path": "relative"},
        {"path": "/a;Domain=x"},
        {"path": "/a\r\n"},
        {"domain": "evil.com; Secure"},
        {"domain": ""},
        {"same_site": "lax; x"},
    ],
)
def test_set_cookie_refuses_what_could_split_or_extend_the_header(kwargs: dict[str, str]) -> None:
    fields: dict[str, object] = {
        "name": "n",
        "value": "v",
        "path": "/",
        "domain": None,
        "max_age_s": 1,
        "secure": True,
        "http_only": False,
        "same_site": "Lax",
    }
    with pytest.raises(ValueError):
        SetCookie(**{**fields, **kwargs})  # type: ignore[arg-type]


# ---------------------------------------------------------------------------------------------
# named layout
# ---------------------------------------------------------------------------------------------

NAMES = CookieNames(access_token="at", refresh_token="rt", id_token="idt")
named = NamedLayout(NAMES)


def test_named_reads_plain_cookies() -> None:
    session = named.read(parse_cookie_header(f"x=1; at={ACCESS}; rt=opaque-refresh; idt={ID}"))
    assert session == Session(
        user=None,
        access_token=ACCESS,
        id_token=ID,
        refresh_token="opaque-refresh",
        clock_drift_ms=0,
        cookie_names=frozenset({"at", "rt", "idt"}),
    )


def test_named_reassembles_chunks_in_index_order() -> None:
    session = named.read(parse_cookie_header("rt=r; at.1=def; x=1; at.0=abc; at.2=ghi"))
    assert session is not None
    assert session.access_token == "abcdefghi"
    assert session.cookie_names == {"at.0", "at.1", "at.2", "rt"}


def test_named_chunks_must_be_contiguous_from_zero() -> None:
    session = named.read(parse_cookie_header("at.0=abc; at.1=def; at.3=stale; rt.1=orphan"))
    assert session is not None
    assert session.access_token == "abcdef"
    assert session.refresh_token is None
    assert {"at.3", "rt.1"} <= session.cookie_names  # still ours to clean up


def test_named_plain_cookie_wins_over_chunks() -> None:
    session = named.read(parse_cookie_header("at.0=old; at=plain; at.1=old"))
    assert session is not None and session.access_token == "plain"
    session = named.read(parse_cookie_header("at=; at.0=chunk"))
    assert session is not None and session.access_token == "chunk"


def test_named_ignores_lookalike_names() -> None:
    assert named.read(parse_cookie_header("at.x=1; at.01=2; atx=3; rt.-1=4; AT=5; at.=6")) is None


def test_named_values_are_percent_decoded() -> None:
    session = named.read(parse_cookie_header("at=abc%3D%3D; rt=dGVzdA=="))
    assert session is not None
    assert (session.access_token, session.refresh_token) == ("abc==", "dGVzdA==")


def test_named_without_id_token_name() -> None:
    layout = NamedLayout(CookieNames(access_token="at", refresh_token="rt"))
    session = layout.read(parse_cookie_header("at=a; rt=r; idt=i"))
    assert session is not None and session.id_token is None and session.cookie_names == {"at", "rt"}
    sets = layout.set_cookies(session, FRESH, CookieAttributes())
    assert [c.name for c in sets] == ["at", "rt"]


def test_chunks_respect_the_browser_limit() -> None:
    assert Chunks().split("at", "x" * (MAX_COOKIE_BYTES - 2)) == [("at", "x" * 4094)]
    chunks = Chunks().split("at", "x" * (MAX_COOKIE_BYTES - 1))
    assert [n for n, _ in chunks] == ["at.0", "at.1"]
    assert all(len(n) + len(v) <= MAX_COOKIE_BYTES for n, v in chunks)
    assert len(chunks[0][0]) + len(chunks[0][1]) == MAX_COOKIE_BYTES


def test_named_big_value_replaces_plain_cookie_with_chunks() -> None:
    session = named.read(parse_cookie_header("at=small; rt=r"))
    assert session is not None
    big = FreshTokens(access_token="A" * 9000, id_token=None, refresh_token="r2", clock_drift_ms=0)
    headers = [c.header() for c in named.set_cookies(session, big, CookieAttributes())]
    assert [h.split("=", 1)[0] for h in headers] == ["at.0", "at.1", "at.2", "at", "rt"]
    assert headers[3] == "at=; Path=/; Max-Age=0; Secure; SameSite=Lax"


def test_named_shorter_value_deletes_stale_chunks_and_plain_cookie() -> None:
    cookies = parse_cookie_header("at.0=a; at.1=b; at.2=c; at.3=d; rt.0=r; rt.1=s")
    session = named.read(cookies)
    assert session is not None
    fresh = FreshTokens(access_token="B" * 5000, id_token=None, refresh_token="short", clock_drift_ms=0)
    cookies_set = named.set_cookies(session, fresh, CookieAttributes())
    written = [c.name for c in cookies_set if c.max_age_s > 0]
    deleted = [c.name for c in cookies_set if c.max_age_s == 0]
    assert written == ["at.0", "at.1", "rt"]
    assert deleted == ["at.2", "at.3", "rt.0", "rt.1"]
    assert all(c.value == "" for c in cookies_set if c.max_age_s == 0)


def test_named_cookie_header_puts_new_chunks_where_the_old_ones_were() -> None:
    cookies = parse_cookie_header("a=1; at.0=x; b=2; at.1=y; rt=r; c=3")
    session = named.read(cookies)
    assert session is not None
    fresh = FreshTokens(access_token="Z" * 5000, id_token="i", refresh_token="r2", clock_drift_ms=0)
    out = parse_cookie_header(named.cookie_header(cookies, session, fresh))
    assert [n for n, _ in out] == ["a", "at.0", "at.1", "b", "rt", "c", "idt"]
    assert named.read(out) == Session(
        user=None,
        access_token="Z" * 5000,
        id_token="i",
        refresh_token="r2",
        cookie_names=frozenset({"at.0", "at.1", "rt", "idt"}),
    )


def test_named_stripped_and_cleared() -> None:
    cookies = parse_cookie_header("a=1; at.0=x; at.1=y; rt=r; idt=i; b=2")
    session = named.read(cookies)
    assert session is not None
    assert named.stripped_cookie_header(cookies, session) == "a=1; b=2"
    cleared = named.clear_cookies(session, CookieAttributes())
    assert [c.name for c in cleared] == ["at.0", "at.1", "idt", "rt"]
    assert all(c.max_age_s == 0 and c.value == "" for c in cleared)


def test_named_escapes_what_cannot_be_a_cookie_value() -> None:
    session = named.read(parse_cookie_header("rt=r"))
    assert session is not None
    fresh = FreshTokens(access_token="a b;c%", id_token=None, refresh_token="x.y-z_~+/=", clock_drift_ms=0)
    values = {c.name: c.value for c in named.set_cookies(session, fresh, CookieAttributes())}
    assert values == {"at": "a%20b%3Bc%25", "rt": "x.y-z_~+/="}


def test_named_layout_refuses_clashing_names() -> None:
    with pytest.raises(ValueError):
        NamedLayout(CookieNames(access_token="t", refresh_token="t"))


def test_make_layout() -> None:
    cognito = CognitoConfig(client_id=CLIENT_ID, user_pool_id="us-east-1_AbCdEf123")
    assert isinstance(make_layout(CookiesConfig(), cognito), AmplifyLayout)
    assert isinstance(make_layout(CookiesConfig(layout="named", layout_config=NAMES), None), NamedLayout)
    with pytest.raises(ValueError, match="client id"):
        make_layout(CookiesConfig(), None)


# ---------------------------------------------------------------------------------------------
# Properties
# ---------------------------------------------------------------------------------------------

any_text = st.text(alphabet=st.characters(exclude_categories=()), max_size=200)
token_text = st.text(min_size=1, max_size=300)
unrelated_name = st.text(alphabet="abcxyz_-.0123456789GA", min_size=1, max_size=12).filter(
    lambda n: n.split(".")[0] not in ("at", "rt", "idt") and not n.startswith("Cognito")
)
unrelated_value = st.text(
    alphabet=st.characters(min_codepoint=0x21, max_codepoint=0x7E, exclude_characters=";")
)


def is_auth_cookie(name: str) -> bool:
    return name.startswith("CognitoIdentityServiceProvider.") or name.split(".")[0] in ("at", "rt", "idt")


unrelated_cookies = st.lists(st.tuples(unrelated_name, unrelated_value), max_size=8)


@given(unrelated_cookies, unrelated_cookies, token_text, token_text, st.integers(0, 2))
def test_cookie_header_keeps_unrelated_cookies_in_order(
    before: list[tuple[str, str]], after: list[tuple[str, str]], access: str, refresh: str, chunks: int
) -> None:
    fresh = FreshTokens(access_token=access, id_token=None, refresh_token=refresh, clock_drift_ms=1)
    ours_named = [(f"at.{i}", "x") for i in range(chunks)] or [("at", "x")]
    ours_amplify = [(f"{PREFIX}.LastAuthUser", "bob"), (f"{PREFIX}.bob.accessToken", "x")]
    for layout, ours in ((named, ours_named), (amplify, ours_amplify)):
        cookies = before + ours + after
        session = layout.read(cookies)
        assert session is not None
        out = parse_cookie_header(layout.cookie_header(cookies, session, fresh))
        assert [c for c in out if not is_auth_cookie(c[0])] == before + after
        reread = layout.read(out)
        assert reread is not None
        assert (reread.access_token, reread.refresh_token) == (access, refresh)
        assert parse_cookie_header(layout.stripped_cookie_header(cookies, session)) == before + after


@given(
    st.text(max_size=12_000), st.text(max_size=12_000), st.sampled_from(["at", "a", "access_token_long_name"])
)
def test_named_chunking_round_trips_any_size(access: str, refresh: str, name: str) -> None:
    layout = NamedLayout(CookieNames(access_token=name, refresh_token="rt"))
    browser = Browser("rt.0=old; rt.1=old; rt.2=old")
    for value in (access, "x" * 20_000, access):
        session = layout.read(parse_cookie_header(browser.cookie_header()))
        assert session is not None
        fresh = FreshTokens(access_token=value, id_token=None, refresh_token=refresh, clock_drift_ms=0)
        set_cookies = layout.set_cookies(session, fresh, CookieAttributes())
        assert all(len(c.name) + len(c.value) <= MAX_COOKIE_BYTES for c in set_cookies)
        browser.apply([c.header() for c in set_cookies])
        reread = layout.read(parse_cookie_header(browser.cookie_header()))
        assert reread is not None
        assert reread.access_token == (value or None)
        assert reread.refresh_token == (refresh or None)
        # What the upstream was given reads back the same as what the browser now holds.
        upstream = layout.read(
            parse_cookie_header(layout.cookie_header(parse_cookie_header(""), session, fresh))
        )
        assert upstream is not None and upstream.access_token == reread.access_token


@given(
    st.text(min_size=1, max_size=60), token_text, st.one_of(st.none(), token_text), token_text, st.integers()
)
def test_amplify_round_trips_through_a_browser(
    user: str, access: str, id_token: str | None, refresh: str, drift: int
) -> None:
    session = Session(
        user=user,
        access_token=None,
        id_token=None,
        refresh_token="old",
        cookie_names=frozenset({f"{PREFIX}.LastAuthUser"}),
    )
    fresh = FreshTokens(access_token=access, id_token=id_token, refresh_token=refresh, clock_drift_ms=drift)
    browser = Browser("_ga=GA1.1.1.1")
    browser.apply([c.header() for c in amplify.set_cookies(session, fresh, CookieAttributes())])
    reread = amplify.read(parse_cookie_header(browser.cookie_header()))
    assert reread is not None
    assert reread.user == user
    assert (reread.access_token, reread.id_token, reread.refresh_token) == (access, id_token, refresh)
    if abs(drift) < 10**15:
        assert reread.clock_drift_ms == drift


@given(any_text, any_text, any_text, any_text, any_text)
def test_no_header_value_produced_contains_a_line_break(
    user: str, access: str, id_token: str, refresh: str, other: str
) -> None:
    fresh = FreshTokens(access_token=access, id_token=id_token, refresh_token=refresh, clock_drift_ms=0)
    session = Session(user=user or "u", access_token=access, id_token=id_token, refresh_token=refresh)
    cookies = [("a", other), (other, "b"), (f"{PREFIX}.LastAuthUser", other)]
    for layout in (amplify, named):
        produced = [c.header() for c in layout.set_cookies(session, fresh, CookieAttributes())]
        produced += [c.header() for c in layout.clear_cookies(session, CookieAttributes())]
        produced.append(layout.cookie_header(cookies, session, fresh))
        produced.append(layout.stripped_cookie_header(cookies, session))
        found = layout.read(parse_cookie_header(other))
        if found is not None:
            produced.append(layout.cookie_header(parse_cookie_header(other), found, fresh))
            produced += [c.header() for c in layout.clear_cookies(found, CookieAttributes())]
        for value in produced:
            assert "\r" not in value and "\n" not in value and "\0" not in value


@given(st.floats(min_value=0, max_value=253402300799, allow_nan=False))
def test_http_date_is_the_imf_fixdate_email_utils_writes(epoch_s: float) -> None:
    from email.utils import formatdate

    from cookieguard.cookies import http_date

    assert http_date(epoch_s) == formatdate(epoch_s, usegmt=True)
