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
* every IdP call to the ceiling, `idp_calls_per_second`, counted as the IdP counts them (see
  `Ceiling`). Proven sessions come first: an unproven call may not take the last half of it,
  nor any slot while a proven session waits.

Over the ceiling, a proven session whose access token has expired (or is about to) waits for a
slot instead of being forwarded unrefreshed, which would hand the app an expired token and let
its own refresh sign the user out: in arrival order, at most `refresh_queue` waiting per
replica, each at most `refresh_wait_s` (`QUEUE_FULL`, `WAIT_EXPIRED` otherwise). The wait
happens inside the refresh's single flight (refresh.py), so requests that join it add nothing.

A retry of a refresh token already charged to the same subject or address is free (the member
memory of a bucket); a join and a grace reuse never reach the budgets at all (refresh.py charges
after its single-flight and stored-result checks).

Two layers, like claims.py and verifier.py:

* A pure core: `Ceiling` and `LogThrottle` here, the buckets in cookieguard/store/buckets.py. No
  I/O, no logger, the clock is passed in.
* A shell, `Budgets`, which keeps the per-address and per-subject buckets in the `Store` (shared
  by every replica with Redis; each replica its own while Redis is down) and the two totals in
  the process (each replica has its own totals: size them per replica).
"""

from __future__ import annotations

import asyncio
import hashlib
from collections import deque
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
QUEUE_FULL: Final = "queue_full"  # over the ceiling, and `refresh_queue` sessions wait already
WAIT_EXPIRED: Final = "wait_expired"  # over the ceiling for all of `refresh_wait_s`

ADDRESS_WINDOW_S: Final = 60.0
SUBJECT_WINDOW_S: Final = 600.0
# Share of the ceiling unproven sessions may not touch: the last half waits for proven ones.
PROVEN_RESERVE: Final = 0.5
LIMITED_LOG_EVERY_S: Final = 60.0


# ---------------------------------------------------------------------------------------------
# The pure core
# ---------------------------------------------------------------------------------------------


class Ceiling:
    """At most `slots` IdP calls in any `window_s` (`idp_calls_per_second` is slots per window),
    as the IdP would count them: a call holds its slot from the moment it is sent until
    `window_s` after its answer came back. However the network delays the requests, two calls on
    one slot reach the IdP at least `window_s` apart, so no window there ever sees more than
    `slots` calls (a token bucket lets a full burst and a second's refill land in one second:
    twice the quota). A slow IdP is called less often, never more."""

    def __init__(self, rate_per_s: float) -> None:
        self.slots = max(1, int(rate_per_s))
        self.window_s = self.slots / rate_per_s
        self.calling = 0
        self._free_at: deque[float] = deque()  # when the slots of answered calls come free

    def free(self, now: float) -> int:
        free_at = self._free_at
        while free_at and free_at[0] <= now:
            free_at.popleft()
        return self.slots - self.calling - len(free_at)

    def take(self, now: float, *, keep: float = 0.0) -> bool:
        """Take a slot for a call, leaving at least `keep` free."""
        if self.free(now) - 1 < keep - 1e-9:
            return False
        self.calling += 1
        return True

    def answered(self, now: float) -> None:
        """A call taken with `take` is over (answered, failed, timed out)."""
        self.calling = max(0, self.calling - 1)
        self._free_at.append(now + self.window_s)

    def next_free_at(self) -> float | None:
        """When the next slot comes free; None: only when a call under way is answered."""
        return self._free_at[0] if self._free_at else None


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
    def __init__(
        self,
        limits: LimitsConfig,
        store: Store,
        clock: Callable[[], float],
        *,
        on_waiting: Callable[[int], None] | None = None,
    ) -> None:
        self.limits = limits
        self.store = store
        self.clock = clock
        self.unproven_total = TokenBucket.full(
            limits.unproven_per_second, max(1.0, limits.unproven_per_second), clock()
        )
        self.ceiling = Ceiling(limits.idp_calls_per_second)
        self._unproven_keep = PROVEN_RESERVE * self.ceiling.slots
        # Proven sessions waiting for a slot of the ceiling, first come first served.
        self._waiting: deque[asyncio.Future[None]] = deque()
        self._wakeup: asyncio.TimerHandle | None = None
        self._wakeup_at = 0.0
        self.on_waiting = on_waiting  # metrics hook: how many wait now

    @property
    def waiting(self) -> int:
        return len(self._waiting)

    async def spend(self, claimant: Claimant, token_key: str, *, may_wait: bool = False) -> str | None:
        """Charge one IdP call for the refresh token whose hash is `token_key`. None: go ahead,
        and call `answered()` when the IdP call is over; else the name of the budget that refused
        (nothing was charged to the ones after it). `may_wait`: a proven session over the
        ceiling waits for a slot (docs/security.md "Abuse limits")."""
        limits = self.limits
        if claimant.subject is not None:
            queued = bool(self._waiting)  # those ahead are served first
            if not may_wait and (queued or self.ceiling.free(self.clock()) < 1):
                return IDP_CEILING
            spent = await self._spend_shared(
                "subject", claimant.subject, token_key, limits.refresh_tokens_per_subject, SUBJECT_WINDOW_S
            )
            if spent == REFUSED:
                return SUBJECT
            if not self._waiting and self.ceiling.take(self.clock()):
                return None
            if not may_wait:
                return IDP_CEILING
            return await self._wait_for_slot()
        keep = self._unproven_keep
        now = self.clock()
        if self._waiting or self.ceiling.free(now) - 1 < keep - 1e-9:
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
        if self._waiting:
            return IDP_CEILING
        return None if self.ceiling.take(now, keep=keep) else IDP_CEILING

    def answered(self) -> None:
        """An IdP call `spend` allowed is over: its slot comes free a window from now."""
        self.ceiling.answered(self.clock())
        self._serve()

    async def _wait_for_slot(self) -> str | None:
        limits = self.limits
        if len(self._waiting) >= limits.refresh_queue:
            return QUEUE_FULL
        slot: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiting.append(slot)
        self._counted()
        self._serve()
        try:
            # asyncio.wait leaves the future alone at the timeout: `_serve` may still have
            # granted it in the same turn, and then the slot is ours.
            await asyncio.wait((slot,), timeout=limits.refresh_wait_s)
        except asyncio.CancelledError:
            if slot.done() and not slot.cancelled():
                self.answered()  # granted, but nobody will call: give the slot back
            raise
        finally:
            if not slot.done():
                slot.cancel()
                self._waiting.remove(slot)
            self._counted()
        return None if not slot.cancelled() else WAIT_EXPIRED

    def _serve(self) -> None:
        """Grant free slots to the sessions waiting longest; wake up again when one comes free."""
        waiting = self._waiting
        now = self.clock()
        while waiting and self.ceiling.take(now):
            waiting.popleft().set_result(None)
        self._counted()
        free_at = self.ceiling.next_free_at()
        if waiting and free_at is not None and (self._wakeup is None or free_at < self._wakeup_at):
            if self._wakeup is not None:
                self._wakeup.cancel()
            self._wakeup_at = free_at
            self._wakeup = asyncio.get_running_loop().call_later(max(0.0, free_at - now), self._woken)

    def _woken(self) -> None:
        self._wakeup = None
        self._serve()

    def _counted(self) -> None:
        if self.on_waiting is not None:
            self.on_waiting(len(self._waiting))

    async def _spend_shared(
        self, kind: str, value: str, token_key: str, per_window: int, window_s: float
    ) -> str:
        """Charge `token_key` to the store's bucket for `kind` `value`: `per_window` charges
        per `window_s`, refilled evenly. CHARGED, FREE (a retry) or REFUSED, as `Store.spend`."""
        return await self.store.spend(
            budget_name(kind, value), token_key, per_window / window_s, per_window, window_s, self.clock()
        )
