"""One suite for every queue: Redis, and the embedded queue on SQLite and on PostgreSQL.

Leases run on a `ManualClock`: a lease lapses when the test moves the clock past its deadline, never
while a test waits, and a claimant that waits is woken on cue, so nothing here sleeps.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable

import pytest
from sqlalchemy import create_engine

from service.catalog.jobs import QueueEntryRow
from service.queue import Exhausted, JobQueue, Lease
from service.queue.embedded import EmbeddedJobQueue
from service.queue.redis_queue import RedisJobQueue
from tests.clock import ManualClock

pytestmark = pytest.mark.anyio

LEASE = 30.0
"""Long beside any test: a lease lapses only when the clock is moved past it."""

NEVER = 3600.0
"""A poll interval no test waits out: a claimant that stops waiting sooner was woken."""

WOKEN_WITHIN = 10.0
"""Far less than `NEVER` and far more than a wake-up takes, even on a loaded machine."""


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


class WatchedEmbeddedQueue(EmbeddedJobQueue):
    """Says when a claimant looked and found nothing, so what the test does next happens while it waits."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.looked_in_vain = asyncio.Event()
        self._loop = asyncio.get_running_loop()

    def _try_claim(self, channels: list[str]) -> Lease | Exhausted | None:
        claimed = super()._try_claim(channels)
        if claimed is None:
            self._loop.call_soon_threadsafe(self.looked_in_vain.set)
        return claimed


