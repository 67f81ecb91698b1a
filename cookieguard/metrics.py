"""Prometheus metrics, one registry per app instance (no global default registry).

Labels never carry a user, a session or a token: only the route's match string, the HTTP status
and the refresh outcome, all of bounded cardinality.
"""

from __future__ import annotations

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    PlatformCollector,
    ProcessCollector,
    generate_latest,
)
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from cookieguard.vocabulary import Outcome

# Why cookieguard cut a client off: the `reason` label of cookieguard_clients_cut_total.
CLIENT_CUT_REASONS = ("header_timeout", "body_timeout", "max_connections")
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
        self.requests_total = Counter(
            "cookieguard_requests_total",
            "Proxied requests, by route and response status.",
            ["route", "status"],
            registry=self.registry,
        )
        self.upstream_duration = self._latency(
            "cookieguard_upstream_duration_seconds",
            "Time until the upstream's response headers arrived.",
        )
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
            "header_timeout and body_timeout (408), max_connections (503).",
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
