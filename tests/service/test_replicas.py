"""Replicas: several services on one PostgreSQL catalog and one object store are one deployment.

Each app here is a replica with a data directory of its own; the advisory locks they share order commits,
start-up, compaction and the lease sweeper. The end-to-end proof with real processes, a SIGKILL and a worker
is tests/e2e/test_replicas.py.
"""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import create_engine, text

from schemas.transition import conform
from service.compaction import Compaction, CompactionPolicy
from service.datasets import spec_of
from service.jobs.protocol import LEASE_SWEEPER_LOCK
from service.locks import AdvisoryLocks, ThreadLocks, advisory_key, open_locks
from tests.factories import upload_rows as rows
from tests.service.conftest import ADMIN, HOPPER, MakeClient, append, stored_keys

ON_POSTGRES_AND_S3 = pytest.mark.parametrize(("database_url", "storage"), [("postgresql", "s3")], indirect=True)


@pytest.fixture
def other_replica_locks(postgres_url: str):
    """The locks another replica of the same deployment takes: a pool, so sessions, of their own."""
    engine = create_engine(postgres_url)
    locks = AdvisoryLocks(engine)
    yield locks
    locks.close()
    engine.dispose()


def replicas(make_client: MakeClient, tmp_path: Path, count: int, **settings) -> list[TestClient]:
    return [make_client(data_dir=tmp_path / f"replica-{index}", **settings) for index in range(count)]


def history(client: TestClient) -> list[tuple[int, int, int]]:
    answer = client.get("/v1/datasets/hopper/versions?limit=100", headers=ADMIN)
    assert answer.status_code == 200, answer.text
    return [(version["version"], version["rows"], version["added_rows"]) for version in answer.json()["data"]]


# the locks themselves


def test_an_advisory_lock_held_by_one_replica_is_held_for_the_others(postgres_url: str, other_replica_locks: AdvisoryLocks) -> None:
    engine = create_engine(postgres_url)
    mine = open_locks(engine)
    assert isinstance(mine, AdvisoryLocks) and mine.shared
    entered = threading.Event()
    try:
        with mine.hold("dataset:a"):
            with other_replica_locks.try_hold("dataset:a") as held:
                assert not held
            with other_replica_locks.try_hold("dataset:b") as held:
                assert held  # another name is another lock
            def wait_for_it() -> None:
                with other_replica_locks.hold("dataset:a"):
                    entered.set()

            waiting = threading.Thread(target=wait_for_it)
            waiting.start()
            assert not entered.wait(0.5)  # blocked while this replica holds the lock
        waiting.join(timeout=10)
        assert entered.is_set()
        with other_replica_locks.try_hold("dataset:a") as held:
            assert held
    finally:
        mine.close()
        engine.dispose()


def test_a_replica_that_dies_releases_every_lock_it_held(postgres_url: str, other_replica_locks: AdvisoryLocks) -> None:
    engine = create_engine(postgres_url)
    dying = AdvisoryLocks(engine)
    admin = create_engine(postgres_url)
    try:
        with dying.hold("dataset:a"):
            with admin.connect() as connection:
                # what a SIGKILL of the replica does to its sessions: they end, and their locks with them
                connection.execute(
                    text("SELECT pg_terminate_backend(pid) FROM pg_locks WHERE locktype = 'advisory' AND objid = :low"),
                    {"low": advisory_key("dataset:a") & 0xFFFFFFFF},
                )
            with other_replica_locks.try_hold("dataset:a") as held:
                assert held
        # letting go on the dead session raised nothing: its connection was dropped instead
        with dying.try_hold("dataset:a") as held:
            assert held
    finally:
        dying.close()
        engine.dispose()
        admin.dispose()


def test_on_sqlite_the_service_is_one_process_and_its_locks_are_thread_locks(tmp_path: Path) -> None:
    engine = create_engine(f"sqlite:///{tmp_path / 'catalog.db'}")
    locks = open_locks(engine)
    assert isinstance(locks, ThreadLocks) and not locks.shared
    with locks.hold("dataset:a"):
        with locks.try_hold("dataset:a") as held:
            assert not held
    engine.dispose()


# replicas of one deployment


@ON_POSTGRES_AND_S3
def test_concurrent_appends_through_two_replicas_make_one_linear_history(make_client: MakeClient, tmp_path: Path) -> None:
    first, second = replicas(make_client, tmp_path, 2)
    assert first.post("/v1/datasets", json=HOPPER, headers=ADMIN).status_code == 201
    writers = 8
    start = threading.Barrier(writers)

    def write(index: int):
        start.wait()
        replica = (first, second)[index % 2]
        return append(replica, rows(episodes=1, length=3 + index, first_episode=index, seed=index), key=f"writer-{index}")

    with ThreadPoolExecutor(writers) as pool:
        answers = list(pool.map(write, range(writers)))
    assert all(answer.status_code == 201 for answer in answers), [answer.text for answer in answers]
    assert sorted(answer.json()["version"] for answer in answers) == list(range(1, writers + 1))
    assert history(first) == history(second)
    assert history(first)[0][1] == sum(3 + index for index in range(writers))

    # the idempotency key of an upload made through the first replica holds through the second
    replay = append(second, rows(episodes=1, length=3, first_episode=0, seed=0), key="writer-0")
    assert replay.status_code == 200 and replay.json()["replayed"]
    assert replay.json()["version"] == answers[0].json()["version"]
    assert history(second)[0][0] == writers


