"""What a refresh gives back: a leaf module, so the plan can read a result without importing the
refresher (and with it the store, the crypto, the budgets and the guard)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from cookieguard.vocabulary import Outcome

if TYPE_CHECKING:
    from cookieguard.tokens.providers.base import TokenSet


@dataclass(frozen=True)
class RefreshResult:
    outcome: Outcome
    tokens: TokenSet | None = field(default=None, repr=False)
    error: str | None = None
    idp_status: int | None = None
    duration_ms: float = 0.0
    retry_after_s: float | None = None
    wait_ms: float = 0.0  # how long the refresh waited for the IdP ceiling
