"""What the browser is told: the app's Set-Cookie headers and cookieguard's, merged.

The app's own always win; a session (every cookie a layout owns) is one value, so the app's write
of any part of it wins as a whole (cookieguard.session.merge).
"""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from cookieguard.config import CookieAttributes
from cookieguard.cookies import SetCookie, parse_cookie_header
from cookieguard.session.layouts import (
    AmplifyLayout,
    FreshTokens,
    Layout,
    NamedLayout,
    Session,
    SupabaseLayout,
)
from cookieguard.session.layouts.named import CookieNames
from cookieguard.session.layouts.supabase import session_cookies
from cookieguard.session.merge import (
    _parse_scope,
    clears_cookie,
    merge_answer,
    merge_set_cookies,
    set_cookie_key,
)
from tests.support.apps import Browser
from tests.support.properties import core_property

AT = "CognitoIdentityServiceProvider.3n4b5urk1ft4fl3mg5e62d9ado.user+tag%40example.com.accessToken"
RT = "CognitoIdentityServiceProvider.3n4b5urk1ft4fl3mg5e62d9ado.user+tag%40example.com.refreshToken"


def ours(name: str, value: str = "fresh", path: str = "/", domain: str | None = None) -> SetCookie:
    return SetCookie.with_attributes(name, value, CookieAttributes(path=path, domain=domain))


@pytest.mark.parametrize(
    ("header", "key"),
    [
        ("a=b", ("a", None, "/")),
        ("a=b; Path=/app; Domain=Example.COM", ("a", "example.com", "/app")),
        ("  a = b ;path=/x;DOMAIN=.Foo.com;secure", ("a", "foo.com", "/x")),
        ("_ga=GA1.1.1.1; Expires=Wed, 21 Oct 2015 07:28:00 GMT; Path=/", ("_ga", None, "/")),
        ("a=b; Path=relative", ("a", None, "/")),  # RFC 6265 5.2.4: not absolute -> default path
        ("a=b; Path=", ("a", None, "/")),
        ("a=b; Domain=", ("a", None, "/")),  # RFC 6265 5.2.3: an empty Domain is ignored
        ("a=b; Domain=x.com; Domain=", ("a", "x.com", "/")),
        ("a=b; Path=/one; Path=/two; Domain=a.com; Domain=b.com", ("a", "b.com", "/two")),
        ("bare; Path=/", ("", None, "/")),  # RFC 6265bis: no "=" means an empty name
        ("=v", ("", None, "/")),
        ("", ("", None, "/")),
        ("a=b=c; HttpOnly; SameSite=Lax; Max-Age=0", ("a", None, "/")),
    ],
)
def test_set_cookie_key(header: str, key: tuple[str, str | None, str]) -> None:
    assert set_cookie_key(header) == key


def test_a_missing_path_is_not_reported_as_a_path() -> None:
    assert _parse_scope("a=b") == ("a", None, None)
    assert _parse_scope("a=b; Path=/") == ("a", None, "/")


def test_upstream_headers_come_back_unchanged_and_ours_are_added() -> None:
    expires = "theme=dark; Expires=Wed, 21 Oct 2026 07:28:00 GMT; Path=/"
    upstream = [expires, "sid=abc; Path=/; HttpOnly", "sid=other; Path=/api"]
    merged = merge_set_cookies(upstream, [ours(AT), ours(RT)])
    assert merged[:3] == upstream
    assert merged[3:] == [
        f"{AT}=fresh; Path=/; Max-Age=31536000; Secure; SameSite=Lax",
        f"{RT}=fresh; Path=/; Max-Age=31536000; Secure; SameSite=Lax",
    ]


def test_upstream_signing_out_wins() -> None:
    upstream = [f"{AT}=; Path=/; Max-Age=0", f"{RT}=; Path=/; Expires=Thu, 01 Jan 1970 00:00:00 GMT"]
    assert merge_set_cookies(upstream, [ours(AT), ours(RT)]) == upstream


def test_amplify_adapter_deletion_without_path_or_domain_wins() -> None:
    # adapter-nextjs deletes with a bare `name=;Expires=...`: no Path, no Domain.
    upstream = [f"{AT}=;Expires=Thu, 01 Jan 1970 00:00:00 GMT"]
    assert merge_set_cookies(upstream, [ours(AT, path="/app", domain="example.com")]) == upstream


