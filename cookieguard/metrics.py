"""Prometheus metrics, one registry per app instance (no global default registry).

Labels never carry a user, a session or a token: only the route's match string, the HTTP status
and the refresh outcome, all of bounded cardinality.
"""

from __future__ import annotations

import bisect
import time
from collections.abc import Iterator

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    PlatformCollector,
    ProcessCollector,
    generate_latest,
)
from prometheus_client.core import CounterMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString

from cookieguard.vocabulary import Outcome

# Why cookieguard cut a client off: the `reason` label of cookieguard_clients_cut_total.
CLIENT_CUT_REASONS = ("header_timeout", "body_timeout", "max_connections", "write_timeout", "address_share")
# Where stray upstream bytes were caught (edge/upstream.py): the `caught` label of
# cookieguard_upstream_late_bytes_total.
LATE_BYTES_CAUGHT = ("idle", "before_reuse", "after_answer")
# Which budget held a refresh back: the `limit` label of cookieguard_refresh_limited_total
# (cookieguard/limits.py names them).
LIMITS = ("idp_ceiling", "subject", "unproven_address", "unproven_total", "queue_full", "wait_expired")
_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
# A wait for the IdP ceiling lasts up to limits.refresh_wait (default 10s): seconds matter there.
_WAIT_BUCKETS = (0.01, 0.1, 0.5, 1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0, 9.0, 10.0, 12.0, 15.0, 30.0)


class Metrics:
    content_type = CONTENT_TYPE_LATEST

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        ProcessCollector(registry=self.registry)
        PlatformCollector(registry=self.registry)
        self.refresh_total = Counter(
            "cookieguard_refresh_total",
            "Token refresh attempts and joins, by outcome.",
            ["outcome"],
            registry=self.registry,
        )
        self.refresh_duration = self._latency(
            "cookieguard_refresh_duration_seconds",
            "Time spent calling the identity provider to refresh tokens.",
        )
        # The two series every proxied request moves (count_request, upstream_answered).
        self._per_request = PerRequest(_LATENCY_BUCKETS)
        self.registry.register(self._per_request)
        self.idp_calls_in_flight = Gauge(
            "cookieguard_idp_calls_in_flight",
            "Refresh calls to the identity provider running right now.",
            registry=self.registry,
        )
        # The name this gauge had until 0.2 (it never counted sessions); kept one release so
        # dashboards and alerts can move over (docs/operations.md "Metrics").
        self._sessions_in_flight = Gauge(
            "cookieguard_sessions_in_flight",
            "Deprecated alias of cookieguard_idp_calls_in_flight; removed in the next release.",
            registry=self.registry,
        )
        self.refresh_queue_waiting = Gauge(
            "cookieguard_refresh_queue_waiting",
            "Proven sessions with an expired access token waiting for the IdP ceiling right now "
            "(limits.refresh_queue).",
            registry=self.registry,
        )
        self.refresh_wait = Histogram(
            "cookieguard_refresh_wait_seconds",
            "Time each IdP call waited for a slot of the IdP ceiling (limits.refresh_wait); near 0 "
            "unless sessions queue.",
            buckets=_WAIT_BUCKETS,
            registry=self.registry,
        )
        self.refresh_limited = Counter(
            "cookieguard_refresh_limited_total",
            "Refreshes a budget held back (outcome limited), by the budget: idp_ceiling, subject, "
            "unproven_address, unproven_total, queue_full, wait_expired.",
            ["limit"],
            registry=self.registry,
        )
        self.store_degraded = Gauge(
            "cookieguard_store_degraded",
            "1 while the shared store is unreachable and refreshes coordinate per replica only.",
            registry=self.registry,
        )
        self.clients_cut = Counter(
            "cookieguard_clients_cut_total",
            'Client connections cookieguard answered and closed itself (docs/proxy.md "The proxy"): '
            "header_timeout and body_timeout (408), max_connections (503), write_timeout and "
            "address_share (an answer cut off).",
            ["reason"],
            registry=self.registry,
        )
        self.upstream_late_bytes = Counter(
            "cookieguard_upstream_late_bytes_total",
            "Upstream connections closed for bytes the app sent after an answer, by where they "
            'were caught (docs/proxy.md "The proxy"): idle, before_reuse, after_answer.',
            ["caught"],
            registry=self.registry,
        )
        for outcome in Outcome:
            self.refresh_total.labels(outcome=outcome)
        for reason in CLIENT_CUT_REASONS:
            self.clients_cut.labels(reason=reason)
        for caught in LATE_BYTES_CAUGHT:
            self.upstream_late_bytes.labels(caught=caught)
        for limit in LIMITS:
            self.refresh_limited.labels(limit=limit)

    def _latency(self, name: str, documentation: str) -> Histogram:
        """A seconds histogram with the shared latency buckets, in this instance's registry."""
        return Histogram(name, documentation, buckets=_LATENCY_BUCKETS, registry=self.registry)

    def count_request(self, route: str, status: int) -> None:
        """One answered request on `route` (cookieguard_requests_total)."""
        self._per_request.count(route, status)

    def upstream_answered(self, seconds: float) -> None:
        """The upstream's answer headers arrived after `seconds` (cookieguard_upstream_duration_seconds)."""
        self._per_request.observe(seconds)

    def client_cut(self, reason: str) -> None:
        """A client was answered 408 or 503 and closed (one of CLIENT_CUT_REASONS)."""
        self.clients_cut.labels(reason=reason).inc()

    def idp_call(self, starting: bool) -> None:
        """A refresh call to the IdP starts (True) or ends (False)."""
        change = 1 if starting else -1
        self.idp_calls_in_flight.inc(change)
        self._sessions_in_flight.inc(change)

    def render(self) -> bytes:
        return generate_latest(self.registry)


