"""A clock for tests that moves only when the test says, so leases lapse and sweeps run on cue, not on sleeps.

`advance` moves time and wakes the sleepers it makes due (the service's sweeper, in its own event loop
thread under `TestClient`); `settle` then waits, on a condition, until each of them has done its work
and sleeps again, so what the test reads next is what that work left.
"""

from __future__ import annotations

import asyncio
import threading
from datetime import datetime, timedelta, timezone


class ManualClock:
    def __init__(self, start: datetime | None = None) -> None:
        self._now = start or datetime.now(timezone.utc)
        self._changed = threading.Condition()
        self._sleeping: dict[asyncio.Task, tuple[datetime, asyncio.AbstractEventLoop, asyncio.Future]] = {}
        self._woken: set[asyncio.Task] = set()
        self._watched: set[asyncio.Task] = set()

    def now(self) -> datetime:
        with self._changed:
            return self._now

    async def sleep(self, seconds: float) -> None:
        task = asyncio.current_task()
        assert task is not None
        loop = asyncio.get_running_loop()
        woken = loop.create_future()
        with self._changed:
            if task not in self._watched:
                self._watched.add(task)
                task.add_done_callback(self._forget)
            self._woken.discard(task)
            self._sleeping[task] = (self._now + timedelta(seconds=seconds), loop, woken)
            self._changed.notify_all()
        try:
            await woken
        finally:
            with self._changed:
                self._sleeping.pop(task, None)
                self._changed.notify_all()

    def advance(self, seconds: float) -> None:
        """Move time on by `seconds` and wake every sleeper now due."""
        with self._changed:
            self._now += timedelta(seconds=seconds)
            for task, (due, loop, woken) in list(self._sleeping.items()):
                if due <= self._now:
                    del self._sleeping[task]
                    self._woken.add(task)
                    loop.call_soon_threadsafe(_wake, woken)

    def settle(self, sleepers: int = 1, within: float = 30.0) -> None:
        """Block until no woken sleeper is still at work and at least `sleepers` are asleep.

        Only from a thread other than the sleepers' event loop (a test driving an app through `TestClient`)."""
        with self._changed:
            settled = self._changed.wait_for(lambda: not self._woken and len(self._sleeping) >= sleepers, within)
            if not settled:
                raise AssertionError(
                    f"the clock's sleepers did not settle within {within} s: "
                    f"{len(self._woken)} still at work, {len(self._sleeping)} asleep, {sleepers} expected"
                )

    def _forget(self, task: asyncio.Task) -> None:
        with self._changed:
            self._woken.discard(task)
            self._sleeping.pop(task, None)
            self._watched.discard(task)
            self._changed.notify_all()


def _wake(woken: asyncio.Future) -> None:
    if not woken.done():
        woken.set_result(None)
