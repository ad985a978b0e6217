"""Workers as operators see them: who claimed or heartbeated recently, on what, holding which job."""

from __future__ import annotations

from pydantic import BaseModel

from schemas.jobs import WorkerDevice
from schemas.times import UtcDatetime


class WorkerPublic(BaseModel):
    name: str
    """The name the worker claims under (`replaybank worker --name`, default host-pid)."""
    device: WorkerDevice | None
    """The device it said it trains on at its last claim; None for a worker heard only by heartbeat."""
    threads: int | None
    """The CPU threads it trains with, as its latest claim or heartbeat said (a train job reports its own)."""
    current_job: str | None
    """The running job it holds, if any."""
    first_seen: UtcDatetime
    last_seen: UtcDatetime
    """Its last claim (a long-poll that found no job counts) or heartbeat."""
    last_heartbeat: UtcDatetime | None
    heartbeats: int
    """Heartbeats since it was first seen."""
