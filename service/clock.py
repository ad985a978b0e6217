"""The clock leases run on: when a lease lapses, when the sweeper looks for silent workers, how long a
restarted service waits before judging them.

The queues and the worker protocol take a `Clock` at construction rather than reading the time
themselves, so tests can move time by hand instead of sleeping through real leases. Production
passes the one real clock, `SystemClock`.
"""

from __future__ import annotations

import asyncio
from datetime import datetime, timezone
from typing import Protocol


class Clock(Protocol):
    def now(self) -> datetime:
        """The current time, aware and in UTC. Lease deadlines are absolute wall-clock times, so service
        processes sharing one Redis agree on them."""
        ...

    async def sleep(self, seconds: float) -> None:
        """Wait until `seconds` have passed on this clock."""
        ...


class SystemClock:
    """The machine's wall clock, and asyncio's timers."""

    def now(self) -> datetime:
        return datetime.now(timezone.utc)

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(seconds)
