"""How many torch threads a training process uses: its share of the cores, and within that share the
count that trains fastest for the network at hand.

More threads than free cores is the worst case on a shared machine: OpenMP threads spin waiting for each
other while another process holds the core, and an IQL job measured 1.6 steps/s on 2 threads against
25.7 on 1 beside a busy neighbour. So every training process on a machine (workers and `fit`) registers
in one folder (`CoreShare`); each takes `cores // processes` threads at most, and re-reads that share
while it trains, so a second worker starting slows the first to its half instead of to a crawl.

Within the share, more threads only pay for large matrix products: a 64x64 network trains fastest on
one thread even on an idle 16-core machine. Rather than guess from the network size, `ThreadTuner`
times the first real training steps at each candidate count and keeps the fastest; it measures again
when the share changes or the chosen count slows down by a third (the machine got busier).
"""

from __future__ import annotations

import fcntl
import math
import os
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

SHARE_FOLDER = "replaybank-cores"
RECHECK_SECONDS = 5.0
"""How often a trainer looks again at how many processes share the cores."""
MEASURE_SECONDS = 0.5
"""Training time spent at each candidate thread count before choosing."""
WARMUP_STEPS = 3
"""Steps after a thread-count change that are not timed (thread pools start, caches warm)."""
SLOWDOWN_TO_REMEASURE = 1.5
"""Measure again once the chosen count runs this many times slower than it measured."""


def usable_cores() -> int:
    """Cores this process may run on: its CPU affinity, capped by a cgroup CPU quota (containers)."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    quota = _cgroup_quota()
    return max(1, min(cores, math.ceil(quota))) if quota else max(1, cores)


def _cgroup_quota() -> float | None:
    """The CPU quota in cores from cgroup v2 (`cpu.max`) or v1 (`cpu.cfs_quota_us`), or None without one."""
    try:
        quota, period = Path("/sys/fs/cgroup/cpu.max").read_text().split()[:2]
        return None if quota == "max" else int(quota) / int(period)
    except (OSError, ValueError):
        pass
    try:
        quota_us = int(Path("/sys/fs/cgroup/cpu/cpu.cfs_quota_us").read_text())
        period_us = int(Path("/sys/fs/cgroup/cpu/cpu.cfs_period_us").read_text())
        return quota_us / period_us if quota_us > 0 else None
    except (OSError, ValueError):
        return None


class CoreShare:
    """This process's membership of the machine's training processes, and its share of the cores.

    Each member holds an exclusive `flock` on a file of its own in a shared folder; a file nobody holds
    belongs to a process that died, and is removed by whoever counts next. A lock dies with its process,
    so a killed worker never keeps its share.
    """

    def __init__(self, folder: Path | None = None, cores: int | None = None) -> None:
        self.folder = folder or Path(tempfile.gettempdir()) / f"{SHARE_FOLDER}-{os.getuid()}"
        self.cores = cores or usable_cores()
        self._file: int | None = None
        self._path: Path | None = None

    def __enter__(self) -> CoreShare:
        self.folder.mkdir(parents=True, exist_ok=True)
        self._path = self.folder / f"{os.getpid()}-{time.monotonic_ns()}.lock"
        self._file = os.open(self._path, os.O_CREAT | os.O_RDWR, 0o600)
        fcntl.flock(self._file, fcntl.LOCK_EX)
        return self

    def __exit__(self, *exc_info: object) -> None:
        if self._file is not None:
            assert self._path is not None
            self._path.unlink(missing_ok=True)
            os.close(self._file)
            self._file = None

    def members(self) -> int:
        """Live training processes on this machine, this one included."""
        live = 0
        for path in self.folder.glob("*.lock"):
            if path == self._path:
                live += 1
                continue
            try:
                handle = os.open(path, os.O_RDWR)
            except FileNotFoundError:
                continue
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                live += 1
            else:
                path.unlink(missing_ok=True)  # its process is gone
            finally:
                os.close(handle)
        return max(live, 1)

    def threads(self) -> int:
        """This process's share of the cores: at least one thread."""
        return max(1, self.cores // self.members())


def candidate_counts(share: int) -> list[int]:
    """Thread counts worth timing within a share: 1, the powers of two below it, and the share itself."""
    counts = {1, share}
    count = 2
    while count < share:
        counts.add(count)
        count *= 2
    return sorted(counts)


class ThreadTuner:
    """Sets torch's thread count while training runs; call `between_steps()` before every update.

    With `fixed` (a user's `--threads`) it sets that count once and never changes it.
    """

    def __init__(
        self,
        share: Callable[[], int],
        set_threads: Callable[[int], None],
        fixed: int | None = None,
        clock: Callable[[], float] = time.perf_counter,
    ) -> None:
        self._share = share
        self._set_threads = set_threads
        self._fixed = fixed
        self._clock = clock
        self.threads: int | None = fixed
        """The count in use; None until the first step."""
        self.rates: dict[int, float] = {}
        """Steps per second measured at each count in the latest round of measuring."""
        self._pending: list[int] = []
        self._allowed = 0
        self._chosen_rate: float | None = None
        self._window_start: float | None = None
        self._window_steps = -WARMUP_STEPS
        self._next_share_check = 0.0
        if fixed is not None:
            set_threads(fixed)

    @property
    def settled(self) -> bool:
        """A count is chosen (or fixed), not being measured."""
        return self._fixed is not None or self._chosen_rate is not None

    def describe(self) -> str:
        """The count in use and why, for a log line."""
        if self._fixed is not None:
            return f"{self._fixed} thread(s), fixed by --threads"
        measured = ", ".join(f"{threads}: {rate:.1f}" for threads, rate in sorted(self.rates.items()))
        return f"{self.threads} thread(s), the fastest within a share of {self._allowed} (steps/s {measured})"

    def between_steps(self) -> None:
        if self._fixed is not None:
            return
        now = self._clock()
        if now >= self._next_share_check:
            self._next_share_check = now + RECHECK_SECONDS
            allowed = self._share()
            if allowed != self._allowed:
                self._allowed = allowed
                self._measure_again()
        if self._window_steps < 0:
            self._window_steps += 1
            if self._window_steps == 0:
                self._window_start = now
            return
        self._window_steps += 1
        assert self._window_start is not None
        elapsed = now - self._window_start
        if elapsed < MEASURE_SECONDS:
            return
        rate = self._window_steps / elapsed
        if self._pending:
            self.rates[self.threads] = rate
            self._pending.pop(0)
            if self._pending:
                self._use(self._pending[0])
            else:
                best = max(self.rates, key=self.rates.__getitem__)
                self._chosen_rate = self.rates[best]
                self._use(best)
            return
        if self._chosen_rate is not None and rate * SLOWDOWN_TO_REMEASURE < self._chosen_rate:
            self._measure_again()
            return
        self._window_start, self._window_steps = now, 0

    def _measure_again(self) -> None:
        self._pending = candidate_counts(self._allowed)
        self.rates = {}
        self._chosen_rate = None
        self._use(self._pending[0])

    def _use(self, threads: int) -> None:
        if threads != self.threads:
            self._set_threads(threads)
            self.threads = threads
        self._window_steps = -WARMUP_STEPS
        self._window_start = None
