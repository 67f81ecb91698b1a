"""Clients for identity providers' refresh endpoints."""

from __future__ import annotations

import aiohttp

from ..config import ProviderConfig
from .base import Provider, RefreshRejected, RefreshUnavailable, TokenSet

__all__ = ["Provider", "RefreshRejected", "RefreshUnavailable", "TokenSet", "make_provider"]


def make_provider(config: ProviderConfig, session: aiohttp.ClientSession) -> Provider:
    if config.kind == "cognito":
        from .cognito import CognitoProvider

        return CognitoProvider(config, session)
    from .oidc import OidcProvider

    return OidcProvider(config, session)
