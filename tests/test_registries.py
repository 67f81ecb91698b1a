"""Provider kinds and cookie layouts are registries: adding one is its module plus one line.

Everything else (the config loader's choices and cross-checks, the error messages) is derived
from `providers.KINDS` and `layouts.LAYOUTS`, which these tests pin against docs/configuration.md.
"""

from __future__ import annotations

import ast
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
    assert set(LAYOUTS) == documented("cookies.layout") == {"amplify", "authjs", "named", "supabase"}
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


# -- kinds stay in their module (STYLE.md "Kinds in one registry") ---------------------------------

PACKAGE = Path(__file__).resolve().parent.parent / "cookieguard"
KIND_NAMES = {"amplify", "named", "supabase", "cognito", "oidc"}
# The registries may name every kind, a kind's own module its own name (a new layout or provider
# needs no entry here); the demo (ops/demo/) plays the IdPs and the apps themselves.
KIND_FOLDERS = ("session/layouts/", "tokens/providers/")


def may_compare(path: str) -> set[str]:
    folder, _, module = path.rpartition("/")
    if f"{folder}/" not in KIND_FOLDERS:
        return set()
    return KIND_NAMES if module == "__init__.py" else {module.removesuffix(".py")}


# Cognito's fields, its claims (`username`, `cognito:username`) among them: each provider names
# the claims of its own tokens (`ProviderConfig.user_claims`). OIDC's `preferred_username` is no match.
COGNITO_FIELDS = re.compile(r"\b(device_key|username)\b")


def package_sources() -> list[tuple[str, str]]:
    return [
        (path.relative_to(PACKAGE).as_posix(), path.read_text(encoding="utf-8"))
        for path in sorted(PACKAGE.rglob("*.py"))
        if "ops/demo/" not in path.relative_to(PACKAGE).as_posix()
    ]


def kind_comparisons(source: str) -> list[str]:
    """`x == "amplify"`, `kind != "oidc"`, `layout in ("named", ...)`: a kind's name compared."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if not isinstance(node, ast.Compare):
            continue
        for operand in [node.left, *node.comparators]:
            values = operand.elts if isinstance(operand, ast.Tuple | ast.List | ast.Set) else [operand]
            found += [v.value for v in values if isinstance(v, ast.Constant) and v.value in KIND_NAMES]
    return found


def test_no_kind_name_is_compared_outside_its_module_and_the_registries() -> None:
    leaks = {
        path: names
        for path, source in package_sources()
        if (names := [n for n in kind_comparisons(source) if n not in may_compare(path)])
    }
    assert leaks == {}


def test_cognitos_fields_stay_in_the_cognito_provider_and_the_amplify_layout() -> None:
    leaks = {
        path: sorted(set(COGNITO_FIELDS.findall(source)))
        for path, source in package_sources()
        if path not in {"tokens/providers/cognito.py", "session/layouts/amplify.py"}
        and COGNITO_FIELDS.search(source)
    }
    assert leaks == {}


def test_the_leak_checks_would_catch_a_leak() -> None:
    assert kind_comparisons('if config.cookies.layout == "amplify": pass') == ["amplify"]
    assert kind_comparisons('ok = kind in ("oidc", "x")') == ["oidc"]
    assert kind_comparisons('LAYOUTS = {"named": 1}') == []
    assert COGNITO_FIELDS.search("refresh(token, device_key=key)")
    assert COGNITO_FIELDS.search('user = payload.get("cognito:username")')
    assert COGNITO_FIELDS.search("return claims.username or claims.sub")
    assert not COGNITO_FIELDS.search('user_claims = ("preferred_username", "email")')
    assert may_compare("session/layouts/named.py") == {"named"} and may_compare("ops/explain.py") == set()