class WatchedRedisQueue(RedisJobQueue):
    """Says when a claimant looked and found nothing, so what the test does next happens while it waits."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.looked_in_vain = asyncio.Event()
        look = self._claim

        async def watched_look(**kwargs):
            answer = await look(**kwargs)
            if answer[0] == "none":
                self.looked_in_vain.set()
            return answer

        self._claim = watched_look


Build = Callable[[float, int, float], JobQueue]


class MakeQueue:
    """Builds queues of one kind on the test's clock; queues built twice share their store and clock, like
    two service processes would."""

    def __init__(self, kind: str, build: Build) -> None:
        self.kind, self._build = kind, build
        self.made: list[JobQueue] = []

    def __call__(self, lease_seconds: float = LEASE, max_attempts: int = 3, poll_seconds: float = 1.0) -> JobQueue:
        self.made.append(self._build(lease_seconds, max_attempts, poll_seconds))
        return self.made[-1]

    @property
    def wakes_other_processes(self) -> bool:
        """Redis tells every service process of a release; the embedded queue serves one process."""
        return self.kind == "redis"


@pytest.fixture(params=["redis", "embedded-sqlite", "embedded-postgres"])
async def make_queue(request: pytest.FixtureRequest, tmp_path, clock: ManualClock) -> AsyncIterator[MakeQueue]:
    engines = []
    if request.param == "redis":
        url = request.getfixturevalue("redis_url")

        def build(lease_seconds: float, max_attempts: int, poll_seconds: float) -> JobQueue:
            return WatchedRedisQueue(url, lease_seconds, max_attempts, clock, prefix="test", poll_seconds=poll_seconds)

    else:
        if request.param == "embedded-sqlite":
            url = f"sqlite:///{tmp_path / 'catalog.sqlite'}"
        else:
            url = request.getfixturevalue("postgres_url")
        engine = create_engine(url)
        engines.append(engine)
        QueueEntryRow.metadata.create_all(engine, tables=[QueueEntryRow.__table__])

        def build(lease_seconds: float, max_attempts: int, poll_seconds: float) -> JobQueue:
            return WatchedEmbeddedQueue(engine, lease_seconds, max_attempts, clock, poll_seconds=poll_seconds)

    queues = MakeQueue(request.param, build)
    yield queues
    for queue in queues.made:
        await queue.close()
    for engine in engines:
        engine.dispose()


async def waiting(claimant: asyncio.Task, queue: JobQueue) -> None:
    """Return once `claimant` has looked in `queue`, found nothing and so waits. Call it right after
    starting the claimant, before anything awaits."""
    queue.looked_in_vain.clear()  # type: ignore[attr-defined]
    looked = asyncio.create_task(queue.looked_in_vain.wait())  # type: ignore[attr-defined]
    done, _ = await asyncio.wait({claimant, looked}, timeout=WOKEN_WITHIN, return_when=asyncio.FIRST_COMPLETED)
    looked.cancel()
    assert claimant not in done, f"the claim ended before it had to wait: {claimant.result()}"
    assert looked in done, "the claimant never looked"


async def test_claim_hands_each_job_once_in_order(make_queue: MakeQueue) -> None:
    queue = make_queue()
    for job in ("a", "b", "c"):
        await queue.enqueue(job)
    claimed = [await queue.claim(["any"], wait=0) for _ in range(3)]
    assert [lease.job_id for lease in claimed] == ["a", "b", "c"]
    assert all(isinstance(lease, Lease) and lease.attempt == 1 for lease in claimed)
    assert await queue.claim(["any"], wait=0) is None


async def test_enqueue_twice_queues_once(make_queue: MakeQueue) -> None:
    queue = make_queue()
    await queue.enqueue("a")
    await queue.enqueue("a")
    assert isinstance(await queue.claim(["any"], wait=0), Lease)
    assert await queue.claim(["any"], wait=0) is None


async def test_an_empty_claim_waits_as_long_as_asked(make_queue: MakeQueue) -> None:
    queue = make_queue()
    started = time.monotonic()
    assert await queue.claim(["any"], wait=0.3) is None
    assert time.monotonic() - started >= 0.28


async def test_a_waiting_claimant_is_woken_by_an_arrival(make_queue: MakeQueue) -> None:
    queue = make_queue(poll_seconds=NEVER, lease_seconds=NEVER * 4)
    claimant = asyncio.create_task(queue.claim(["any"], wait=NEVER))
    await waiting(claimant, queue)

    await queue.enqueue("late")

    claimed = await asyncio.wait_for(claimant, WOKEN_WITHIN)
    assert isinstance(claimed, Lease) and claimed.job_id == "late"


async def test_a_lapsed_lease_goes_to_the_next_claimant_as_the_next_attempt(
    make_queue: MakeQueue, clock: ManualClock
) -> None:
    queue = make_queue()
    await queue.enqueue("a")
    first = await queue.claim(["any"], wait=0)
    assert isinstance(first, Lease)
    clock.advance(LEASE - 1)
    assert await queue.claim(["any"], wait=0) is None  # held, not lapsed yet
    clock.advance(2)
    second = await queue.claim(["any"], wait=0)
    assert isinstance(second, Lease)
    assert (second.job_id, second.attempt) == ("a", 2)
    assert second.token != first.token
    assert not await queue.renew(first)  # the dead worker woke up: too late
    assert await queue.renew(second)


async def test_renewing_keeps_the_lease_a_whole_lease_from_the_renewal(
    make_queue: MakeQueue, clock: ManualClock
) -> None:
    queue = make_queue()
    await queue.enqueue("a")
    lease = await queue.claim(["any"], wait=0)
    assert isinstance(lease, Lease)
    for _ in range(4):  # well past the first deadline, renewing every two thirds of a lease
        clock.advance(LEASE * 2 / 3)
        assert await queue.renew(lease)
    clock.advance(LEASE - 1)
    assert await queue.claim(["any"], wait=0) is None
    clock.advance(2)
    taken_over = await queue.claim(["any"], wait=0)
    assert isinstance(taken_over, Lease) and (taken_over.job_id, taken_over.attempt) == ("a", 2)


async def test_only_the_holder_renews_or_releases(make_queue: MakeQueue) -> None:
    queue, other_process = make_queue(), make_queue()
    await queue.enqueue("a")
    lease = await queue.claim(["any"], wait=0)
    assert isinstance(lease, Lease)
    forged = Lease("a", "not-the-token", lease.attempt)
    assert not await other_process.renew(forged)
    assert not await other_process.release(forged)
    assert await other_process.renew(lease)  # the holder's token counts wherever it is shown
    assert await other_process.claim(["any"], wait=0) is None


async def test_attempts_are_bounded(make_queue: MakeQueue, clock: ManualClock) -> None:
    queue = make_queue(max_attempts=2)
    await queue.enqueue("a")
    await queue.enqueue("b")
    first = await queue.claim(["any"], wait=0)
    assert isinstance(first, Lease) and first.job_id == "a"
    clock.advance(LEASE + 1)
    second = await queue.claim(["any"], wait=0)
    assert isinstance(second, Lease) and (second.job_id, second.attempt) == ("a", 2)
    clock.advance(LEASE + 1)
    given_up = await queue.claim(["any"], wait=0)
    assert given_up == Exhausted("a", 2)
    other = await queue.claim(["any"], wait=0)
    assert isinstance(other, Lease) and other.job_id == "b"
    await queue.remove("b")
    clock.advance(LEASE + 1)
    assert await queue.claim(["any"], wait=0) is None


async def test_release_makes_the_job_claimable_without_counting_the_attempt(
    make_queue: MakeQueue, clock: ManualClock
) -> None:
    queue = make_queue()
    await queue.enqueue("a")
    first = await queue.claim(["any"], wait=0)
    assert isinstance(first, Lease)
    clock.advance(LEASE + 1)
    second = await queue.claim(["any"], wait=0)
    assert isinstance(second, Lease) and second.attempt == 2
    assert not await queue.release(first)  # not the holder any more
    assert await queue.release(second)
    third = await queue.claim(["any"], wait=0)
    assert isinstance(third, Lease) and (third.job_id, third.attempt) == ("a", 2)
    assert not await queue.renew(second)


async def test_a_release_that_counts_the_attempt_exhausts_the_job_after_the_last(make_queue: MakeQueue) -> None:
    queue = make_queue(max_attempts=2)
    await queue.enqueue("a")
    first = await queue.claim(["any"], wait=0)
    assert isinstance(first, Lease) and not queue.is_last(first)
    assert await queue.release(first, count_attempt=True)
    second = await queue.claim(["any"], wait=0)
    assert isinstance(second, Lease) and (second.job_id, second.attempt) == ("a", 2) and queue.is_last(second)
    assert not await queue.renew(first)
    assert await queue.release(second, count_attempt=True)
    assert await queue.claim(["any"], wait=0) == Exhausted("a", 2)
    assert await queue.claim(["any"], wait=0) is None


async def test_release_wakes_a_waiting_claimant(make_queue: MakeQueue) -> None:
    holder = make_queue(poll_seconds=NEVER, lease_seconds=NEVER * 4)
    waiter = make_queue(poll_seconds=NEVER, lease_seconds=NEVER * 4) if make_queue.wakes_other_processes else holder
    await holder.enqueue("a")
    lease = await holder.claim(["any"], wait=0)
    assert isinstance(lease, Lease)
    claimant = asyncio.create_task(waiter.claim(["any"], wait=NEVER))
    await waiting(claimant, waiter)

    assert await holder.release(lease)

    claimed = await asyncio.wait_for(claimant, WOKEN_WITHIN)
    assert isinstance(claimed, Lease) and claimed.job_id == "a"


async def test_removed_jobs_are_neither_claimable_nor_renewable(make_queue: MakeQueue, clock: ManualClock) -> None:
    queue = make_queue()
    await queue.enqueue("queued")
    await queue.enqueue("held")
    await queue.remove("queued")
    held = await queue.claim(["any"], wait=0)
    assert isinstance(held, Lease) and held.job_id == "held"
    await queue.remove("held")
    assert not await queue.renew(held)
    assert not await queue.release(held)
    clock.advance(LEASE + 1)
    assert await queue.claim(["any"], wait=0) is None
    await queue.remove("never-queued")


async def test_cuda_jobs_go_only_to_claimants_that_ask_for_cuda(make_queue: MakeQueue) -> None:
    queue = make_queue()
    await queue.enqueue("gpu", channel="cuda")
    assert await queue.claim(["any"], wait=0) is None
    claimed = await queue.claim(["cuda", "any"], wait=0)
    assert isinstance(claimed, Lease) and claimed.job_id == "gpu"


async def test_concurrent_claimants_never_share_a_job(make_queue: MakeQueue) -> None:
    queues = [make_queue() for _ in range(2)]
    jobs = [f"job{i}" for i in range(6)]
    for job in jobs:
        await queues[0].enqueue(job)
    results = await asyncio.gather(*(queues[i % 2].claim(["any"], wait=0.5) for i in range(10)))
    leases = [result for result in results if result is not None]
    assert sorted(lease.job_id for lease in leases) == jobs
