"""Cookie layouts: where an app keeps its session in cookies (docs/behaviour.md §5).

A layout is one module here (a `Layout` subclass) plus one line in `LAYOUTS`; `cookies.layout`
in the configuration names it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from cookieguard.session.layouts.amplify import AmplifyLayout
from cookieguard.session.layouts.authjs import AuthjsLayout
from cookieguard.session.layouts.base import Chunks, FreshTokens, Layout, Session, SessionReader
from cookieguard.session.layouts.named import NamedLayout
from cookieguard.session.layouts.supabase import SupabaseLayout

if TYPE_CHECKING:
    from cookieguard.config import CookiesConfig
    from cookieguard.tokens.providers.base import ProviderConfig

__all__ = [
    "LAYOUTS",
    "AmplifyLayout",
    "AuthjsLayout",
    "Chunks",
    "FreshTokens",
    "Layout",
    "NamedLayout",
    "Session",
    "SessionReader",
    "SupabaseLayout",
    "make_layout",
]

LAYOUTS: dict[str, type[Layout]] = {
    "amplify": AmplifyLayout,
    "authjs": AuthjsLayout,
    "named": NamedLayout,
    "supabase": SupabaseLayout,
}


def make_layout(cookies: CookiesConfig, provider: ProviderConfig | None) -> Layout:
    """The configured layout; ValueError when the configuration cannot make one."""
    try:
        layout = LAYOUTS[cookies.layout]
    except KeyError:
        raise ValueError(f"unknown cookie layout {cookies.layout!r}") from None
    return layout.from_config(cookies, provider)