def test_explicit_other_scope_does_not_block_ours() -> None:
    upstream = [f"{AT}=x; Path=/other", f"{AT}=y; Path=/; Domain=elsewhere.com"]
    merged = merge_set_cookies(upstream, [ours(AT)])
    assert merged == [*upstream, ours(AT).header()]


def test_upstream_domain_cookie_does_not_block_our_host_only_cookie() -> None:
    upstream = [f"{AT}=x; Path=/; Domain=example.com"]
    assert merge_set_cookies(upstream, [ours(AT)]) == [*upstream, ours(AT).header()]
    assert merge_set_cookies(upstream, [ours(AT, domain=".Example.com")]) == upstream


def test_names_compare_exactly() -> None:
    upstream = [f"{AT.lower()}=x; Path=/"]
    assert merge_set_cookies(upstream, [ours(AT)]) == [*upstream, ours(AT).header()]


def test_ours_are_never_doubled() -> None:
    merged = merge_set_cookies(
        [], [ours(AT, "first"), ours(RT), ours(AT, "second"), ours(AT, "x", path="/app")]
    )
    assert merged == [ours(RT).header(), ours(AT, "second").header(), ours(AT, "x", path="/app").header()]
    same_domain = merge_set_cookies([], [ours(AT, "a", domain=".ex.com"), ours(AT, "b", domain="EX.com")])
    assert same_domain == [ours(AT, "b", domain="EX.com").header()]


def test_nothing_to_add() -> None:
    assert merge_set_cookies([], []) == []
    assert merge_set_cookies(["a=b"], []) == ["a=b"]


@given(st.text(alphabet=st.characters(exclude_categories=())))
def test_set_cookie_key_never_raises(header: str) -> None:
    name, domain, path = set_cookie_key(header)
    assert ";" not in name and path.startswith("/")
    assert domain is None or (domain == domain.lower() and not domain.startswith(".") and domain)


names = st.sampled_from(["a", "b", AT])
domains = st.sampled_from([None, "example.com", ".example.com", "EXAMPLE.com", "app.example.com"])
paths = st.sampled_from([None, "/", "/app", "", "rel"])


@st.composite
def upstream_headers(draw: st.DrawFn) -> str:
    name, domain, path = draw(names), draw(domains), draw(paths)
    value = draw(st.sampled_from(["", "v", "x=y", '"q"']))
    attributes = []
    if domain is not None:
        attributes.append(f"{draw(st.sampled_from(['Domain', 'domain']))}={domain}")
    if path is not None:
        attributes.append(f"Path={path}")
    attributes += draw(
        st.lists(
            st.sampled_from(["Expires=Wed, 21 Oct 2026 07:28:00 GMT", "Max-Age=0", "HttpOnly", "Secure"])
        )
    )
    separator = draw(st.sampled_from(["; ", ";"]))
    return separator.join([f"{name}={value}", *draw(st.permutations(attributes))])


our_cookies = st.builds(
    lambda name, value, path, domain: ours(name, value, path, domain),
    names,
    st.sampled_from(["v1", "v2"]),
    st.sampled_from(["/", "/app"]),
    st.sampled_from([None, "example.com", ".Example.com", "app.example.com"]),
)


def scope_matches(upstream: tuple[str, str | None, str | None], key: tuple[str, str | None, str]) -> bool:
    name, domain, path = upstream
    return name == key[0] and domain in (None, key[1]) and path in (None, key[2])


@core_property
@given(st.lists(upstream_headers(), max_size=6), st.lists(our_cookies, max_size=8))
def test_merge_never_doubles_ours_and_never_overrides_upstream(
    upstream: list[str], cookies: list[SetCookie]
) -> None:
    merged = merge_set_cookies(upstream, cookies)
    assert merged[: len(upstream)] == upstream
    added = merged[len(upstream) :]
    keys = [set_cookie_key(h) for h in added]
    assert len(keys) == len(set(keys))
    upstream_scopes = [_parse_scope(h) for h in upstream]
    for key in keys:
        assert not any(scope_matches(scope, key) for scope in upstream_scopes)
    # Every cookie of ours whose scope the upstream left alone is there (per name: the session
    # as a whole is merge_answer's, below).
    wanted = {set_cookie_key(c.header()) for c in cookies}
    assert {k for k in wanted if not any(scope_matches(s, k) for s in upstream_scopes)} == set(keys)
    assert all("\r" not in h and "\n" not in h for h in merged)


# -- the app's sign-out holds (docs/behaviour.md §4) -------------------------------------------