@pytest.mark.parametrize(("database_url", "storage"), [("postgresql", "s3"), ("sqlite", "s3")], indirect=True)
def test_a_starting_replica_leaves_another_replicas_staged_upload_alone(make_client: MakeClient, tmp_path: Path) -> None:
    first = make_client(data_dir=tmp_path / "first")
    assert first.post("/v1/datasets", json=HOPPER, headers=ADMIN).status_code == 201
    datasets = first.app.state.services.datasets
    dataset = datasets.get("hopper")
    # an upload validated and staged by the first replica, its commit not yet made
    staged = datasets.storage.stage(dataset.id, conform(rows(episodes=1, length=4), spec_of(dataset), "b" * 32).table)
    key = f"datasets/{dataset.id}/{staged.path}"
    make_client(data_dir=tmp_path / "second")  # the default grace: an hour
    assert key in stored_keys(first)
    make_client(data_dir=tmp_path / "third", staged_file_grace_seconds=0)
    assert key not in stored_keys(first)


@ON_POSTGRES_AND_S3
def test_a_deleted_dataset_waiting_in_the_trash_is_purged_not_adopted(make_client: MakeClient, tmp_path: Path) -> None:
    first = make_client(data_dir=tmp_path / "first")
    assert first.post("/v1/datasets", json=HOPPER, headers=ADMIN).status_code == 201
    assert append(first, rows(episodes=1, length=4)).status_code == 201
    datasets = first.app.state.services.datasets
    dataset_id = datasets.get("hopper").id
    # a delete cut off after its catalog write, before the purge: on S3 the table is still under datasets/
    datasets.storage.move_to_trash(dataset_id)
    datasets.catalog.remove_dataset(dataset_id)
    assert stored_keys(first, f"datasets/{dataset_id}")

    second = make_client(data_dir=tmp_path / "second")
    assert second.get("/v1/datasets/hopper", headers=ADMIN).status_code == 404
    assert stored_keys(second, f"datasets/{dataset_id}") == [] and stored_keys(second, "trash") == []


@ON_POSTGRES_AND_S3
def test_one_replica_compacts_a_dataset_at_a_time(
    make_client: MakeClient, tmp_path: Path, other_replica_locks: AdvisoryLocks
) -> None:
    client = make_client(data_dir=tmp_path / "first", compaction_min_files=1000)
    assert client.post("/v1/datasets", json=HOPPER, headers=ADMIN).status_code == 201
    for index in range(3):
        assert append(client, rows(episodes=1, length=4, first_episode=index, seed=index)).status_code == 201
    # the app's own compaction checks after each append (and finds too few files): let the last one end
    client.app.state.services.compaction._work.submit(lambda: None).result(timeout=30)
    datasets = client.app.state.services.datasets
    dataset_id = datasets.get("hopper").id
    compaction = Compaction(datasets, CompactionPolicy(min_small_files=2))
    try:
        with other_replica_locks.hold(f"compaction:{dataset_id}"):
            assert compaction.compact(dataset_id) == 0
            assert datasets.storage.compactions(dataset_id) == []
        assert compaction.compact(dataset_id) == 2
    finally:
        compaction.close()


@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
def test_one_replica_sweeps_for_silent_jobs_at_a_time(make_client: MakeClient, other_replica_locks: AdvisoryLocks) -> None:
    client = make_client()
    protocol = client.app.state.services.protocol
    with other_replica_locks.hold(LEASE_SWEEPER_LOCK):
        assert client.portal.call(protocol.sweep_once) is False
    assert client.portal.call(protocol.sweep_once) is True


@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
def test_replicas_starting_together_on_a_fresh_catalog_all_start(make_client: MakeClient, tmp_path: Path) -> None:
    """Making the tables and the configured tokens would race (unique violations in PostgreSQL's own catalog)."""
    together = threading.Barrier(3)

    def start(index: int) -> TestClient:
        together.wait()
        return make_client(data_dir=tmp_path / f"replica-{index}")

    with ThreadPoolExecutor(3) as pool:
        started = list(pool.map(start, range(3)))
    for client in started:
        assert client.get("/readyz").status_code == 200
        assert client.get("/v1/datasets", headers=ADMIN).status_code == 200
