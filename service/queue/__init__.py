"""Job queues: Redis when configured, otherwise the catalog's own database; leases on the injected clock."""

from __future__ import annotations

from sqlalchemy import Engine

from service.clock import Clock
from service.queue.base import CHANNELS, Exhausted, JobQueue, Lease


def create_queue(
    redis_url: str | None, engine: Engine, lease_seconds: float, max_attempts: int, clock: Clock
) -> JobQueue:
    if redis_url:
        from service.queue.redis_queue import RedisJobQueue

        return RedisJobQueue(redis_url, lease_seconds, max_attempts, clock)
    from service.queue.embedded import EmbeddedJobQueue

    return EmbeddedJobQueue(engine, lease_seconds, max_attempts, clock)


__all__ = ["CHANNELS", "Exhausted", "JobQueue", "Lease", "create_queue"]
