"""Identity provider kinds, and the clients for their refresh endpoints.

A kind is one module here: its config record (a `ProviderConfig` subclass that reads its own
`provider:` keys and knows its issuer, JWKS URL, token expectations and opaque-token rule) and its
refresh client. Adding a kind is that module plus one line in `KINDS`.
"""

from __future__ import annotations

import aiohttp

from cookieguard.schema import Section, one_of
from cookieguard.tokens.providers.base import (
    Provider,
    ProviderConfig,
    RefreshRejected,
    RefreshUnavailable,
    TokenSet,
    load_common,
)
from cookieguard.tokens.providers.cognito import CognitoConfig
from cookieguard.tokens.providers.oidc import OidcConfig
from cookieguard.tokens.providers.supabase import SupabaseConfig

__all__ = [
    "KINDS",
    "Provider",
    "ProviderConfig",
    "RefreshRejected",
    "RefreshUnavailable",
    "TokenSet",
    "load_provider",
    "make_provider",
    "user_claims_of",
]

KINDS: dict[str, type[ProviderConfig]] = {
    CognitoConfig.kind: CognitoConfig,
    OidcConfig.kind: OidcConfig,
    SupabaseConfig.kind: SupabaseConfig,
}


def load_provider(s: Section) -> ProviderConfig | None:
    """Read the `provider:` section; problems are recorded in `s` with their key path."""
    kind = s.get("kind", one_of(*KINDS), "")
    if not kind:
        if not s.has("kind"):
            s.error("kind", f"required ({' or '.join(KINDS)})")
        s.seen.update(s.data)  # the other keys cannot be judged without a kind
        return None
    record = KINDS[kind]
    config = record.load(s, load_common(s, record))
    for key in s.data:
        owners = [name for name, other in KINDS.items() if other is not record and key in other.yaml_keys]
        if key not in s.seen and owners:
            s.seen.add(key)
            s.error(key, f"only valid for kind {' or '.join(owners)}")
    s.finish()
    return config


def make_provider(config: ProviderConfig, session: aiohttp.ClientSession) -> Provider:
    return config.make_provider(session)


def user_claims_of(config: ProviderConfig | None) -> tuple[str, ...]:
    """The claims that name the user in the tokens of `config`'s kind; with no provider
    configured (`cookieguard explain` on a laptop), every kind's, in the order of `KINDS`."""
    if config is not None:
        return config.user_claims
    return tuple(dict.fromkeys(name for record in KINDS.values() for name in record.user_claims))