NOW = 1_800_000_000.0  # 2027-01-15
SESSION = frozenset({AT, RT, "CognitoIdentityServiceProvider.3n4b5urk1ft4fl3mg5e62d9ado.LastAuthUser"})


@pytest.mark.parametrize(
    ("header", "clears"),
    [
        ("a=; Path=/", True),
        ("a", True),
        ("a=  ; Path=/", True),
        ("a=v; Max-Age=0", True),
        ("a=v; max-age=-5", True),
        ("a=v; Expires=Thu, 01 Jan 1970 00:00:00 GMT", True),
        ("a=v; Expires=Thu, 01-Jan-1970 00:00:01 GMT; Path=/", True),
        ("a=v; Expires=Thu, 01 Jan 1970 00:00:00 GMT; Max-Age=60", False),  # RFC 6265 5.3: Max-Age wins
        ("a=v; Max-Age=60; Max-Age=0", True),  # the last one counts
        ("a=v; Max-Age=soon; Expires=Thu, 01 Jan 1970 00:00:00 GMT", True),  # an invalid Max-Age is ignored
        ("a=v; Expires=Wed, 21 Oct 2037 07:28:00 GMT", False),
        ("a=v; Expires=not a date", False),
        ("a=v; Max-Age=99999999999999999999", False),
        ("a=v", False),
    ],
)
def test_clears_cookie(header: str, clears: bool) -> None:
    assert clears_cookie(header, NOW) is clears


@given(st.text())
def test_clears_cookie_never_raises(header: str) -> None:
    clears_cookie(header, NOW)


AMPLIFY = AmplifyLayout("3n4b5urk1ft4fl3mg5e62d9ado")
LAST_AUTH_USER = "CognitoIdentityServiceProvider.3n4b5urk1ft4fl3mg5e62d9ado.LastAuthUser"
IDT = AT.replace("accessToken", "idToken")
ATTRS = CookieAttributes()


def amplify_session(*names: str) -> tuple[Browser, Session]:
    browser = Browser({LAST_AUTH_USER: "user%2Btag%40example.com", **{n: "old" for n in names}})
    session = AMPLIFY.read(parse_cookie_header(browser.header()))
    assert session is not None and session.cookie_names == {LAST_AUTH_USER, *names}
    return browser, session


def test_an_app_that_clears_one_auth_cookie_gets_none_of_our_tokens() -> None:
    """The app clears only the access token (its sign-out): our fresh refresh token, id token and
    LastAuthUser are not written; they are expired, or the next request would refresh the
    session back."""
    _, session = amplify_session(AT, RT, IDT)
    upstream = [f"{AT}=; Path=/; Max-Age=0"]
    merged = merge_answer(upstream, [ours(AT), ours(RT), ours(IDT)], session, AMPLIFY, ATTRS, NOW)
    assert merged.set_cookies[:1] == upstream and merged.private
    added = merged.set_cookies[1:]
    assert all("=;" in h and "Max-Age=0" in h for h in added)  # deletions only, none of our tokens
    assert {h.split("=", 1)[0] for h in added} == {RT, IDT, LAST_AUTH_USER}


def test_cookies_the_app_sets_or_clears_outside_the_session_change_nothing() -> None:
    _, session = amplify_session(AT, RT)
    upstream = ["theme=; Max-Age=0", f"{AT}=app-issued; Path=/app", "LastAuthUser=x"]
    merged = merge_answer(upstream, [ours(AT), ours(RT)], session, AMPLIFY, ATTRS, NOW)
    assert merged.set_cookies == [*upstream, ours(AT).header(), ours(RT).header()]


@core_property
@given(
    st.lists(
        st.tuples(
            st.sampled_from([*sorted(SESSION), "other", "theme"]),
            st.sampled_from(["", "v"]),
            st.sampled_from(
                ["", "; Max-Age=0", "; Max-Age=60", "; Expires=Thu, 01 Jan 1970 00:00:00 GMT", "; Path=/x"]
            ),
        ),
        max_size=5,
    ),
    st.lists(our_cookies, max_size=6),
)
def test_a_response_that_writes_or_clears_an_auth_cookie_never_carries_our_tokens(
    upstream_parts: list[tuple[str, str, str]], cookies: list[SetCookie]
) -> None:
    _, session = amplify_session(AT, RT)
    upstream = [f"{name}={value}{attributes}" for name, value, attributes in upstream_parts]
    merged = merge_answer(upstream, cookies, session, AMPLIFY, ATTRS, NOW)
    added = merged.set_cookies[len(upstream) :]
    assert merged.set_cookies[: len(upstream)] == upstream
    clearing = any(
        name in SESSION and (not value or "Max-Age=0" in attributes or "1970" in attributes)
        for name, value, attributes in upstream_parts
    )
    writing = any(
        name in SESSION
        and value
        and "Max-Age=0" not in attributes
        and "1970" not in attributes
        and "/x" not in attributes
        for name, value, attributes in upstream_parts
    )
    if writing:
        assert not any(AMPLIFY.owns(set_cookie_key(h)[0]) for h in added)  # the app's write wins whole
    elif clearing:
        assert all("Max-Age=0" in h for h in added)  # our deletions only
    if writing or clearing:
        assert merged.private


