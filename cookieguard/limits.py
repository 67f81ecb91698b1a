"""Budgets for IdP calls (README "Abuse limits").

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

* A pure core: `TokenBucket`, `BucketTable` (what the memory store keeps), `LogThrottle`. No I/O,
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

from .config import LimitsConfig
from .lru import LRU, ExpiringLRU

if TYPE_CHECKING:
    from .store.base import Store

# What a store's `spend` answers.
CHARGED: Final = "charged"  # a token was taken from the bucket
FREE: Final = "free"  # this member was charged already within the bucket's window: a retry
REFUSED: Final = "refused"  # the bucket is empty

# Which budget refused: the `limit` field of a `token_refresh` event with `outcome: limited`.
UNPROVEN_ADDRESS: Final = "unproven_address"
UNPROVEN_TOTAL: Final = "unproven_total"
SUBJECT: Final = "subject"
IDP_CEILING: Final = "idp_ceiling"

ADDRESS_WINDOW_S: Final = 60.0
SUBJECT_WINDOW_S: Final = 600.0
# Share of the ceiling's bucket unproven sessions may not touch: the last half waits for proven ones.
PROVEN_RESERVE: Final = 0.5
# Members (charged refresh-token hashes) remembered per bucket; more than a bucket's burst can
# charge within its window only if the window is long and the rate high.
MAX_MEMBERS: Final = 64
MAX_BUCKETS: Final = 100_000
LIMITED_LOG_EVERY_S: Final = 60.0


# ---------------------------------------------------------------------------------------------
# The pure core
# ---------------------------------------------------------------------------------------------


@dataclass
class TokenBucket:
    """`burst` tokens at most, refilled at `rate_per_s`; one IdP call takes one."""

    rate_per_s: float
    burst: float
    tokens: float
    updated_at: float

    @classmethod
    def full(cls, rate_per_s: float, burst: float, now: float) -> TokenBucket:
        return cls(rate_per_s, burst, burst, now)

    def level(self, now: float) -> float:
        if now > self.updated_at:
            # A clock that steps back (another replica's, NTP) refills nothing, takes nothing.
            self.tokens = min(self.burst, self.tokens + (now - self.updated_at) * self.rate_per_s)
            self.updated_at = now
        return self.tokens

    def can_take(self, now: float, *, keep: float = 0.0) -> bool:
        """Whether one token can be taken while leaving at least `keep` in the bucket."""
        return self.level(now) - 1.0 >= keep - 1e-9

    def take(self, now: float, *, keep: float = 0.0) -> bool:
        if not self.can_take(now, keep=keep):
            return False
        self.tokens -= 1.0
        return True


@dataclass
class _Budget:
    bucket: TokenBucket
    members: ExpiringLRU[str, None]  # charged within the window, until the window is over


class BucketTable:
    """Named buckets, each remembering which members (refresh-token hashes) it charged within
    `window_s`, so that a retry of the same token is free. Bounded: at most `max_buckets`
    buckets (least recently used dropped first: a dropped bucket comes back full, which is the
    state it would have refilled to anyway after a quiet window) and `MAX_MEMBERS` members each."""

    def __init__(self, max_buckets: int = MAX_BUCKETS) -> None:
        self._budgets: LRU[str, _Budget] = LRU(max_buckets)

    def __len__(self) -> int:
        return len(self._budgets)

    def spend(
        self, name: str, member: str, rate_per_s: float, burst: int, window_s: float, now: float
    ) -> str:
        budget = self._budgets.get(name)
        if budget is None:
            budget = _Budget(TokenBucket.full(rate_per_s, burst, now), ExpiringLRU(MAX_MEMBERS))
            self._budgets.put(name, budget)
        members = budget.members
        if member and members.expires_at(member, now) is not None:
            return FREE
        if not budget.bucket.take(now):
            return REFUSED
        if member:
            members.put(member, None, now + window_s, now)
        return CHARGED


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
