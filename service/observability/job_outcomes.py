"""Job durations by outcome, observed from the catalog's own writes: whatever code ends a job (a worker's
complete or fail, a cancel, the sweeper giving up on a silent worker, a claim finding the attempts spent),
its row's status turns to a finished one in some transaction, and that is counted once the transaction
commits (a rolled-back one counts nothing). No code path has to remember to report it.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import inspect
from sqlalchemy.orm import Session

from schemas.jobs import FINISHED_STATUSES
from service.catalog import Catalog
from service.catalog.jobs import JobRow
from service.jobs.records import aware
from service.observability.metrics import ServiceMetrics

PENDING = "replaybank.jobs_ended"
"""The key in `Session.info` under which a transaction keeps the jobs it ended until it commits."""


class JobOutcomes:
    def __init__(self, metrics: ServiceMetrics) -> None:
        self.metrics = metrics

    def attach(self, catalog: Catalog) -> None:
        catalog.listen("after_flush", self._after_flush)
        catalog.listen("after_commit", self._after_commit)
        catalog.listen("after_rollback", self._after_rollback)

    @staticmethod
    def _after_flush(session: Session, _context: Any) -> None:
        for row in session.dirty:
            if not isinstance(row, JobRow) or row.status not in FINISHED_STATUSES:
                continue
            before = inspect(row).attrs.status.history.deleted
            if not before or before[0] in FINISHED_STATUSES:
                continue  # status unchanged in this flush, or it was over already
            began = aware(row.started_at) or aware(row.created_at)
            ended = aware(row.finished_at) or aware(row.updated_at)
            seconds = (ended - began).total_seconds() if began is not None and ended is not None else 0.0
            session.info.setdefault(PENDING, []).append((row.kind, row.status, seconds))

    def _after_commit(self, session: Session) -> None:
        for kind, outcome, seconds in session.info.pop(PENDING, []):
            self.metrics.job_ended(kind, outcome, seconds)

    @staticmethod
    def _after_rollback(session: Session) -> None:
        session.info.pop(PENDING, None)