# -- a session is one value on the way back --------------------------------------------------------

SB = SupabaseLayout("sb-ref-auth-token")
SSR_ATTRS = CookieAttributes(secure=False, max_age_s=34560000)
NAMED = NamedLayout(CookieNames(access_token="at", refresh_token="rt", id_token="idt"))


def supabase_cookies(session: dict[str, object], request_names: list[str] = []) -> list[SetCookie]:  # noqa: B006
    return session_cookies(SB.key, session, request_names, SSR_ATTRS)


def sb_session(email: str, size: int) -> dict[str, object]:
    return {
        "access_token": "a" * 40,
        "refresh_token": "r" * 12,
        "expires_at": 1,
        "expires_in": 3600,
        "token_type": "bearer",
        "user": {"email": email, "user_metadata": {"bio": "x" * size}},
    }


def two_chunks(**others: str) -> dict[str, str]:
    browser = Browser(dict(others))
    browser.receive([c.header() for c in supabase_cookies(sb_session("alice@example.com", 2500))])
    assert len(browser.cookies) == 2 + len(others)
    return browser.cookies


def browser_after(
    layout: Layout, request: Browser, upstream: list[str], ours: list[SetCookie], attrs: CookieAttributes
) -> dict[str, str]:
    """The browser's cookies after it stores the merged answer."""
    session = layout.read(parse_cookie_header(request.header()))
    browser = Browser(dict(request.cookies))
    browser.receive(merge_answer(upstream, ours, session, layout, attrs, NOW).set_cookies)
    return browser.cookies


def test_supabase_the_apps_two_chunks_win_over_our_three() -> None:
    """issue 19: the request has 2 chunks; the refresh grows the session to 3; on the same answer
    the app signs another account in with its own 2 chunks (deleting nothing: the request had
    only .0 .1). Judged per name, our .2 was added and the browser joined app .0 + app .1 +
    our .2: no session. The browser must end with exactly the app's 2 chunks."""
    request = Browser({"theme": "dark"})
    request.receive([c.header() for c in supabase_cookies(sb_session("alice@example.com", 2500))])
    assert sorted(request.cookies) == [f"{SB.key}.0", f"{SB.key}.1", "theme"]
    session = SB.read(parse_cookie_header(request.header()))
    assert session is not None
    ours = SB.set_cookies(session, FreshTokens("a" * 3000, None, "n" * 12), SSR_ATTRS)
    assert [c.name for c in ours if c.value] == [f"{SB.key}.0", f"{SB.key}.1", f"{SB.key}.2"]
    theirs = [
        c.header() for c in supabase_cookies(sb_session("bob@example.com", 2400), sorted(request.cookies))
    ]
    assert [h.split("=", 1)[0] for h in theirs] == [f"{SB.key}.0", f"{SB.key}.1"]

    after = browser_after(SB, request, theirs, ours, SSR_ATTRS)
    app = Browser({"theme": "dark"})
    app.receive(theirs)
    assert after == app.cookies
    signed_in = SB.read(parse_cookie_header(Browser(after).header()))
    assert signed_in is not None and signed_in.user == "bob@example.com"


