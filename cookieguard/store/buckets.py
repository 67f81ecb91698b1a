"""Token buckets that remember whom they charged: what the stores keep for the IdP-call budgets.

The budgets themselves (who is charged, how much, docs/security.md "Abuse limits") are
cookieguard/session/limits.py; a store keeps their buckets, in the process (`BucketTable`) or in
Redis (the same rules in a script). Pure: no I/O, the clock is passed in.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

from cookieguard.lru import LRU, ExpiringLRU

# What a store's `spend` answers.
CHARGED: Final = "charged"  # a token was taken from the bucket
FREE: Final = "free"  # this member was charged already within the bucket's window: a retry
REFUSED: Final = "refused"  # the bucket is empty

# Members (charged refresh-token hashes) remembered per bucket; more than a bucket's burst can
# charge within its window only if the window is long and the rate high.
MAX_MEMBERS: Final = 64
MAX_BUCKETS: Final = 100_000


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
