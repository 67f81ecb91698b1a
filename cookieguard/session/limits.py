"""Budgets for IdP calls (docs/security.md "Abuse limits").

A refresh spends the IdP's quota (Cognito's is per AWS account, shared by every sign-in of every
app in it), and cookieguard refreshes on behalf of whoever sends a cookie. So every IdP call is
charged, right before it is made, to whoever asked for it:

* a **proven** session (an access or id token in it verifies against the IdP's keys for this
  client; expired is fine) to its subject (`sub`): at most `refresh_tokens_per_subject` distinct
  refresh tokens per 10 minutes. A NAT'd office is many subjects behind one address, so proven
  sessions are never budgeted per address;
* an **unproven** session (anything else: only a refresh token, a token that does not verify, any
  session while `verify.signature` is false or the JWKS cannot be fetched) to its client address,
  `unproven_per_address` per minute (burst the same), and to all unproven sessions together,
  `unproven_per_second`;
* every IdP call to the ceiling, `idp_calls_per_second` (burst one second's worth). Proven
  sessions come first: an unproven call may not take the last half of the ceiling's bucket.

A retry of a refresh token already charged to the same subject or address is free (the member
memory of a bucket); a join and a grace reuse never reach the budgets at all (refresh.py charges
after its single-flight and stored-result checks).

Two layers, like claims.py and verifier.py:

* A pure core: `LogThrottle` here, the buckets in cookieguard/store/buckets.py. No I/O,
  no logger, the clock is passed in.
* A shell, `Budgets`, which keeps the per-address and per-subject buckets in the `Store` (shared
  by every replica with Redis; each replica its own while Redis is down) and the two totals in
  the process (each replica has its own totals: size them per replica).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Final

from cookieguard.config import LimitsConfig
from cookieguard.lru import ExpiringLRU
from cookieguard.store.buckets import CHARGED, REFUSED, TokenBucket

if TYPE_CHECKING:
    from cookieguard.store.base import Store

# Which budget refused: the `limit` field of a `token_refresh` event with `outcome: limited`.
UNPROVEN_ADDRESS: Final = "unproven_address"
UNPROVEN_TOTAL: Final = "unproven_total"
SUBJECT: Final = "subject"
IDP_CEILING: Final = "idp_ceiling"

ADDRESS_WINDOW_S: Final = 60.0
SUBJECT_WINDOW_S: Final = 600.0
# Share of the ceiling's bucket unproven sessions may not touch: the last half waits for proven ones.
PROVEN_RESERVE: Final = 0.5
LIMITED_LOG_EVERY_S: Final = 60.0


# ---------------------------------------------------------------------------------------------
# The pure core
# ---------------------------------------------------------------------------------------------


class LogThrottle:
    """At most one log line per key every `every_s` (a spray must not flood the logs)."""

    def __init__(self, every_s: float = LIMITED_LOG_EVERY_S, max_keys: int = 10_000) -> None:
        self.every_s = every_s
        self._quiet: ExpiringLRU[str, None] = ExpiringLRU(max_keys)  # logged, until every_s passes

    def allow(self, key: str, now: float) -> bool:
        if self._quiet.expires_at(key, now) is not None:
            return False
        self._quiet.put(key, None, now + self.every_s, now)
        return True


@dataclass(frozen=True)
class Claimant:
    """Whom an IdP call is charged to. `subject` is the verified token's `sub`; None: unproven."""

    address: str
    subject: str | None = None

    @property
    def proven(self) -> bool:
        return self.subject is not None


def budget_name(kind: str, value: str) -> str:
    """A bucket's name: a hash, never the raw address or subject (the store may HMAC it again)."""
    return f"{kind}:{hashlib.sha256(value.encode('utf-8', 'surrogatepass')).hexdigest()}"


# ---------------------------------------------------------------------------------------------
# The shell: shared buckets in the store, totals in the process
# ---------------------------------------------------------------------------------------------


class Budgets:
    def __init__(self, limits: LimitsConfig, store: Store, clock: Callable[[], float]) -> None:
        self.limits = limits
        self.store = store
        self.clock = clock
        now = clock()
        self.unproven_total = TokenBucket.full(
            limits.unproven_per_second, max(1.0, limits.unproven_per_second), now
        )
        ceiling_burst = max(1.0, limits.idp_calls_per_second)
        self.ceiling = TokenBucket.full(limits.idp_calls_per_second, ceiling_burst, now)
        self._unproven_keep = PROVEN_RESERVE * ceiling_burst

    async def spend(self, claimant: Claimant, token_key: str) -> str | None:
        """Charge one IdP call for the refresh token whose hash is `token_key`. None: go ahead;
        else the name of the budget that refused (nothing was charged to the ones after it)."""
        limits = self.limits
        if claimant.subject is not None:
            if not self.ceiling.can_take(self.clock()):
                return IDP_CEILING
            spent = await self._spend_shared(
                "subject", claimant.subject, token_key, limits.refresh_tokens_per_subject, SUBJECT_WINDOW_S
            )
            if spent == REFUSED:
                return SUBJECT
            return None if self.ceiling.take(self.clock()) else IDP_CEILING
        keep = self._unproven_keep
        now = self.clock()
        if not self.ceiling.can_take(now, keep=keep):
            return IDP_CEILING
        if not self.unproven_total.can_take(now):
            return UNPROVEN_TOTAL
        spent = await self._spend_shared(
            "address", claimant.address, token_key, limits.unproven_per_address, ADDRESS_WINDOW_S
        )
        if spent == REFUSED:
            return UNPROVEN_ADDRESS
        now = self.clock()
        if spent == CHARGED and not self.unproven_total.take(now):
            return UNPROVEN_TOTAL
        return None if self.ceiling.take(now, keep=keep) else IDP_CEILING

    async def _spend_shared(
        self, kind: str, value: str, token_key: str, per_window: int, window_s: float
    ) -> str:
        """Charge `token_key` to the store's bucket for `kind` `value`: `per_window` charges
        per `window_s`, refilled evenly. CHARGED, FREE (a retry) or REFUSED, as `Store.spend`."""
        return await self.store.spend(
            budget_name(kind, value), token_key, per_window / window_s, per_window, window_s, self.clock()
        )
