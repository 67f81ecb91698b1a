"""Budgets for IdP calls (cookieguard/session/limits.py): the pure token buckets and the `Budgets` shell
over the in-process store, on a clock the tests move; the waits for the IdP ceiling on the real
clock (a slot comes free a whole second after its call: those tests take about that). Nothing
here sleeps."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from pathlib import Path

from cookieguard.config import LimitsConfig
from cookieguard.session.limits import (
    IDP_CEILING,
    QUEUE_FULL,
    SUBJECT,
    UNPROVEN_ADDRESS,
    UNPROVEN_TOTAL,
    WAIT_EXPIRED,
    Budgets,
    Ceiling,
    Claimant,
    LogThrottle,
    budget_name,
)
from cookieguard.store.buckets import CHARGED, FREE, REFUSED, BucketTable, TokenBucket
from cookieguard.store.memory import MemoryStore
from tests.support.proxy_process import run_cli

T0 = 1_800_000_000.0


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> float:
        return self.now


def budgets(clock: Clock, **limits: float) -> Budgets:
    return Budgets(LimitsConfig(**limits), MemoryStore(clock=clock), clock)  # type: ignore[arg-type]


def test_the_defaults_are_the_documented_ones() -> None:
    d = LimitsConfig()
    assert (d.unproven_per_address, d.unproven_per_second, d.refresh_tokens_per_subject) == (5, 1.0, 5)
    assert d.idp_calls_per_second == 50.0 and d.trusted_proxies == ()
    assert (d.refresh_queue, d.refresh_wait_s) == (1000, 10.0)


def test_a_bucket_refills_at_its_rate_up_to_its_burst() -> None:
    bucket = TokenBucket.full(rate_per_s=0.5, burst=2, now=0.0)
    assert bucket.take(0.0) and bucket.take(0.0) and not bucket.take(0.0)
    assert not bucket.take(1.9)
    assert bucket.take(2.0)  # 2 s at 0.5/s: one token
    assert bucket.level(1000.0) == 2  # never more than the burst
    assert not bucket.can_take(1000.0, keep=1.5)  # the last 1.5 are kept back
    assert bucket.can_take(1000.0, keep=1.0)


def test_a_clock_that_steps_back_refills_nothing() -> None:
    bucket = TokenBucket.full(rate_per_s=1.0, burst=1, now=100.0)
    assert bucket.take(100.0)
    assert not bucket.take(50.0) and not bucket.take(100.5)
    assert bucket.take(101.0)


def test_a_retry_of_a_charged_member_is_free_within_the_window() -> None:
    table = BucketTable()
    assert table.spend("s", "t1", 1 / 60, 1, 60, T0) == CHARGED
    assert table.spend("s", "t2", 1 / 60, 1, 60, T0) == REFUSED
    assert table.spend("s", "t1", 1 / 60, 1, 60, T0 + 59) == FREE
    assert table.spend("s", "t1", 1 / 60, 1, 60, T0 + 60) == CHARGED  # out of the window: costs again


def test_the_table_is_bounded() -> None:
    table = BucketTable(max_buckets=100)
    for n in range(10_000):
        table.spend(f"address:{n}", f"t{n}", 1, 1, 60, T0)
    assert len(table) == 100


def test_limited_lines_are_throttled_per_key() -> None:
    throttle = LogThrottle(every_s=60)
    assert throttle.allow("a", T0) and not throttle.allow("a", T0 + 59) and throttle.allow("b", T0)
    assert throttle.allow("a", T0 + 60)


def test_names_are_hashes() -> None:
    name = budget_name("address", "203.0.113.7")
    assert name.startswith("address:") and "203.0.113.7" not in name and len(name) == 8 + 64


async def test_unproven_per_address_then_in_all() -> None:
    clock = Clock()
    b = budgets(clock, unproven_per_second=100.0, idp_calls_per_second=1000.0)
    attacker = Claimant("203.0.113.7")
    verdicts = [await b.spend(attacker, f"made-up-{n}") for n in range(300)]
    assert verdicts[:5] == [None] * 5 and set(verdicts[5:]) == {UNPROVEN_ADDRESS}
    assert await b.spend(attacker, "made-up-0") is None  # a retry of a charged token is free
    clock.now += 12  # 5 per minute: one more every 12 s
    assert await b.spend(attacker, "made-up-300") is None
    assert await b.spend(attacker, "made-up-301") == UNPROVEN_ADDRESS
    # Another address has its own budget ...
    assert await b.spend(Claimant("198.51.100.1"), "x") is None


async def test_unproven_in_all_is_one_per_second_by_default() -> None:
    clock = Clock()
    b = budgets(clock)
    assert await b.spend(Claimant("10.0.0.1"), "a") is None
    assert await b.spend(Claimant("10.0.0.2"), "b") == UNPROVEN_TOTAL
    clock.now += 1
    assert await b.spend(Claimant("10.0.0.2"), "b") is None


async def test_a_subject_may_spend_five_distinct_tokens_per_ten_minutes() -> None:
    clock = Clock()
    b = budgets(clock)
    mallory = Claimant("203.0.113.7", subject="sub-mallory")
    verdicts = [await b.spend(mallory, f"rt-{n}") for n in range(100)]
    assert verdicts.count(None) == 5 and set(verdicts[5:]) == {SUBJECT}
    assert await b.spend(mallory, "rt-3") is None  # already charged: free again
    # Another user behind the same address (a NAT'd office) is not affected.
    assert await b.spend(Claimant("203.0.113.7", subject="sub-alice"), "rt-alice") is None
    clock.now += 120
    assert await b.spend(mallory, "rt-100") is None


async def test_proven_sessions_keep_the_last_half_of_the_ceiling() -> None:
    clock = Clock()
    b = budgets(clock, unproven_per_address=1000, unproven_per_second=1000.0, idp_calls_per_second=10.0)
    unproven = [await b.spend(Claimant(f"10.0.0.{n}"), f"u{n}") for n in range(20)]
    assert unproven.count(None) == 5 and set(unproven[5:]) == {IDP_CEILING}
    proven = [await b.spend(Claimant("10.1.0.1", subject=f"s{n}"), f"p{n}") for n in range(10)]
    assert proven.count(None) == 5 and set(proven[5:]) == {IDP_CEILING}
    for _ in range(10):
        b.answered()
    clock.now += 0.99  # a slot comes free a whole window after its call was answered
    assert await b.spend(Claimant("10.1.0.1", subject="s-late"), "late") == IDP_CEILING
    clock.now += 0.01
    assert await b.spend(Claimant("10.1.0.1", subject="s-late"), "late") is None


def test_the_ceiling_counts_a_call_until_a_window_after_its_answer() -> None:
    """However late the network delivers a request, two calls on one slot reach the IdP at
    least a window apart: no second at the IdP sees more than `idp_calls_per_second`."""
    ceiling = Ceiling(rate_per_s=2.0)
    assert (ceiling.slots, ceiling.window_s) == (2, 1.0)
    assert ceiling.take(0.0) and ceiling.take(0.0) and not ceiling.take(5.0)  # both still calling
    ceiling.answered(5.0)
    assert not ceiling.take(5.5) and ceiling.next_free_at() == 6.0
    assert ceiling.take(6.0) and not ceiling.take(6.0)
    slow = Ceiling(rate_per_s=0.5)  # one call per two seconds
    assert (slow.slots, slow.window_s) == (1, 2.0)
    assert slow.take(0.0, keep=0.0) and not Ceiling(10.0).take(0.0, keep=10.0)


def real_budgets(**limits: float) -> Budgets:
    return Budgets(LimitsConfig(**limits), MemoryStore(), time.monotonic)  # type: ignore[arg-type]


async def test_over_the_ceiling_urgent_proven_sessions_wait_and_are_served_in_arrival_order() -> None:
    b = real_budgets(idp_calls_per_second=2.0, refresh_wait_s=5.0, refresh_tokens_per_subject=100)
    alice = Claimant("10.0.0.1", subject="alice")
    assert await b.spend(alice, "t0") is None and await b.spend(alice, "t1") is None
    served: list[int] = []

    async def waiter(n: int) -> str | None:
        outcome = await b.spend(Claimant("10.0.0.1", subject=f"s{n}"), f"w{n}", may_wait=True)
        served.append(n)
        b.answered()
        return outcome

    waiters = [asyncio.ensure_future(waiter(n)) for n in range(3)]
    await wait_until(lambda: b.waiting == 3)
    # While proven sessions wait, nobody overtakes them: not a later proven session that may
    # not wait (its token is still valid), not an unproven one.
    assert await b.spend(Claimant("10.0.0.2", subject="late"), "late") == IDP_CEILING
    assert await b.spend(Claimant("10.0.0.3"), "unproven") == IDP_CEILING
    b.answered()
    b.answered()  # the first two calls are over: their slots come free a second later
    assert await asyncio.gather(*waiters) == [None, None, None]
    assert served == [0, 1, 2] and b.waiting == 0


async def test_a_full_queue_and_an_expired_wait_refuse() -> None:
    b = real_budgets(idp_calls_per_second=1.0, refresh_queue=1, refresh_wait_s=0.2)
    assert await b.spend(Claimant("10.0.0.1", subject="a"), "a") is None  # and never answered
    first = asyncio.ensure_future(b.spend(Claimant("10.0.0.1", subject="b"), "b", may_wait=True))
    await wait_until(lambda: b.waiting == 1)
    assert await b.spend(Claimant("10.0.0.1", subject="c"), "c", may_wait=True) == QUEUE_FULL
    assert await first == WAIT_EXPIRED
    assert b.waiting == 0


async def test_a_cancelled_waiter_leaves_the_queue() -> None:
    b = real_budgets(idp_calls_per_second=1.0)
    assert await b.spend(Claimant("10.0.0.1", subject="a"), "a") is None
    waiter = asyncio.ensure_future(b.spend(Claimant("10.0.0.1", subject="b"), "b", may_wait=True))
    await wait_until(lambda: b.waiting == 1)
    waiter.cancel()
    await asyncio.gather(waiter, return_exceptions=True)
    assert b.waiting == 0


async def wait_until(condition: Callable[[], bool], timeout_s: float = 5.0) -> None:
    """Poll `condition` each event-loop turn until it holds (or fail after `timeout_s`)."""
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0)


async def test_a_refused_budget_charges_nothing_after_it() -> None:
    """Refused by the address budget, a call takes nothing from the totals."""
    clock = Clock()
    b = budgets(clock, unproven_per_address=1, unproven_per_second=2.0)
    assert await b.spend(Claimant("10.0.0.1"), "a") is None
    for n in range(50):
        assert await b.spend(Claimant("10.0.0.1"), f"b{n}") == UNPROVEN_ADDRESS
    assert await b.spend(Claimant("10.0.0.2"), "c") is None  # the total still had one


def test_check_prints_the_limits(tmp_path: Path) -> None:
    path = tmp_path / "cookieguard.yaml"
    path.write_text(
        "upstream: http://127.0.0.1:3000\n"
        "provider: {kind: cognito, user_pool_id: us-east-1_AbCdEf123, client_id: abc}\n"
        "limits: {unproven_per_address: 20, trusted_proxies: [10.0.0.0/8]}\n"
    )
    result = run_cli("check", "--config", str(path))
    assert result.returncode == 0, result.stderr
    assert (
        "limits: unproven 20/min per address, 1/s in all; 5 refresh tokens per subject per 10 min; "
        "IdP calls 50/s (per replica)" in result.stdout
    )
    assert "trusted proxies: 10.0.0.0/8" in result.stdout
