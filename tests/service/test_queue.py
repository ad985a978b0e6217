"""One suite for every queue: Redis Streams, and the embedded queue on SQLite and on PostgreSQL."""

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

pytestmark = pytest.mark.anyio

LEASE = 0.6

MakeQueue = Callable[..., JobQueue]


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(params=["redis", "embedded-sqlite", "embedded-postgres"])
async def make_queue(request: pytest.FixtureRequest, tmp_path) -> AsyncIterator[MakeQueue]:
    """Builds queues of one kind; queues built twice share their store, like two service processes would."""
    made: list[JobQueue] = []
    engines = []
    if request.param == "redis":
        url = request.getfixturevalue("redis_url")

        def build(lease_seconds: float = LEASE, max_attempts: int = 3) -> JobQueue:
            made.append(RedisJobQueue(url, lease_seconds, max_attempts, prefix="test"))
            return made[-1]

    else:
        if request.param == "embedded-sqlite":
            url = f"sqlite:///{tmp_path / 'catalog.sqlite'}"
        else:
            url = request.getfixturevalue("postgres_url")
        engine = create_engine(url)
        engines.append(engine)
        QueueEntryRow.metadata.create_all(engine, tables=[QueueEntryRow.__table__])

        def build(lease_seconds: float = LEASE, max_attempts: int = 3) -> JobQueue:
            made.append(EmbeddedJobQueue(engine, lease_seconds, max_attempts))
            return made[-1]

    yield build
    for queue in made:
        await queue.close()
    for engine in engines:
        engine.dispose()


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


async def test_claim_waits_for_a_job_and_wakes_when_one_arrives(make_queue: MakeQueue) -> None:
    queue = make_queue()
    started = time.monotonic()
    assert await queue.claim(["any"], wait=0.3) is None
    assert time.monotonic() - started >= 0.28

    async def enqueue_later() -> None:
        await asyncio.sleep(0.2)
        await queue.enqueue("late")

    started = time.monotonic()
    claimed, _ = await asyncio.gather(queue.claim(["any"], wait=5), enqueue_later())
    assert isinstance(claimed, Lease) and claimed.job_id == "late"
    assert time.monotonic() - started < 2


async def test_a_lapsed_lease_goes_to_the_next_claimant_as_the_next_attempt(make_queue: MakeQueue) -> None:
    queue = make_queue()
    await queue.enqueue("a")
    first = await queue.claim(["any"], wait=0)
    assert isinstance(first, Lease)
    assert await queue.claim(["any"], wait=0) is None  # held, not lapsed
    second = await queue.claim(["any"], wait=LEASE * 3)
    assert isinstance(second, Lease)
    assert (second.job_id, second.attempt) == ("a", 2)
    assert second.token != first.token
    assert not await queue.renew(first)  # the dead worker woke up: too late
    assert await queue.renew(second)


async def test_renewing_keeps_the_lease(make_queue: MakeQueue) -> None:
    queue = make_queue()
    await queue.enqueue("a")
    lease = await queue.claim(["any"], wait=0)
    assert isinstance(lease, Lease)
    for _ in range(4):
        await asyncio.sleep(LEASE / 3)
        assert await queue.renew(lease)
    assert await queue.claim(["any"], wait=0) is None


async def test_attempts_are_bounded(make_queue: MakeQueue) -> None:
    queue = make_queue(max_attempts=2)
    await queue.enqueue("a")
    await queue.enqueue("b")
    first = await queue.claim(["any"], wait=0)
    assert isinstance(first, Lease) and first.job_id == "a"
    await asyncio.sleep(LEASE * 1.2)
    second = await queue.claim(["any"], wait=0)
    assert isinstance(second, Lease) and (second.job_id, second.attempt) == ("a", 2)
    await asyncio.sleep(LEASE * 1.2)
    given_up = await queue.claim(["any"], wait=0)
    assert given_up == Exhausted("a", 2)
    other = await queue.claim(["any"], wait=0)
    assert isinstance(other, Lease) and other.job_id == "b"
    await queue.remove("b")
    assert await queue.claim(["any"], wait=LEASE * 1.5) is None


async def test_release_makes_the_job_claimable_without_counting_the_attempt(make_queue: MakeQueue) -> None:
    queue = make_queue()
    await queue.enqueue("a")
    first = await queue.claim(["any"], wait=0)
    assert isinstance(first, Lease)
    await asyncio.sleep(LEASE * 1.2)
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
    holder, waiter = make_queue(lease_seconds=30), make_queue(lease_seconds=30)
    await holder.enqueue("a")
    lease = await holder.claim(["any"], wait=0)
    assert isinstance(lease, Lease)

    async def release_later() -> None:
        await asyncio.sleep(0.2)
        assert await holder.release(lease)

    started = time.monotonic()
    claimed, _ = await asyncio.gather(waiter.claim(["any"], wait=5), release_later())
    assert isinstance(claimed, Lease) and claimed.job_id == "a"
    assert time.monotonic() - started < 3


async def test_removed_jobs_are_neither_claimable_nor_renewable(make_queue: MakeQueue) -> None:
    queue = make_queue()
    await queue.enqueue("queued")
    await queue.enqueue("held")
    await queue.remove("queued")
    held = await queue.claim(["any"], wait=0)
    assert isinstance(held, Lease) and held.job_id == "held"
    await queue.remove("held")
    assert not await queue.renew(held)
    assert not await queue.release(held)
    assert await queue.claim(["any"], wait=LEASE * 1.5) is None
    await queue.remove("never-queued")


async def test_cuda_jobs_go_only_to_claimants_that_ask_for_cuda(make_queue: MakeQueue) -> None:
    queue = make_queue()
    await queue.enqueue("gpu", channel="cuda")
    assert await queue.claim(["any"], wait=0) is None
    claimed = await queue.claim(["cuda", "any"], wait=0)
    assert isinstance(claimed, Lease) and claimed.job_id == "gpu"


async def test_concurrent_claimants_never_share_a_job(make_queue: MakeQueue) -> None:
    queues = [make_queue(lease_seconds=30) for _ in range(2)]
    jobs = [f"job{i}" for i in range(6)]
    for job in jobs:
        await queues[0].enqueue(job)
    results = await asyncio.gather(*(queues[i % 2].claim(["any"], wait=0.5) for i in range(10)))
    leases = [result for result in results if result is not None]
    assert sorted(lease.job_id for lease in leases) == jobs