@pytest.mark.parametrize(
    ("case", "layout", "request_cookies", "upstream", "ours", "attrs", "expected"),
    [
        (
            "supabase: the app writes the plain cookie, we would write chunks",
            SB,
            two_chunks(),
            [f"{SB.key}=app; Path=/"],
            [
                SetCookie.expired(f"{SB.key}.1", SSR_ATTRS),
                SetCookie.with_attributes(f"{SB.key}.0", "x", SSR_ATTRS),
            ],
            SSR_ATTRS,
            # Ours neither adds nor deletes: the app's write is the session now.
            two_chunks() | {SB.key: "app"},
        ),
        (
            "supabase: the app deletes the chunks (sign-out): nothing of ours, the rest expired",
            SB,
            two_chunks(theme="dark"),
            [f"{SB.key}.0=; Path=/; Max-Age=0"],
            [SetCookie.with_attributes(f"{SB.key}.0", "x", SSR_ATTRS)],
            SSR_ATTRS,
            {"theme": "dark"},
        ),
        (
            "supabase: another app cookie changes nothing of ours",
            SB,
            {SB.key: "a"},
            ["theme=light; Path=/"],
            [SetCookie.with_attributes(SB.key, "fresh", SSR_ATTRS)],
            SSR_ATTRS,
            {SB.key: "fresh", "theme": "light"},
        ),
        (
            "amplify: the app writes only a (large) id token: none of ours",
            AMPLIFY,
            {LAST_AUTH_USER: "user%2Btag%40example.com", AT: "old", RT: "old", IDT: "old"},
            [f"{IDT}={'i' * 3000}; Path=/"],
            [ours(LAST_AUTH_USER, "user%2Btag%40example.com"), ours(AT), ours(IDT), ours(RT)],
            ATTRS,
            {LAST_AUTH_USER: "user%2Btag%40example.com", AT: "old", RT: "old", IDT: "i" * 3000},
        ),
        (
            "amplify: the app signs another user in: none of ours, nothing of the old user deleted",
            AMPLIFY,
            {LAST_AUTH_USER: "user%2Btag%40example.com", AT: "old", RT: "old"},
            [f"{LAST_AUTH_USER}=bob; Path=/", f"{AT.replace('user+tag%40example.com', 'bob')}=b; Path=/"],
            [ours(AT), ours(RT), ours(LAST_AUTH_USER, "user%2Btag%40example.com")],
            ATTRS,
            {
                LAST_AUTH_USER: "bob",
                AT: "old",
                RT: "old",
                AT.replace("user+tag%40example.com", "bob"): "b",
            },
        ),
        (
            "named: the app writes its own chunked access token: none of ours, its chunks only",
            NAMED,
            {"at": "old", "rt": "old"},
            ["at.0=a0; Path=/", "at.1=a1; Path=/"],
            [ours("at", "fresh"), ours("rt", "fresh"), ours("at.0", "")],
            ATTRS,
            {"at": "old", "rt": "old", "at.0": "a0", "at.1": "a1"},
        ),
        (
            "named: the app writes the refresh token only: our access token is not added either",
            NAMED,
            {"at.0": "o0", "at.1": "o1", "rt": "old"},
            ["rt=app; Path=/"],
            [
                ours("at", "fresh"),
                ours("rt", "fresh"),
                SetCookie.expired("at.0", ATTRS),
                SetCookie.expired("at.1", ATTRS),
            ],
            ATTRS,
            {"at.0": "o0", "at.1": "o1", "rt": "app"},
        ),
        (
            "named: the app sets a cookie at another path: another cookie, ours go out",
            NAMED,
            {"at": "old", "rt": "old"},
            ["at=elsewhere; Path=/admin"],
            [ours("at", "fresh"), ours("rt", "fresh")],
            ATTRS,
            {"at": "fresh", "rt": "fresh"},  # this jar is one path's view: /admin's is not kept
        ),
    ],
    ids=lambda v: v if isinstance(v, str) and " " in v else "",
)
def test_the_apps_write_of_any_part_of_the_session_wins_whole(
    case: str,
    layout: Layout,
    request_cookies: dict[str, str],
    upstream: list[str],
    ours: list[SetCookie],
    attrs: CookieAttributes,
    expected: dict[str, str],
) -> None:
    after = browser_after(layout, Browser(dict(request_cookies)), upstream, ours, attrs)
    assert after == expected, case


def test_an_answer_that_touches_the_session_is_private_even_when_nothing_is_added() -> None:
    session = SB.read([(SB.key, "x")])
    assert merge_answer([f"{SB.key}.0=v"], [], session, SB, SSR_ATTRS, NOW).private
    assert merge_answer([f"{SB.key}.0=v"], [], None, SB, SSR_ATTRS, NOW).private
    assert not merge_answer(["theme=dark"], [], None, SB, SSR_ATTRS, NOW).private
    assert merge_answer([], [ours(SB.key)], None, SB, SSR_ATTRS, NOW).private
