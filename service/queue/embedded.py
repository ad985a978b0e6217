"""The job queue on the catalog's own database, for one machine with nothing else installed.

One row per queued or held job. A claim takes the oldest row whose lease is free or lapsed with a
conditional UPDATE (the row must still look as it did when read), so two claimants never both win.
Lease deadlines are the queue clock's seconds since the epoch; `enqueued_at`, which only orders
arrivals, is the machine's. Waiting claimants are woken by enqueue and release in this process, and
look again at least every `poll_seconds` for leases that lapsed.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Sequence

from sqlalchemy import Engine, delete, or_, select, update
from sqlalchemy.orm import Session

from service.catalog.jobs import QueueEntryRow
from service.clock import Clock
from service.queue.base import Exhausted, JobQueue, Lease, check_channels


class EmbeddedJobQueue(JobQueue):
    def __init__(
        self, engine: Engine, lease_seconds: float, max_attempts: int, clock: Clock, poll_seconds: float = 1.0
    ) -> None:
        super().__init__(lease_seconds, max_attempts, clock)
        self._engine = engine
        self._poll_seconds = min(poll_seconds, lease_seconds / 4)
        self._changed: asyncio.Event | None = None

    def _notify(self) -> None:
        if self._changed is not None:
            self._changed.set()
            self._changed = None

    async def enqueue(self, job_id: str, channel: str = "any") -> None:
        check_channels([channel])
        await asyncio.to_thread(self._enqueue, job_id, channel)
        self._notify()

    def _enqueue(self, job_id: str, channel: str) -> None:
        with Session(self._engine) as session, session.begin():
            if session.get(QueueEntryRow, job_id) is None:
                session.add(
                    QueueEntryRow(
                        job_id=job_id, channel=channel, enqueued_at=time.time(), prior_attempts=0, deliveries=0
                    )
                )

    async def claim(self, channels: Sequence[str], wait: float) -> Lease | Exhausted | None:
        check_channels(channels)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + wait
        while True:
            if self._changed is None:
                self._changed = asyncio.Event()
            changed = self._changed
            claimed = await asyncio.to_thread(self._try_claim, list(channels))
            if claimed is not None:
                return claimed
            remaining = deadline - loop.time()
            if remaining <= 0:
                return None
            try:
                await asyncio.wait_for(changed.wait(), timeout=min(remaining, self._poll_seconds))
            except TimeoutError:
                pass

    def _try_claim(self, channels: list[str]) -> Lease | Exhausted | None:
        now = self._now()
        with Session(self._engine) as session, session.begin():
            lapsed = (QueueEntryRow.lease_token.is_not(None)) & (QueueEntryRow.lease_expires_at < now)
            candidates = session.scalars(
                select(QueueEntryRow)
                .where(QueueEntryRow.channel.in_(channels), or_(QueueEntryRow.lease_token.is_(None), lapsed))
                # lapsed leases first, as the Redis queue does; then oldest first
                .order_by(QueueEntryRow.lease_token.is_(None), QueueEntryRow.enqueued_at)
                .limit(8)
            ).all()
            for row in candidates:
                token = uuid.uuid4().hex
                previous = row.lease_token
                attempt = row.prior_attempts + row.deliveries + 1
                still_free = (
                    QueueEntryRow.lease_token.is_(None) if previous is None else QueueEntryRow.lease_token == previous
                )
                if attempt > self.max_attempts:
                    taken = session.execute(
                        delete(QueueEntryRow).where(QueueEntryRow.job_id == row.job_id, still_free)
                    ).rowcount
                    if taken:
                        return Exhausted(row.job_id, attempt - 1)
                    continue
                taken = session.execute(
                    update(QueueEntryRow)
                    .where(QueueEntryRow.job_id == row.job_id, still_free)
                    .values(
                        lease_token=token,
                        lease_expires_at=now + self.lease_seconds,
                        deliveries=QueueEntryRow.deliveries + 1,
                    )
                ).rowcount
                if taken:
                    return Lease(row.job_id, token, attempt)
        return None

    async def renew(self, lease: Lease) -> bool:
        return await asyncio.to_thread(self._renew, lease)

    def _renew(self, lease: Lease) -> bool:
        with Session(self._engine) as session, session.begin():
            renewed = session.execute(
                update(QueueEntryRow)
                .where(QueueEntryRow.job_id == lease.job_id, QueueEntryRow.lease_token == lease.token)
                .values(lease_expires_at=self._now() + self.lease_seconds)
            ).rowcount
        return bool(renewed)

    async def release(self, lease: Lease, count_attempt: bool = False) -> bool:
        released = await asyncio.to_thread(self._release, lease, count_attempt)
        if released:
            self._notify()
        return released

    def _release(self, lease: Lease, count_attempt: bool) -> bool:
        with Session(self._engine) as session, session.begin():
            released = session.execute(
                update(QueueEntryRow)
                .where(QueueEntryRow.job_id == lease.job_id, QueueEntryRow.lease_token == lease.token)
                .values(
                    lease_token=None,
                    lease_expires_at=None,
                    enqueued_at=time.time(),
                    prior_attempts=lease.attempts_kept(count_attempt),
                    deliveries=0,
                )
            ).rowcount
        return bool(released)

    async def remove(self, job_id: str) -> None:
        await asyncio.to_thread(self._remove, job_id)

    def _remove(self, job_id: str) -> None:
        with Session(self._engine) as session, session.begin():
            session.execute(delete(QueueEntryRow).where(QueueEntryRow.job_id == job_id))

    async def ping(self) -> None:
        await asyncio.to_thread(self._ping)

    def _ping(self) -> None:
        with Session(self._engine) as session:
            session.execute(select(QueueEntryRow.job_id).limit(1))
