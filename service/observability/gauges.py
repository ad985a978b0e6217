"""The gauges read from the catalog at each scrape, so they say what the catalog says and never drift:
jobs queued and running by kind, workers seen by device, and each recent worker's heartbeats.

The catalog is shared by every replica of the service, so each replica reports the same values here
(aggregate them with `max`, not `sum`). A catalog that does not answer makes `replaybank_catalog_up` 0
and leaves the rest out of that scrape, rather than failing the whole scrape.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import get_args

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from sqlalchemy import func, select

from schemas.jobs import ACTIVE_STATUSES, JobKind, WorkerDevice
from service.catalog import Catalog
from service.catalog.jobs import JobRow
from service.jobs.records import aware
from service.jobs.roster import WorkerRoster

log = logging.getLogger("replaybank.metrics")

UNKNOWN_DEVICE = "unknown"


class CatalogGauges:
    """A custom collector (prometheus_client calls `collect` at every scrape)."""

    def __init__(self, catalog: Catalog, roster: WorkerRoster) -> None:
        self.catalog = catalog
        self.roster = roster

    def describe(self) -> Iterable[Metric]:
        """The families without values, so registering asks the catalog nothing."""
        return self._families()

    def collect(self) -> Iterable[Metric]:
        up, queued, running, seen, heartbeats, last_heartbeat = self._families()
        try:
            with self.catalog.session() as session:
                active = session.execute(
                    select(JobRow.kind, JobRow.status, func.count()).where(JobRow.status.in_(ACTIVE_STATUSES)).group_by(JobRow.kind, JobRow.status)
                ).all()
            workers = self.roster.recent_rows()
        except Exception:  # the catalog is away: say so, and serve what this process counts itself
            log.warning("the metrics scrape could not read the catalog", exc_info=True)
            up.add_metric([], 0)
            return [up]
        up.add_metric([], 1)
        counts = {(kind, status): count for kind, status, count in active}
        for kind in get_args(JobKind):
            queued.add_metric([kind], counts.get((kind, "queued"), 0))
            running.add_metric([kind], counts.get((kind, "running"), 0))
        by_device = dict.fromkeys([*get_args(WorkerDevice), UNKNOWN_DEVICE], 0)
        for row, _job in workers:
            by_device[row.device or UNKNOWN_DEVICE] += 1
            heartbeats.add_metric([row.name], row.heartbeats)
            moment = aware(row.last_heartbeat)
            if moment is not None:
                last_heartbeat.add_metric([row.name], moment.timestamp())
        for device, count in by_device.items():
            seen.add_metric([device], count)
        return [up, queued, running, seen, heartbeats, last_heartbeat]

    def _families(self) -> tuple[GaugeMetricFamily, GaugeMetricFamily, GaugeMetricFamily, GaugeMetricFamily, CounterMetricFamily, GaugeMetricFamily]:
        window = f"{self.roster.window.total_seconds():g}"
        return (
            GaugeMetricFamily("replaybank_catalog_up", "1 when this scrape could read the catalog, else 0."),
            GaugeMetricFamily("replaybank_jobs_queued", "Jobs waiting for a worker (the queue depth), by kind.", labels=["kind"]),
            GaugeMetricFamily("replaybank_jobs_running", "Jobs a worker holds now, by kind.", labels=["kind"]),
            GaugeMetricFamily(
                "replaybank_workers_seen", f"Workers that claimed or heartbeated in the last {window} s, by device.", labels=["device"]
            ),
            CounterMetricFamily(
                "replaybank_worker_heartbeats", f"Heartbeats of each worker seen in the last {window} s.", labels=["worker"]
            ),
            GaugeMetricFamily(
                "replaybank_worker_last_heartbeat_timestamp_seconds",
                "When each recently seen worker last heartbeated (Unix time).",
                labels=["worker"],
            ),
        )
