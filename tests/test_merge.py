"""Merging the proxy's Set-Cookie headers into the upstream's: the upstream's always win."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from cookieguard.config import CookieAttributes
from cookieguard.cookies import SetCookie
from cookieguard.session.merge import (
    _parse_scope,
    clears_cookie,
    merge_set_cookies,
    set_cookie_key,
    signs_out,
)
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
    merged = merge_set_cookies(upstream, cookies, now_s=NOW)
    assert merged[: len(upstream)] == upstream
    added = merged[len(upstream) :]
    keys = [set_cookie_key(h) for h in added]
    assert len(keys) == len(set(keys))
    upstream_scopes = [_parse_scope(h) for h in upstream]
    for key in keys:
        assert not any(scope_matches(scope, key) for scope in upstream_scopes)
    # Every cookie of ours whose scope the upstream left alone is there, unless the upstream
    # clears one of the cookies ours would write: then it signs out and none is.
    wanted = {set_cookie_key(c.header()) for c in cookies}
    if signs_out(upstream, {c.name for c in cookies}, NOW):
        wanted = set()
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


def test_an_app_that_clears_one_auth_cookie_gets_none_of_our_tokens() -> None:
    """The app clears only the access token (its sign-out): our fresh refresh token, id token and
    LastAuthUser are not written either, or the next request would refresh the session back."""
    idt = AT.replace("accessToken", "idToken")
    upstream = [f"{AT}=; Path=/; Max-Age=0"]
    merged = merge_set_cookies(upstream, [ours(AT), ours(RT), ours(idt)], auth_cookies=SESSION, now_s=NOW)
    assert merged == upstream
    # Our own deletions still go out: they agree with the sign-out.
    expired = SetCookie.expired(RT, CookieAttributes())
    assert merge_set_cookies(upstream, [ours(idt), expired], auth_cookies=SESSION, now_s=NOW) == [
        *upstream,
        expired.header(),
    ]


def test_cookies_the_app_sets_or_clears_outside_the_session_change_nothing() -> None:
    upstream = ["theme=; Max-Age=0", f"{AT}=app-issued; Path=/app", "LastAuthUser=x"]
    merged = merge_set_cookies(upstream, [ours(AT), ours(RT)], auth_cookies=SESSION, now_s=NOW)
    assert merged == [*upstream, ours(AT).header(), ours(RT).header()]


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
def test_a_response_that_clears_an_auth_cookie_never_carries_our_tokens(
    upstream_parts: list[tuple[str, str, str]], cookies: list[SetCookie]
) -> None:
    upstream = [f"{name}={value}{attributes}" for name, value, attributes in upstream_parts]
    merged = merge_set_cookies(upstream, cookies, auth_cookies=SESSION, now_s=NOW)
    added = merged[len(upstream) :]
    clearing = any(
        name in SESSION and (not value or "Max-Age=0" in attributes or "1970" in attributes)
        for name, value, attributes in upstream_parts
    )
    if clearing:
        assert added == []  # every cookie of ours here carries a value
    assert merged[: len(upstream)] == upstream
