"""One refresh per refresh token: single-flight in the process, a leased lock in the store, and
the result kept for `refresh.grace` so late requests reuse it instead of spending the token again.

Outcomes (docs/behaviour.md §3): `refreshed` (this request called the IdP), `joined` (it waited for a refresh
already under way), `reused` (it found a result from the grace window), `rejected` (the IdP said
the session is over), `failed` (the IdP could not answer: keep the session, back off), `limited`
(a budget of docs/security.md "Abuse limits" refused the IdP call: nothing stored, no backoff, the session
is tried again on a later request; `error` names the budget).

A session whose access token has expired (`urgent`) and is proven may wait for the IdP ceiling
(limits.py); it waits inside the single flight, holding the refresh token's lock (its lease kept
alive), so everyone who asks for the same refresh token meanwhile joins that one wait.

Budgets are charged right before the IdP call, after the single-flight and the stored-result
checks, so a join and a grace reuse cost nothing; a retry of the same token is free in the
budgets themselves (cookieguard/session/limits.py).

A rejection counts only while the reject-storm guard (guard.py) believes it: when nearly every
session is being rejected at once, the configuration is wrong, not the sessions, and rejections
become `failed` with error `reject_storm`. Only proven sessions' verdicts feed the guard (with
`verify.signature: false` nothing can be proven and every verdict does): anybody can make up
refresh tokens the IdP rejects, and a spray of them must not switch off clearing for everyone.

Proof of a subject is not enough either: anybody can register accounts, and each account's own
(expired) access token proves its subject beside any number of made-up refresh tokens. So once
this process has seen one refresh succeed (the configuration works), a rejection feeds the guard
only when its refresh token had refreshed here before; until then (a deploy with a wrong secret
never sees a success) every proven rejection does. Each subject counts as one session, so one
account's many tokens weigh as one (docs/security.md "Threat model").
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import replace

from cookieguard.config import RefreshConfig, StoreConfig
from cookieguard.logs import get_logger
from cookieguard.lru import LRU, ExpiringLRU
from cookieguard.session.guard import RejectStormGuard, StormChange
from cookieguard.session.limits import Budgets, Claimant
from cookieguard.session.result import RefreshResult
from cookieguard.store.base import Store
from cookieguard.store.crypto import Sealer
from cookieguard.tokens.providers.base import (
    NO_CONTEXT,
    Provider,
    RefreshRejected,
    RefreshUnavailable,
    TokenSet,
)
from cookieguard.vocabulary import Outcome

_POLL_S = 0.05
_MAX_BACKOFF_S = 300.0
REJECT_STORM = "reject_storm"


def store_key(refresh_token: str) -> str:
    """The store's key for a refresh token: a hash, never the token itself."""
    return hashlib.sha256(refresh_token.encode("utf-8", "surrogatepass")).hexdigest()


