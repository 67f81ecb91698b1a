"""Provider kinds and cookie layouts are registries: adding one is its module plus one line.

Everything else (the config loader's choices and cross-checks, the error messages) is derived
from `providers.KINDS` and `layouts.LAYOUTS`, which these tests pin against docs/configuration.md.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from cookieguard.loader import ConfigError, parse_config
from cookieguard.session.layouts import LAYOUTS, Layout
from cookieguard.tokens.providers import KINDS, ProviderConfig

REFERENCE = (Path(__file__).resolve().parent.parent / "docs/configuration.md").read_text(encoding="utf-8")


def documented(key: str) -> set[str]:
    """The backquoted values the configuration reference lists for `key`."""
    row = next(line for line in REFERENCE.splitlines() if line.startswith(f"| `{key}` |"))
    return set(re.findall(r"`([a-z]+)`", row.split("|")[3]))


def test_the_registered_kinds_and_layouts_are_the_documented_ones() -> None:
    assert set(KINDS) == documented("provider.kind") == {"cognito", "oidc", "supabase"}
    assert set(LAYOUTS) == documented("cookies.layout") == {"amplify", "named", "supabase"}
    for name, kind in KINDS.items():
        assert issubclass(kind, ProviderConfig) and kind.kind == name
    assert all(issubclass(layout, Layout) for layout in LAYOUTS.values())


def test_an_unknown_kind_names_the_key_and_lists_the_registered_kinds() -> None:
    with pytest.raises(ConfigError) as error:
        parse_config("upstream: http://a\nprovider: {kind: foo, client_id: x}", env={})
    assert error.value.problems == [f"provider.kind: must be one of {', '.join(KINDS)}, got 'foo'"]


def test_an_unknown_layout_names_the_key_and_lists_the_registered_layouts() -> None:
    with pytest.raises(ConfigError) as error:
        parse_config("upstream: http://a\ncookies: {layout: foo}", env={})
    assert error.value.problems == [f"cookies.layout: must be one of {', '.join(LAYOUTS)}, got 'foo'"]


def test_a_kinds_keys_are_refused_for_another_kind_by_name() -> None:
    with pytest.raises(ConfigError) as error:
        parse_config(
            "upstream: http://a\ncookies: {layout: named}\n"
            "provider: {kind: oidc, issuer: 'https://idp', client_id: x, user_pool_id: p}",
            env={},
        )
    assert error.value.problems == ["provider.user_pool_id: only valid for kind cognito"]


def test_defaults_are_the_records_own() -> None:
    """A key left out of the YAML takes the record's field default (written once)."""
    config = parse_config(
        "upstream: http://a\nprovider: {kind: cognito, user_pool_id: eu-west-1_Abc, client_id: x}", env={}
    )
    assert config.provider is not None
    assert config.provider == type(config.provider)(client_id="x", user_pool_id="eu-west-1_Abc")
    assert config.provider.default_jwks_url == (
        "https://cognito-idp.eu-west-1.amazonaws.com/eu-west-1_Abc/.well-known/jwks.json"
    )
