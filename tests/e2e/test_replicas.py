"""Three `replaybank serve` replicas as one deployment: one storage URL on SeaweedFS, one PostgreSQL catalog
and one Redis, each replica on a data folder (scratch space and its lock) of its own. Concurrent writers
across the replicas, a replica killed with SIGKILL mid-upload, and a worker on one replica training on a
version uploaded through another, its file pulls going to object storage.

The replicas are started once for the module; each test works on a dataset of its own, and the `replicas`
fixture restarts one that an earlier test left killed."""

from __future__ import annotations

import hashlib
import os
import threading
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import httpx
import pyarrow as pa
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import empty_redis_database, fresh_postgres_database
from tests.e2e.conftest import Server, running_replicas
from tests.e2e.test_crash_and_concurrency import SPEC as HOPPER
from tests.e2e.test_crash_and_concurrency import check_every_version_intact, episodes, upload
from tests.e2e.test_jobs import SMALL, pendulum_rows, start_worker_process, wait_for
from tests.e2e.test_jobs import SPEC as PENDULUM
from tests.seaweedfs import SeaweedFS
from workers.client import ReplaybankClient
from workers.client.pull.cache import FileCache

pytestmark = [pytest.mark.slow, pytest.mark.postgres, pytest.mark.redis]

REPLICAS = 3
WORKER_TOKEN = "e2e-worker-" + os.urandom(8).hex()
FILE_ROUTE = "/v1/datasets/{name}/versions/{version}/files/{file}"


@dataclass
class Deployment:
    replicas: list[Server]
    seaweedfs: SeaweedFS
    prefix: str
    """The storage URL's prefix in the session's bucket."""


@pytest.fixture(scope="module")
def deployment(
    seaweedfs: SeaweedFS, postgres_server_url: str, _redis_db: int, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Deployment]:
    prefix = uuid.uuid4().hex
    with fresh_postgres_database(postgres_server_url) as database_url, empty_redis_database(_redis_db) as redis_url:
        settings = {
            "REPLAYBANK_STORAGE_URL": f"s3://{seaweedfs.bucket}/{prefix}",
            "REPLAYBANK_DATABASE_URL": database_url,
            "REPLAYBANK_REDIS_URL": redis_url,
            "REPLAYBANK_WORKER_TOKEN": WORKER_TOKEN,
            "REPLAYBANK_QUERY_THREADS": "1",
            # no background compaction: a merge after a dataset's last version would add files that no
            # version's manifest lists, which `unreferenced_data_files` could not tell from a leak
            "REPLAYBANK_COMPACTION_MIN_FILES": "100000",
            **seaweedfs.env(),
        }
        with running_replicas(tmp_path_factory.mktemp("replicas"), REPLICAS, settings) as replicas:
            yield Deployment(replicas, seaweedfs, prefix)


@pytest.fixture
def replicas(deployment: Deployment) -> list[Server]:
    """The deployment's replicas, every one of them running."""
    for replica in deployment.replicas:
        if replica.process is None or replica.process.poll() is not None:
            replica.start()
    return deployment.replicas


def create(replica: Server, name: str) -> None:
    answer = httpx.post(f"{replica.url}/v1/datasets", json={**HOPPER, "name": name}, headers=replica.headers())
    assert answer.status_code == 201, answer.text


def history(replica: Server, dataset: str) -> list[tuple[int, int, int]]:
    """(version, rows, added rows) of every version, oldest first, as `replica` reports them."""
    answer = httpx.get(f"{replica.url}/v1/datasets/{dataset}/versions", params={"limit": 1000}, headers=replica.headers())
    assert answer.status_code == 200, answer.text
    return sorted((v["version"], v["rows"], v["added_rows"]) for v in answer.json()["data"])


def latest_rows(replica: Server, dataset: str) -> pa.Table:
    answer = httpx.get(f"{replica.url}/v1/datasets/{dataset}/versions/latest/transitions", headers=replica.headers(), timeout=60)
    assert answer.status_code == 200, answer.text
    return pa.ipc.open_stream(answer.content).read_all().sort_by([("episode_id", "ascending"), ("step", "ascending")])