class PerRequest(Collector):
    """cookieguard_requests_total and cookieguard_upstream_duration_seconds, counted in plain
    integers and rendered when scraped.

    prometheus-client's Counter and Histogram take a lock and walk the buckets in Python on every
    update: ~17,000 instructions per proxied request for these two, 4.7 % of a request with no
    cookies (bench/README.md). Everything here runs on the event loop, the scrape included, so
    no lock is needed; the exposition is the same series and labels (without `_created` for the
    histogram, which prometheus-client's own histogram family does not carry).
    """

    def __init__(self, buckets: tuple[float, ...]) -> None:
        self._bounds = buckets
        self._buckets = [0] * (len(buckets) + 1)  # the last: above every bound (+Inf)
        # The `le` labels as prometheus-client writes them ("0.005", "1.0", "+Inf").
        self._le: list[str] = [floatToGoString(b) for b in (*buckets, float("inf"))]  # type: ignore[no-untyped-call]
        self._sum = 0.0
        self._requests: dict[tuple[str, int], int] = {}
        self._created: dict[tuple[str, int], float] = {}

    def count(self, route: str, status: int) -> None:
        key = (route, status)
        requests = self._requests
        count = requests.get(key)
        if count is None:
            self._created[key] = time.time()
            requests[key] = 1
        else:
            requests[key] = count + 1

    def observe(self, seconds: float) -> None:
        # Prometheus buckets are upper bounds, inclusive: the first bound >= seconds.
        self._buckets[bisect.bisect_left(self._bounds, seconds)] += 1
        self._sum += seconds

    def collect(self) -> Iterator[Metric]:
        requests = CounterMetricFamily(
            "cookieguard_requests_total",
            "Proxied requests, by route and response status.",
            labels=["route", "status"],
        )
        for (route, status), count in self._requests.items():
            requests.add_metric([route, str(status)], count, created=self._created[(route, status)])
        yield requests
        cumulative = 0
        buckets: list[tuple[str, float]] = []
        for le, count in zip(self._le, self._buckets, strict=True):
            cumulative += count
            buckets.append((le, cumulative))
        yield HistogramMetricFamily(
            "cookieguard_upstream_duration_seconds",
            "Time until the upstream's response headers arrived.",
            buckets=buckets,
            sum_value=self._sum,
        )
