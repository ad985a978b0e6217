"""The workers list: who claimed or heartbeated within the last `workers_window_seconds`, on what device,
with how many threads, holding which job.

The worker protocol reports each claim (before it waits, so a long-poll that finds no job still counts as
seen) and each heartbeat; the rows live in the catalog (`service.catalog.workers`), so every replica of the
service shows the same list.
"""

from __future__ import annotations

import math
from datetime import datetime, timedelta

from sqlalchemy.orm import Session

from schemas.dataset import Page
from schemas.jobs import ClaimRequest, Heartbeat
from schemas.workers import WorkerPublic
from service.catalog import Catalog
from service.catalog.tables import utcnow
from service.catalog.workers import WorkerRow, count_seen_since, record_claim, record_heartbeat, seen_since
from service.jobs.records import aware
from service.pages import page

THREADS_METRIC = "threads"
"""The heartbeat metric in which a training worker reports its torch thread count."""


class WorkerRoster:
    def __init__(self, catalog: Catalog, window_seconds: float) -> None:
        self.catalog = catalog
        self.window = timedelta(seconds=window_seconds)

    async def claiming(self, request: ClaimRequest) -> None:
        now = utcnow()
        await self.catalog.run(lambda session: record_claim(session, request.worker, request.device, request.threads, now))

    def heard(self, session: Session, worker: str | None, beat: Heartbeat) -> None:
        """A heartbeat from `worker`, recorded in the caller's transaction (the one that records the beat)."""
        if worker is None:
            return
        reported = beat.metrics.get(THREADS_METRIC)
        threads = int(reported) if reported is not None and math.isfinite(reported) and reported >= 1 else None
        record_heartbeat(session, worker, threads, utcnow())

    def since(self) -> datetime:
        return utcnow() - self.window

    async def recent(self, limit: int, cursor: str | None) -> Page[WorkerPublic]:
        """Workers seen within the window, by name; the cursor is the name of the last one shown."""

        def read(session: Session) -> Page[WorkerPublic]:
            since = self.since()
            rows = seen_since(session, since, limit + 1, cursor)
            return page(rows, limit, count_seen_since(session, since), _public, lambda item: item[0].name)

        return await self.catalog.run(read)

    def recent_rows(self) -> list[tuple[WorkerRow, str | None]]:
        """Every worker seen within the window (for the metrics scrape)."""
        with self.catalog.session() as session:
            return seen_since(session, self.since())


def _public(item: tuple[WorkerRow, str | None]) -> WorkerPublic:
    row, job = item
    return WorkerPublic(
        name=row.name,
        device=row.device,  # type: ignore[arg-type]
        threads=row.threads,
        current_job=job,
        first_seen=aware(row.first_seen),  # type: ignore[arg-type]
        last_seen=aware(row.last_seen),  # type: ignore[arg-type]
        last_heartbeat=aware(row.last_heartbeat),
        heartbeats=row.heartbeats,
    )