def unreferenced_data_files(deployment: Deployment, replica: Server, dataset: str) -> list[str]:
    """Parquet data files in the dataset's table folder that no version's manifest names."""
    referenced: set[str] = set()
    with httpx.Client(base_url=replica.url, headers=replica.headers(), timeout=60) as client:
        for version, _, _ in history(replica, dataset):
            referenced.update(entry["path"] for entry in client.get(f"/v1/datasets/{dataset}/versions/{version}/files").json()["data"])
    under = f"{deployment.prefix}/datasets"
    keys = deployment.seaweedfs.objects(deployment.seaweedfs.bucket, under)
    folders = {key.rsplit("/", 1)[0] for key in keys if key.rsplit("/", 1)[1] in referenced}
    assert len(folders) == 1, folders  # the dataset's table: the one folder holding its files
    folder = folders.pop()
    data = [key[len(folder) + 1 :] for key in keys if key.startswith(folder + "/") and key.endswith(".parquet")]
    return sorted(path for path in data if not path.startswith("_delta_log/") and path not in referenced)


def requests_answered(replica: Server) -> dict[tuple[str, str, str], float]:
    """`replica`'s request counters from its /metrics: (method, route template, status) -> requests."""
    answer = httpx.get(f"{replica.url}/metrics", headers=replica.headers())
    assert answer.status_code == 200, answer.text
    family = next(f for f in text_string_to_metric_families(answer.text) if f.name == "replaybank_http_requests")
    return {
        (sample.labels["method"], sample.labels["route"], sample.labels["status"]): sample.value
        for sample in family.samples
        if sample.name == "replaybank_http_requests_total"
    }


def socket_buffer_bytes() -> int:
    """The most body bytes loopback TCP can hold between a client and a server that reads none of them: the
    largest send buffer plus the largest receive buffer the kernel autotunes to."""
    try:
        return sum(int(Path(f"/proc/sys/net/ipv4/{name}").read_text().split()[2]) for name in ("tcp_wmem", "tcp_rmem"))
    except FileNotFoundError:  # not Linux: macOS's largest buffers are a few MiB each
        return 16 << 20


def test_concurrent_writers_through_three_replicas_make_one_history_and_keys_hold_across_replicas(replicas: list[Server]) -> None:
    create(replicas[1], "writers")
    writers = 3 * REPLICAS
    bodies = [episodes(first_episode=10 * i, count=2, length=50 + i, seed=i) for i in range(writers)]
    sizes = [2 * (50 + i) for i in range(writers)]
    start = threading.Barrier(writers)

    def write(i: int) -> httpx.Response:
        start.wait()
        return upload(replicas[i % REPLICAS], bodies[i], key=f"writer-{i}", dataset="writers")

    with ThreadPoolExecutor(writers) as pool:
        answers = list(pool.map(write, range(writers)))
    assert [answer.status_code for answer in answers] == [201] * writers, [answer.text for answer in answers]
    assert sorted(answer.json()["version"] for answer in answers) == list(range(1, writers + 1))
    assert [answer.json()["rows"] for answer in answers] == sizes

    histories = [check_every_version_intact(replica, set(sizes), "writers") for replica in replicas]
    reported = [[(v["version"], v["rows"], v["added_rows"]) for v in versions] for versions in histories]
    assert reported[1] == reported[0] and reported[2] == reported[0]
    assert reported[0][-1][1] == sum(sizes)
    latest = [latest_rows(replica, "writers") for replica in replicas]
    assert latest[0].num_rows == sum(sizes) and latest[1].equals(latest[0]) and latest[2].equals(latest[0])

    # writer 0 went through the first replica; its retry goes to the second
    retry = upload(replicas[1], bodies[0], key="writer-0", dataset="writers")
    assert retry.status_code == 200, retry.text
    assert retry.json() == {**answers[0].json(), "replayed": True}
    assert history(replicas[2], "writers") == reported[0]


