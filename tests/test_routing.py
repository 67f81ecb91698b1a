"""Request targets as cookieguard routes and forwards them (cookieguard.edge.routing.parse_target)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from cookieguard.edge.routing import Target, parse_target


@pytest.mark.parametrize(
    ("raw", "path", "forward"),
    [
        ("/", "/", "/"),
        ("/a/b/..", "/a/", "/a/"),
        ("/a/./b", "/a/b", "/a/b"),
        ("/../a", "/a", "/a"),
        ("/a/.", "/a/", "/a/"),
        ("/_next/static/../../dashboard?x=1", "/dashboard", "/dashboard?x=1"),
        ("/a/%2e%2E/b", "/b", "/b"),
        ("//admin//x/", "/admin/x/", "/admin/x/"),
        ("/%E2%82%AC/x%20y?q=%2e%2e", "/\u20ac/x y", "/%E2%82%AC/x%20y?q=%2e%2e"),
        ("/a/.well-known/x", "/a/.well-known/x", "/a/.well-known/x"),
        ("/a..b/c", "/a..b/c", "/a..b/c"),
    ],
)
def test_dot_segments_are_removed_and_the_encoding_kept(raw: str, path: str, forward: str) -> None:
    assert parse_target(raw) == Target(path=path, forward=forward)


def test_absolute_form_becomes_origin_form_with_its_authority() -> None:
    assert parse_target("http://evil.example/admin?x=1") == Target("/admin", "/admin?x=1", "evil.example")
    assert parse_target("HTTPS://user@h:8443") == Target("/", "/", "h:8443")


@pytest.mark.parametrize("raw", ["/a/..%2f..%2fb", "/a%2F../b", "*", "example.com:443", "http:///x"])
def test_ambiguous_or_unroutable_targets_are_refused(raw: str) -> None:
    assert parse_target(raw) is None


@given(st.lists(st.sampled_from(["a", "..", ".", "", "%2e%2e", "%2E", "b%20c"]), max_size=8))
def test_a_normalised_path_has_no_dot_segment_and_is_stable(segments: list[str]) -> None:
    target = parse_target("/" + "/".join(segments))
    assert target is not None
    assert not {".", ".."} & set(target.path.split("/"))
    assert "//" not in target.forward
    assert parse_target(target.forward) == target
