"""Prometheus collectors. Each app owns its registry, so tests and several servers never collide.

Labels never carry keys, prompts or anything a client sent beyond the model name. Counts and the
learning gauges carry the namespace (``finch.server.principals``: a name an administrator chose, or
``key-`` and a prefix of a key's HMAC; "" for a request nobody's); latencies do not, to keep the
series few.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from finch.sse import ResponseSummary
from finch.vocabulary import Route

_LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300)


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter(
            "finch_requests",
            "Requests by namespace, route, reason and status.",
            ["namespace", "route", "reason", "status"],
            registry=r,
        )
        self.latency = Histogram(
            "finch_request_latency_seconds",
            "Whole-request latency.",
            ["route"],
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.ttfb = Histogram(
            "finch_time_to_first_byte_seconds",
            "Time to the first response byte.",
            ["route"],
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.upstream_attempts = Counter("finch_upstream_attempts", "Upstream attempts, retries included.", registry=r)
        self.tokens = Counter(
            "finch_tokens", "Tokens by namespace, direction and route.", ["namespace", "direction", "route"], registry=r
        )
        self.cost = Counter("finch_cost_dollars", "Estimated dollars spent upstream.", ["namespace"], registry=r)
        self.saved = Counter(
            "finch_saved_dollars", "Estimated dollars saved by local answers.", ["namespace"], registry=r
        )
        # The learning gauges: one series per namespace this replica has loaded.
        self.trainer_backlog = Gauge(
            "finch_trainer_backlog",
            "Rows of the request log written but not yet read by the trainer.",
            ["namespace"],
            registry=r,
        )
        self.trainer_restarts = Gauge(
            "finch_trainer_restarts", "Times the trainer process died and was started again.", registry=r
        )
        self.learned = Gauge(
            "finch_learned_examples", "Examples the models have learned from.", ["namespace"], registry=r
        )
        self.bad_local = Gauge(
            "finch_bad_local_rate",
            "Audited bad-local rate: estimate and 95% confidence sequence (valid at every look).",
            ["namespace", "stat"],
            registry=r,
        )
        self.audits = Gauge(
            "finch_audits", "Audited would-be-local answers, by verdict.", ["namespace", "verdict"], registry=r
        )
        self.threshold = Gauge(
            "finch_threshold",
            "The certified operating point on P(good), the stacked score (-1: none).",
            ["namespace"],
            registry=r,
        )
        self.log_dropped = Gauge(
            "finch_log_dropped", "Request records dropped because the writer fell behind.", registry=r
        )

    def observe(self, record, summary: ResponseSummary, cost: float) -> None:  # noqa: ANN001 - RequestRecord
        """Store listener: count one written request."""
        namespace = record.namespace
        self.requests.labels(namespace, record.route, record.reason, str(record.status)).inc()
        if record.latency_ms is not None:
            self.latency.labels(record.route).observe(record.latency_ms / 1000)
        if record.ttfb_ms is not None:
            self.ttfb.labels(record.route).observe(record.ttfb_ms / 1000)
        self.upstream_attempts.inc(record.attempts)
        self.tokens.labels(namespace, "input", record.route).inc(summary.input_tokens)
        self.tokens.labels(namespace, "output", record.route).inc(summary.output_tokens)
        (self.saved if record.route == Route.LOCAL else self.cost).labels(namespace).inc(cost)

    def render(self) -> bytes:
        return generate_latest(self.registry)