class Refresher:
    def __init__(
        self,
        provider: Provider,
        store: Store,
        refresh: RefreshConfig,
        store_config: StoreConfig,
        *,
        lease_s: float | None = None,
        idp_timeout_s: float = 5.0,
        clock: Callable[[], float] = time.monotonic,
        on_idp_call: Callable[[bool], None] | None = None,
        guard: RejectStormGuard | None = None,
        budgets: Budgets | None = None,
        unproven_feed_guard: bool = False,
    ) -> None:
        self.provider = provider
        self.store = store
        self.config = refresh
        self.lease_s = lease_s or store_config.lock_lease_s
        self.idp_timeout_s = idp_timeout_s
        self.clock = clock
        self.sealer = Sealer(store_config.encryption_keys)
        self.on_idp_call = on_idp_call  # metrics hook: True when a call starts, False when it ends
        self.guard = guard or RejectStormGuard(max_sessions=store_config.max_entries)
        self.budgets = budgets
        self.unproven_feed_guard = unproven_feed_guard
        self._in_flight: dict[str, asyncio.Task[RefreshResult]] = {}
        # Refresh tokens the IdP could not refresh lately (docs/behaviour.md §3,
        # `failed`), and the lifetimes of opaque access tokens from token responses we saw.
        self._backoff: ExpiringLRU[str, None] = ExpiringLRU(store_config.max_entries)
        self._opaque_lifetimes: LRU[str, tuple[float, float]] = LRU(store_config.max_entries)
        # Refresh tokens (store keys) that refreshed here, and whether any refresh succeeded yet:
        # which rejections may feed the reject-storm guard.
        self._worked: LRU[str, None] = LRU(store_config.max_entries)
        self._seen_success = False

    @property
    def in_flight(self) -> int:
        return len(self._in_flight)

    async def refresh(
        self,
        refresh_token: str,
        *,
        context: Mapping[str, str] = NO_CONTEXT,
        claimant: Claimant | None = None,
        urgent: bool = False,
    ) -> RefreshResult:
        """`context`: the session's refresh context, for the provider. `claimant`: whom the IdP
        call is charged to; None charges nobody (and counts as proven for the reject-storm guard).
        `urgent`: the access token has expired or is about to, so a proven session waits for the
        IdP ceiling rather than go unrefreshed."""
        key = store_key(refresh_token)
        task = self._in_flight.get(key)
        if task is not None:
            result = await asyncio.shield(task)
            return _as_joined(result)
        until = self._backoff.expires_at(key, self.clock())
        if until is not None:
            return RefreshResult(Outcome.FAILED, error="backoff", retry_after_s=until - self.clock())
        task = asyncio.ensure_future(self._coordinated(key, refresh_token, context, claimant, urgent))
        self._in_flight[key] = task
        task.add_done_callback(lambda _t: self._in_flight.pop(key, None))
        # Shielded: a client that disconnects must not cancel the refresh for everybody else.
        return await asyncio.shield(task)

    async def _coordinated(
        self,
        key: str,
        refresh_token: str,
        context: Mapping[str, str],
        claimant: Claimant | None,
        urgent: bool,
    ) -> RefreshResult:
        stored = await self._stored(key)
        if stored is not None:
            return stored if stored.outcome == Outcome.REJECTED else _with_outcome(stored, Outcome.REUSED)
        owner = uuid.uuid4().hex
        budgets = self.budgets
        # The holder may wait for the IdP ceiling before it calls.
        wait_s = budgets.limits.refresh_wait_s if budgets is not None else 0.0
        deadline = self.clock() + self.idp_timeout_s + self.lease_s + wait_s
        while not await self.store.acquire(key, owner, self.lease_s):
            # Another replica holds the lock: wait for its result rather than spend the token.
            await asyncio.sleep(_POLL_S)
            stored = await self._stored(key)
            if stored is not None:
                return _as_joined(stored)
            if self.clock() > deadline:
                return RefreshResult(Outcome.FAILED, error="lock_wait_timeout")
        keeper = asyncio.ensure_future(self._keep_lease(key, owner))
        try:
            # Look again: the previous holder may have finished while we waited for the lock.
            stored = await self._stored(key)
            if stored is not None:
                return _as_joined(stored)
            wait_ms = 0.0
            if budgets is not None and claimant is not None:
                started = time.perf_counter()
                limit = await budgets.spend(claimant, key, may_wait=urgent)
                wait_ms = _ms(started)
                if limit is not None:
                    return RefreshResult(Outcome.LIMITED, error=limit, wait_ms=wait_ms)
            feeds_guard = claimant is None or claimant.proven or self.unproven_feed_guard
            guard_key = claimant.subject if claimant is not None and claimant.subject else key
            try:
                result = await self._call_idp(key, refresh_token, context, guard_key if feeds_guard else None)
            finally:
                if budgets is not None and claimant is not None:
                    budgets.answered()
            return replace(result, wait_ms=wait_ms)
        finally:
            keeper.cancel()
            await self.store.release(key, owner)

    async def _call_idp(
        self,
        key: str,
        refresh_token: str,
        context: Mapping[str, str],
        guard_key: str | None,
    ) -> RefreshResult:
        """`guard_key`: whom the verdict counts for in the reject-storm guard (the subject, or the
        session); None: it does not feed the guard."""
        started = time.perf_counter()
        if self.on_idp_call:
            self.on_idp_call(True)
        try:
            tokens = await self.provider.refresh(refresh_token, context)
        except RefreshRejected as exc:
            if guard_key is not None and (key in self._worked or not self._seen_success):
                self._note_storm(self.guard.record(guard_key, rejected=True, now=self.clock()))
            if self.guard.storming:
                # Not believed: forward unchanged, store nothing, and back off like any IdP trouble.
                self._remember_backoff(key, self.config.backoff_s)
                return RefreshResult(
                    Outcome.FAILED,
                    error=REJECT_STORM,
                    idp_status=exc.status,
                    duration_ms=_ms(started),
                    retry_after_s=self.config.backoff_s,
                )
            result = RefreshResult(
                Outcome.REJECTED, error=exc.code, idp_status=exc.status, duration_ms=_ms(started)
            )
            await self.store.put_result(key, self._seal(result), self.config.grace_s)
            return result
        except RefreshUnavailable as exc:
            backoff_s = min(max(self.config.backoff_s, exc.retry_after_s or 0.0), _MAX_BACKOFF_S)
            self._remember_backoff(key, backoff_s)
            return RefreshResult(
                Outcome.FAILED,
                error=exc.code,
                idp_status=exc.status,
                duration_ms=_ms(started),
                retry_after_s=backoff_s,
            )
        finally:
            if self.on_idp_call:
                self.on_idp_call(False)
        self._note_worked(key, tokens)
        if guard_key is not None:
            self._note_storm(self.guard.record(guard_key, rejected=False, now=self.clock()))
        result = RefreshResult(Outcome.REFRESHED, tokens=tokens, duration_ms=_ms(started))
        await self.store.put_result(key, self._seal(result), self.config.grace_s)
        return result

    async def _keep_lease(self, key: str, owner: str) -> None:
        """Extend the lock while the IdP call runs, so a slow IdP never lets a second caller in."""
        while True:
            await asyncio.sleep(self.lease_s / 3)
            if not await self.store.extend(key, owner, self.lease_s):
                return

    def note_opaque_lifetime(self, access_token: str, issued_at: float, expires_at: float) -> None:
        """Remember the lifetime of an opaque access token we received (docs/behaviour.md §2: expires_in)."""
        self._opaque_lifetimes.put(store_key(access_token), (issued_at, expires_at))

    def opaque_lifetime(self, access_token: str) -> tuple[float, float] | None:
        return self._opaque_lifetimes.get(store_key(access_token))

    @staticmethod
    def _note_storm(change: StormChange | None) -> None:
        if change is not None:
            get_logger().warning(
                REJECT_STORM,
                state="started" if change.started else "ended",
                rejected_sessions=change.rejected_sessions,
                sessions=change.sessions,
                window_s=change.window_s,
            )

    def _note_worked(self, key: str, tokens: TokenSet | None) -> None:
        self._seen_success = True
        self._worked.put(key, None)
        if tokens is not None and tokens.refresh_token:  # rotated: the successor is known good too
            self._worked.put(store_key(tokens.refresh_token), None)

    def _remember_backoff(self, key: str, seconds: float) -> None:
        now = self.clock()
        self._backoff.put(key, None, now + seconds, now)

    async def _stored(self, key: str) -> RefreshResult | None:
        raw = await self.store.get_result(key)
        if raw is None:
            return None
        return self._open(raw)

    def _seal(self, result: RefreshResult) -> bytes:
        body: dict[str, object] = {"v": 1, "outcome": result.outcome}
        if result.tokens is not None:
            t = result.tokens
            body.update(
                access_token=t.access_token,
                id_token=t.id_token,
                refresh_token=t.refresh_token,
                expires_in=t.expires_in_s,
            )
            if t.extra_fields:
                body["extra"] = dict(t.extra_fields)
        if result.error:
            body["error"] = result.error
        return self.sealer.seal(json.dumps(body, separators=(",", ":")).encode())

    def _open(self, raw: bytes) -> RefreshResult | None:
        plain = self.sealer.open(raw)
        if plain is None:
            return None  # sealed with a key we do not have: treat as absent, never as a session
        try:
            body = json.loads(plain)
            if body.get("outcome") == Outcome.REJECTED:
                return RefreshResult(Outcome.REJECTED, error=body.get("error"))
            tokens = TokenSet(
                access_token=body["access_token"],
                id_token=body.get("id_token"),
                refresh_token=body.get("refresh_token"),
                expires_in_s=body.get("expires_in"),
                extra_fields=dict(body.get("extra") or {}),
            )
        except (ValueError, KeyError, TypeError, AttributeError):
            return None
        return RefreshResult(Outcome.REFRESHED, tokens=tokens)


def _with_outcome(result: RefreshResult, outcome: Outcome) -> RefreshResult:
    return RefreshResult(
        outcome,
        tokens=result.tokens,
        error=result.error,
        idp_status=result.idp_status,
        duration_ms=0.0,
        retry_after_s=result.retry_after_s,
    )


def _as_joined(result: RefreshResult) -> RefreshResult:
    """What a request that waited for someone else's refresh gets: the same tokens or verdict."""
    if result.outcome in (Outcome.REFRESHED, Outcome.REUSED, Outcome.JOINED):
        return _with_outcome(result, Outcome.JOINED)
    return _with_outcome(result, result.outcome)


def _ms(started: float) -> float:
    return round((time.perf_counter() - started) * 1000, 2)
