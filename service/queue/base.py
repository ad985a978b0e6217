"""The job queue: who holds which job, for how long, and how often it has been tried.

The catalog holds what a job is and how it stands; the queue only hands job ids to workers under
leases. A lease that is not renewed within `lease_seconds` (on the queue's `Clock`) lapses and the job goes to
the next worker that claims, as the next attempt; after `max_attempts` lapsed attempts the queue gives up and
reports the job as exhausted. A lease given back on purpose (`release`, a worker shutting down) does
not count as an attempt; one given back because the worker could not run the job
(`release(..., count_attempt=True)`) does.

The queue is the one source of a job's attempt count: a claim's `Lease.attempt` says which attempt
it is, `Lease.attempts_kept` what stays counted once it is given back, `JobQueue.is_last` whether no
attempt is left after it, and `Exhausted.attempts` how many were used. The job's catalog row only
records those numbers for users to see.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass

from service.clock import Clock

CHANNELS = ("any", "cuda")
"""Jobs that need a GPU wait in `cuda`; the rest in `any`. A CUDA worker claims from both."""


@dataclass(frozen=True)
class Lease:
    job_id: str
    token: str
    """Opaque proof of holding; the worker sends it with every call about the job."""
    attempt: int
    """1 for the first try; re-claims after a lapsed lease count up."""

    def attempts_kept(self, count_attempt: bool) -> int:
        """The attempts still counted once this lease is given back: this one only when `count_attempt`."""
        return self.attempt if count_attempt else self.attempt - 1


@dataclass(frozen=True)
class Exhausted:
    """A job whose leases lapsed `attempts` times; the queue has dropped it."""

    job_id: str
    attempts: int


class JobQueue(ABC):
    def __init__(self, lease_seconds: float, max_attempts: int, clock: Clock) -> None:
        if lease_seconds <= 0:
            raise ValueError("lease_seconds must be positive")
        if max_attempts < 1:
            raise ValueError("max_attempts must be at least 1")
        self.lease_seconds = lease_seconds
        self.max_attempts = max_attempts
        self.clock = clock
        """What lease deadlines are measured on; the worker protocol judges silent workers on it too."""

    def _now(self) -> float:
        """The clock's time in seconds since the epoch, as deadlines are stored."""
        return self.clock.now().timestamp()

    @abstractmethod
    async def enqueue(self, job_id: str, channel: str = "any") -> None:
        """Make a job claimable. Enqueueing a job that is already queued or held changes nothing."""

    @abstractmethod
    async def claim(self, channels: Sequence[str], wait: float) -> Lease | Exhausted | None:
        """The oldest claimable job, waiting up to `wait` seconds for one; lapsed leases come first.

        `wait` is how long the caller (a long-polling worker) is willing to wait, in real seconds; whether a
        lease has lapsed is decided on the queue's clock."""

    @abstractmethod
    async def renew(self, lease: Lease) -> bool:
        """Extend a lease by `lease_seconds`; False when it lapsed and someone else holds the job."""

    @abstractmethod
    async def release(self, lease: Lease, count_attempt: bool = False) -> bool:
        """Give a held job back, claimable at once; this attempt counts only when `count_attempt`. False if
        not held."""

    def is_last(self, lease: Lease) -> bool:
        """Whether `lease` holds the job's last attempt: once it counts, the job is exhausted."""
        return lease.attempt >= self.max_attempts

    @abstractmethod
    async def remove(self, job_id: str) -> None:
        """Forget a job wherever it is (finished or cancelled); a holder's next renew fails."""

    @abstractmethod
    async def ping(self) -> None:
        """Raise when the queue's backing store does not answer."""

    async def close(self) -> None:
        """Free connections."""


def check_channels(channels: Sequence[str]) -> None:
    unknown = set(channels) - set(CHANNELS)
    if unknown or not channels:
        raise ValueError(f"channels must be among {CHANNELS}, got {list(channels)}")