def test_a_replica_killed_mid_upload_leaves_nothing_partial_the_others_serve_on_and_it_rejoins(
    replicas: list[Server], deployment: Deployment
) -> None:
    first, second, third = replicas
    create(first, "crash")
    assert upload(first, episodes(first_episode=0, count=1, length=100, seed=0), dataset="crash").json()["version"] == 1
    before = history(third, "crash")

    # An upload larger than the socket buffers, in many record batches, so the killed replica has read and
    # staged part of it; it stops once past the buffers and goes on only after the kill.
    buffers = socket_buffer_bytes()
    whole = pa.ipc.open_stream(episodes(first_episode=1000, count=(buffers + (4 << 20)) // 115_000, length=1000, seed=1)).read_all()
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, whole.schema) as writer:
        writer.write_table(whole, max_chunksize=10_000)
    body = sink.getvalue().to_pybytes()
    assert len(body) > buffers + (2 << 20)
    read_part, killed = threading.Event(), threading.Event()

    def streamed() -> Iterator[bytes]:
        chunk = 1 << 20
        for offset in range(0, len(body), chunk):
            yield body[offset : offset + chunk]
            if offset + chunk > buffers and not read_part.is_set():  # sent, and the buffers cannot hold it all
                read_part.set()
                killed.wait(timeout=120)

    outcome: dict[str, object] = {}

    def send() -> None:
        try:
            outcome["answer"] = upload(first, streamed(), dataset="crash", timeout=120)  # type: ignore[arg-type]
        except httpx.HTTPError as error:
            outcome["error"] = error

    sender = threading.Thread(target=send)
    sender.start()
    try:
        assert read_part.wait(timeout=120), f"the upload never got past the socket buffers: {outcome}"
        first.kill()
    finally:
        killed.set()
        sender.join(timeout=120)
    assert "answer" not in outcome, outcome["answer"]

    landed = upload(second, episodes(first_episode=2000, count=1, length=120, seed=2), dataset="crash")
    assert landed.status_code == 201 and landed.json()["version"] == 2, landed.text
    after = before + [(2, 220, 120)]
    assert [(v["version"], v["rows"], v["added_rows"]) for v in check_every_version_intact(third, {100, 120}, "crash")] == after
    assert history(second, "crash") == after
    assert unreferenced_data_files(deployment, third, "crash") == []

    # It restarts on its own data folder (whose lock died with it) while the others take uploads: its
    # start-up recovery must leave their staged, not yet committed files alone.
    restarted = threading.Event()
    meanwhile: list[httpx.Response] = []

    def keep_writing() -> None:
        while not restarted.is_set() or not meanwhile:
            small = episodes(first_episode=4000 + len(meanwhile), count=1, length=110, seed=4000 + len(meanwhile))
            meanwhile.append(upload((second, third)[len(meanwhile) % 2], small, dataset="crash"))

    writing = threading.Thread(target=keep_writing)
    writing.start()
    try:
        first.start()
    finally:
        restarted.set()
        writing.join(timeout=120)
    assert [answer.status_code for answer in meanwhile] == [201] * len(meanwhile), [answer.text for answer in meanwhile]
    after += [(3 + i, 220 + 110 * (i + 1), 110) for i in range(len(meanwhile))]
    assert history(first, "crash") == after
    rejoined = upload(first, episodes(first_episode=3000, count=1, length=130, seed=3), dataset="crash")
    assert rejoined.status_code == 201 and rejoined.json()["version"] == after[-1][0] + 1, rejoined.text
    after.append((after[-1][0] + 1, after[-1][1] + 130, 130))
    assert [(v["version"], v["rows"], v["added_rows"]) for v in check_every_version_intact(first, {100, 110, 120, 130}, "crash")] == after
    assert history(second, "crash") == history(third, "crash") == after
    assert unreferenced_data_files(deployment, second, "crash") == []


def test_a_worker_on_one_replica_trains_on_a_version_uploaded_through_another_pulling_from_object_storage(
    replicas: list[Server], tmp_path: Path
) -> None:
    first, second, third = replicas
    # Started first, so its imports overlap the upload; until the job is submitted its claims find nothing.
    worker = start_worker_process(third.url, WORKER_TOKEN, tmp_path, "--max-jobs", "1")
    try:
        with ReplaybankClient(first.url, first.admin_token, cache=tmp_path / "user-cache") as through_first:
            through_first.create_dataset("pendulum", PENDULUM)
            assert through_first.upload("pendulum", pendulum_rows(episodes=4)).version == 1
            manifest = through_first.files("pendulum", 1).data
        served_before = requests_answered(third)
        with ReplaybankClient(second.url, second.admin_token, cache=tmp_path / "user-cache") as through_second:
            job = through_second.submit_job(
                {"kind": "train", "algorithm": "bc", "dataset": "pendulum", "version": 1, "steps": 40, "seed": 0, "params": SMALL}
            )
            done = wait_for(through_second, job.id, lambda job: job.status == "succeeded", timeout=180, logs=tmp_path)
            assert worker.wait(timeout=60) == 0
            assert done.policy_id is not None
            policy = through_second.download_policy(done.policy_id, tmp_path / "policy")
            assert policy["onnx"].stat().st_size > 0
    finally:
        if worker.poll() is None:
            worker.kill()
            worker.wait(timeout=30)

    served = requests_answered(third)
    redirected = served.get(("GET", FILE_ROUTE, "307"), 0) - served_before.get(("GET", FILE_ROUTE, "307"), 0)
    assert redirected >= len(manifest), served
    assert ("GET", FILE_ROUTE, "200") not in served, served  # no file's bytes went through the service
    cache = FileCache(tmp_path / "cache-w")
    for entry in manifest:
        assert hashlib.sha256(cache.path(entry.sha256).read_bytes()).hexdigest() == entry.sha256
