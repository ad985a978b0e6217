"""Every metric of one app, in a `CollectorRegistry` of its own (two apps in one process never share a
series), and their exposition in the Prometheus text format.

Counters and histograms here count events as this process sees them; the gauges read from the catalog at
scrape time (`gauges.CatalogGauges`) are registered beside them while the app's services are open.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.exposition import CONTENT_TYPE_PLAIN_0_0_4, generate_latest
from prometheus_client.registry import Collector

UNMATCHED_ROUTE = "unmatched"
"""The route label of a request no route matched (so unknown paths add no series)."""

REQUEST_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0)
"""Seconds: from a job lookup to a long-poll claim or a gigabyte upload."""
JOB_BUCKETS = (1.0, 10.0, 30.0, 60.0, 300.0, 900.0, 1800.0, 3600.0, 3 * 3600.0, 6 * 3600.0, 12 * 3600.0, 24 * 3600.0)
"""Seconds: from a short evaluation to a day of training."""

CONTENT_TYPE = CONTENT_TYPE_PLAIN_0_0_4


class ServiceMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "replaybank_http_requests",
            "HTTP requests answered, by method, route template and status.",
            ["method", "route", "status"],
            registry=self.registry,
        )
        self.request_seconds = Histogram(
            "replaybank_http_request_duration_seconds",
            "Time from a request's arrival to the end of its answer, by method and route template.",
            ["method", "route"],
            buckets=REQUEST_BUCKETS,
            registry=self.registry,
        )
        self.uploaded_rows = Counter(
            "replaybank_uploaded_rows", "Rows of accepted uploads (each one a new version), by dataset.", ["dataset"], registry=self.registry
        )
        self.uploaded_bytes = Counter(
            "replaybank_uploaded_bytes", "Body bytes of accepted uploads, by dataset.", ["dataset"], registry=self.registry
        )
        self.job_seconds = Histogram(
            "replaybank_job_duration_seconds",
            "Jobs that ended, by kind and outcome (succeeded, failed, cancelled): seconds from their first start "
            "(or, never started, their submission) to their end.",
            ["kind", "outcome"],
            buckets=JOB_BUCKETS,
            registry=self.registry,
        )
        self.leases_lost = Counter(
            "replaybank_leases_lost",
            "Worker calls refused because the worker no longer held the job (its lease lapsed and passed on, or the job ended).",
            registry=self.registry,
        )

    def request_answered(self, method: str, route: str, status: int, seconds: float) -> None:
        self.requests.labels(method, route, str(status)).inc()
        self.request_seconds.labels(method, route).observe(seconds)

    def upload_accepted(self, dataset: str, rows: int, body_bytes: int) -> None:
        self.uploaded_rows.labels(dataset).inc(rows)
        self.uploaded_bytes.labels(dataset).inc(body_bytes)

    def job_ended(self, kind: str, outcome: str, seconds: float) -> None:
        self.job_seconds.labels(kind, outcome).observe(max(seconds, 0.0))

    def lease_lost(self) -> None:
        self.leases_lost.inc()

    def watch(self, collector: Collector) -> None:
        self.registry.register(collector)

    def unwatch(self, collector: Collector) -> None:
        self.registry.unregister(collector)

    def exposition(self) -> bytes:
        """Every metric in the Prometheus text format (version 0.0.4, `CONTENT_TYPE`)."""
        return generate_latest(self.registry)
