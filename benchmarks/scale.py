"""Scale: commits per dataset per second through one and several replicas, catalog rows, pull bandwidth.

    .venv/bin/python benchmarks/scale.py [--uploads 60] [--clients 4] [--replicas 3] [--episodes 100000]
                                         [--only commits,catalog,pull] [--storage-url s3://bucket/prefix]

Two deployments run as `replaybank serve` subprocesses: the embedded one (local folder, SQLite catalog,
one process) and the shared one (object storage, a fresh PostgreSQL database, a Redis database; each
replica with a data folder of its own). Object storage is a throwaway SeaweedFS (tests/seaweedfs.py)
unless --storage-url names a bucket, reached with the AWS_* variables of the environment.

1. Commits: --clients threads append --uploads small uploads (one 100-row episode each) to ONE dataset,
   then to one dataset per client, through one replica and through --replicas replicas (client i talks to
   replica i mod n, as a load balancer would spread them). Baseline: `deltalake.write_deltalake` appending
   the same rows one at a time to a table in the same place, which is what one Delta writer allows.
2. Catalog: rows (and bytes) each PostgreSQL table holds after the commits, per version, per episode and
   per file; the latency of the hot reads (latest version, a version's manifest, the episode lookup a
   commit does) and of a one-episode commit on a dataset of --episodes 10-row episodes beside a small one.
3. Pulls: the many-episode dataset's version (about 110 MB for 100k episodes) pulled into empty caches by
   1 and by 4 concurrent clients, through the service (REPLAYBANK_PRESIGNED_DOWNLOADS=false, a second
   replica) and redirected to presigned URLs; MB/s, and the CPU seconds per GB the service (and the object
   store) spent. Baseline: through the service.
"""

from __future__ import annotations

import argparse
import fcntl
import os
import shutil
import statistics
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa
import redis
import sqlalchemy
from _common import HOPPER, Service, hopper_rows, object_store, process_cpu_seconds, running_service
from deltalake import write_deltalake

from service.catalog import Catalog
from workers.client import ReplaybankClient

UPLOAD_ROWS = 100
EPISODE_ROWS = 10
"""Episodes of the many-episode dataset are this short, so 100k of them stay a modest upload."""
WIDE_UPLOADS = 4
WIDE_FIRST = 10**8
"""The many-episode dataset's episode ids start here, clear of the small uploads' ids."""


@dataclass
class Deployment:
    name: str
    settings: dict[str, str]
    store_options: dict[str, str]
    """For the write_deltalake baseline: delta-rs storage options of the same store."""
    table_root: str
    database_url: str | None = None
    store_pid: int | None = None
    replicas: list[Service] = field(default_factory=list)


@dataclass
class AppendRun:
    uploads: int
    seconds: float
    latencies: list[float]
    service_cpu: float

    @property
    def rate(self) -> float:
        return self.uploads / self.seconds


# -- the shared services ---------------------------------------------------------------------------------


@contextmanager
def postgres_database(server_url: str) -> Iterator[str]:
    """A fresh database on the server, dropped afterwards."""
    name = f"replaybank_scale_{uuid.uuid4().hex[:12]}"
    admin = sqlalchemy.create_engine(server_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.execute(sqlalchemy.text(f'CREATE DATABASE "{name}"'))
    try:
        yield server_url.rsplit("/", 1)[0] + f"/{name}"
    finally:
        with admin.connect() as connection:
            connection.execute(sqlalchemy.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


@contextmanager
def redis_database(server_url: str) -> Iterator[str]:
    """A Redis database number no test run holds, emptied before and after (the lock files tests/conftest.py takes)."""
    base = server_url.rsplit("/", 1)[0]
    lock_name = base.replace("/", "_").replace(":", "_")
    for db in range(15, 0, -1):
        handle = open(os.path.join(tempfile.gettempdir(), f"replaybank-test{lock_name}-db{db}.lock"), "w")
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.close()
            continue
        url = f"{base}/{db}"
        client = redis.Redis.from_url(url)
        with handle:
            client.flushdb()
            try:
                yield url
            finally:
                client.flushdb()
                client.close()
        return
    raise SystemExit("every Redis database 1-15 is held by a test run")


@contextmanager
def replicas(deployment: Deployment, folder: Path, count: int, **extra: str) -> Iterator[list[Service]]:
    """`count` more `replaybank serve` processes of the deployment, started one after another (each
    creates the catalog's tables if they are missing, which is not safe to race)."""
    with ExitStack() as stack:
        started = []
        for _ in range(count):
            data_dir = folder / f"replica-{uuid.uuid4().hex[:6]}"
            started.append(stack.enter_context(running_service(data_dir, {**deployment.settings, **extra})))
        yield started


# -- 1. commits ------------------------------------------------------------------------------------------


def small_upload(episode: int) -> pa.Table:
    return hopper_rows(UPLOAD_ROWS, first_episode=episode, seed=episode)


def append_run(services: list[Service], datasets: list[str], uploads: int, clients: int, episodes: Iterator[int], cache: Path) -> AppendRun:
    """`uploads` small uploads by `clients` threads; client i writes to datasets[i mod len] through services[i mod len]."""
    tables = [small_upload(next(episodes)) for _ in range(uploads)]
    warm_up = [small_upload(next(episodes)) for _ in range(clients)]
    taken = iter(range(uploads))
    taking = threading.Lock()
    latencies: list[float] = []
    ready = threading.Barrier(clients + 1)

    def client_loop(index: int) -> None:
        service = services[index % len(services)]
        dataset = datasets[index % len(datasets)]
        with ReplaybankClient(service.url, service.token, cache=cache) as client:
            client.upload(dataset, warm_up[index])  # a first request opens connections and the replica's table handle
            ready.wait()
            while True:
                with taking:
                    number = next(taken, None)
                if number is None:
                    return
                start = time.perf_counter()
                client.upload(dataset, tables[number])
                latencies.append(time.perf_counter() - start)

    with ThreadPoolExecutor(clients) as pool:
        futures = [pool.submit(client_loop, index) for index in range(clients)]
        ready.wait()
        cpu_before = sum(process_cpu_seconds(service.pid) or 0.0 for service in services)
        start = time.perf_counter()
        for future in futures:
            future.result()
        seconds = time.perf_counter() - start
        cpu = sum(process_cpu_seconds(service.pid) or 0.0 for service in services) - cpu_before
    return AppendRun(uploads, seconds, latencies, cpu)


def check_history(services: list[Service], datasets: list[str], uploads: int) -> None:
    """Every replica reports the same latest versions, one version and 100 rows per upload: nothing lost, nothing twice."""
    seen = set()
    for service in services:
        with ReplaybankClient(service.url, service.token) as client:
            found = [client.get_dataset(dataset) for dataset in datasets]
        seen.add(tuple((dataset.latest_version, dataset.rows) for dataset in found))
    assert len(seen) == 1, f"replicas disagree on the latest versions: {sorted(seen)}"
    versions = sum(version for version, _ in seen.pop())
    assert versions == uploads, f"{uploads} uploads made {versions} versions"


def delta_baseline(deployment: Deployment, uploads: int, episodes: Iterator[int]) -> float:
    """Commits/s of write_deltalake appending the same small uploads one at a time to a table in the same store."""
    uri = f"{deployment.table_root}/baseline-{uuid.uuid4().hex[:8]}"
    tables = [small_upload(next(episodes)) for _ in range(uploads + 1)]
    write_deltalake(uri, tables[0], storage_options=deployment.store_options or None)
    start = time.perf_counter()
    for table in tables[1:]:
        write_deltalake(uri, table, mode="append", storage_options=deployment.store_options or None)
    return uploads / (time.perf_counter() - start)


def measure_commits(deployment: Deployment, args: argparse.Namespace, counts: list[int], cache: Path, episodes: Iterator[int]) -> dict:
    results: dict = {"baseline": delta_baseline(deployment, args.uploads, episodes)}
    with ReplaybankClient(deployment.replicas[0].url, deployment.replicas[0].token, cache=cache) as client:
        for count in counts:
            one = f"one-{count}"
            many = [f"many-{count}-{i}" for i in range(args.clients)]
            for name in [one, *many]:
                client.create_dataset(name, HOPPER)
            services = deployment.replicas[:count]
            results[count, "one"] = append_run(services, [one], args.uploads, args.clients, episodes, cache)
            results[count, "many"] = append_run(services, many, args.uploads, args.clients, episodes, cache)
            check_history(services, [one], args.uploads + args.clients)
            check_history(services, many, args.uploads + args.clients)
    return results


# -- 2. catalog ------------------------------------------------------------------------------------------


def catalog_rows(database_url: str) -> dict[str, tuple[int, int]]:
    """Rows and bytes (table, indexes and TOAST) of every catalog table."""
    engine = sqlalchemy.create_engine(database_url)
    try:
        with engine.connect() as connection:
            names = sqlalchemy.inspect(connection).get_table_names()
            return {
                name: (
                    connection.execute(sqlalchemy.text(f'SELECT count(*) FROM "{name}"')).scalar_one(),
                    connection.execute(sqlalchemy.text(f"SELECT pg_total_relation_size('\"{name}\"')")).scalar_one(),
                )
                for name in sorted(names)
            }
    finally:
        engine.dispose()


def many_episodes(episodes: int, first: int, seed: int) -> pa.Table:
    """Hopper-shaped rows in `episodes` episodes of EPISODE_ROWS steps, the last of each truncated."""
    table = hopper_rows(episodes * EPISODE_ROWS, seed=seed)
    index = np.arange(table.num_rows)
    steps = index % EPISODE_ROWS
    table = table.set_column(table.schema.get_field_index("episode_id"), "episode_id", pa.array(first + index // EPISODE_ROWS, pa.int64()))
    table = table.set_column(table.schema.get_field_index("step"), "step", pa.array(steps, pa.int32()))
    return table.set_column(table.schema.get_field_index("truncated"), "truncated", pa.array(steps == EPISODE_ROWS - 1))


COMMIT_REPEATS = 7


def interleaved_medians(runs: dict[str, Callable[[], object]], repeats: int) -> dict[str, float]:
    """The median milliseconds of each run, taking turns, so a busy spell on the shared machine hits them alike."""
    times: dict[str, list[float]] = {name: [] for name in runs}
    for _ in range(repeats):
        for name, run in runs.items():
            start = time.perf_counter()
            run()
            times[name].append(time.perf_counter() - start)
    return {name: statistics.median(values) * 1000 for name, values in times.items()}


def measure_catalog(deployment: Deployment, args: argparse.Namespace, cache: Path, episodes: Iterator[int]) -> tuple[dict, int]:
    """Hot-path latencies on a small dataset and on one of args.episodes episodes; the latter's bulk version."""
    service = deployment.replicas[0]
    catalog = Catalog(deployment.database_url)
    try:
        with ReplaybankClient(service.url, service.token, cache=cache) as client:
            client.create_dataset("small", HOPPER)
            small_episode = next(episodes)
            client.upload("small", small_upload(small_episode))
            client.create_dataset("wide", HOPPER)
            per_upload = args.episodes // WIDE_UPLOADS
            for part in range(WIDE_UPLOADS):
                bulk = client.upload("wide", many_episodes(per_upload, WIDE_FIRST + part * per_upload, seed=part)).version
            rows = {name: catalog.dataset(name) for name in ("small", "wide")}
            probes = {"small": [small_episode], "wide": [WIDE_FIRST + per_upload * WIDE_UPLOADS // 2]}

            def reads(name: str) -> dict[str, Callable[[], object]]:
                dataset = rows[name]
                assert dataset is not None
                return {
                    "latest version (HTTP)": lambda: client.get_dataset(name),
                    "manifest (HTTP)": lambda: client.files(name),
                    "latest version (catalog)": lambda: catalog.version(dataset.id, dataset.latest_version),
                    "episode lookup (catalog)": lambda: catalog.episodes(dataset.id, probes[name]),
                }

            def commit(name: str) -> Callable[[], object]:
                tables = iter([small_upload(next(episodes)) for _ in range(COMMIT_REPEATS)])
                return lambda: client.upload(name, next(tables))

            runs = {(name, metric): run for name in rows for metric, run in reads(name).items()}
            medians = interleaved_medians(runs, args.repeats)
            medians.update(interleaved_medians({(name, "one-episode commit (HTTP)"): commit(name) for name in rows}, COMMIT_REPEATS))
    finally:
        catalog.close()
    results: dict = {name: {"episodes": dataset.episodes} for name, dataset in rows.items() if dataset is not None}
    for (name, metric), value in medians.items():
        results[name][metric] = value
    return results, bulk


# -- 3. pulls --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class PullRun:
    pullers: int
    seconds: float
    moved: int
    service_cpu: float
    store_cpu: float | None

    @property
    def rate(self) -> float:
        return self.moved / 1e6 / self.seconds

    def per_gb(self, cpu: float) -> float:
        return cpu / (self.moved / 1e9)


def pull_run(service: Service, version: int, pullers: int, folder: Path, store_pid: int | None) -> PullRun:
    """`pullers` clients at once, each pulling the version into an empty cache (download and checksum)."""
    caches = [folder / f"cache-{uuid.uuid4().hex[:8]}" for _ in range(pullers)]
    clients = [ReplaybankClient(service.url, service.token, cache=cache) for cache in caches]
    try:
        cpu = process_cpu_seconds(service.pid) or 0.0
        store_cpu = process_cpu_seconds(store_pid) if store_pid else None
        start = time.perf_counter()
        with ThreadPoolExecutor(pullers) as pool:
            pulled = list(pool.map(lambda client: client.pull_files("wide", version), clients))
        seconds = time.perf_counter() - start
        cpu = (process_cpu_seconds(service.pid) or 0.0) - cpu
        if store_cpu is not None:
            store_cpu = (process_cpu_seconds(store_pid) or 0.0) - store_cpu
    finally:
        for client in clients:
            client.close()
        for cache in caches:
            shutil.rmtree(cache, ignore_errors=True)
    assert all(result.transferred_bytes == result.total_bytes > 0 for result in pulled)
    return PullRun(pullers, seconds, sum(result.transferred_bytes for result in pulled), cpu, store_cpu)


def measure_pulls(deployment: Deployment, version: int, folder: Path, rounds: int) -> dict[tuple[str, int], PullRun]:
    """The fastest of `rounds` runs of each way and puller count."""
    best: dict[tuple[str, int], PullRun] = {}
    with replicas(deployment, folder, 1, REPLAYBANK_PRESIGNED_DOWNLOADS="false") as [through]:
        ways = {"through the service": through, "presigned redirect": deployment.replicas[0]}
        for _ in range(rounds):  # rounds alternate the ways, so a busy spell on the shared machine hits them alike
            for pullers in (1, 4):
                for way, service in ways.items():
                    run = pull_run(service, version, pullers, folder, deployment.store_pid)
                    if (way, pullers) not in best or run.rate > best[way, pullers].rate:
                        best[way, pullers] = run
    return best


# -- report ----------------------------------------------------------------------------------------------


def load() -> str:
    """The machine's load, printed beside each figure: on a shared machine it says how far to trust them."""
    return f"; load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores"


def report_commits(name: str, results: dict, args: argparse.Namespace, counts: list[int]) -> None:
    baseline = results["baseline"]
    print(f"\ncommits, {name}: {args.uploads} uploads of one {UPLOAD_ROWS}-row episode by {args.clients} clients{load()}")
    print(f"  baseline write_deltalake, one writer, same store   {baseline:8.1f} commits/s")
    for count in counts:
        for shape, label in (("one", "one dataset"), ("many", f"{args.clients} datasets")):
            run: AppendRun = results[count, shape]
            latencies = sorted(run.latencies)
            p95 = latencies[min(len(latencies) - 1, int(0.95 * len(latencies)))]
            print(
                f"  {count} replica(s), {label:<12} {run.rate:8.1f} commits/s  ({run.rate / baseline:.2f}x baseline)"
                f"  latency median {statistics.median(latencies) * 1000:.0f} ms, p95 {p95 * 1000:.0f} ms"
                f"  service CPU {run.service_cpu / run.uploads * 1000:.0f} ms/commit"
            )
        one, many = results[count, "one"], results[count, "many"]
        print(f"    {args.clients} datasets / one dataset: {many.rate / one.rate:.2f}")
    if len(counts) > 1:
        first, last = counts[0], counts[-1]
        ratio = results[last, "one"].rate / results[first, "one"].rate
        spread = results[last, "many"].rate / results[first, "many"].rate
        print(f"  {last} replicas / {first} replica: one dataset {ratio:.2f}, {args.clients} datasets {spread:.2f}")


def report_rows(rows: dict[str, tuple[int, int]]) -> None:
    datasets = rows["datasets"][0]
    commits = rows["dataset_versions"][0] - datasets
    print(f"\ncatalog rows after the commits ({commits} commits of one episode and one file each, {datasets} datasets)")
    print("  (creating a dataset adds its datasets row and version 0; compaction adds a file row per merged file)")
    for name, (count, size) in rows.items():
        if count:
            made = count - datasets if name == "dataset_versions" else count
            print(f"  {name:<18} {count:>8} rows  {made / commits:>6.2f} per commit  {size / count:>8.0f} bytes/row (with indexes)")


def report_catalog(results: dict, repeats: int) -> None:
    print(f"\ncatalog latency, median of {repeats} ({COMMIT_REPEATS} for commits), taking turns, ms{load()}")
    names = list(results["small"])[1:]
    print(f"  {'':<28}{'small':>12}{'wide':>12}   wide / small")
    print(f"  {'episodes':<28}{results['small']['episodes']:>12,}{results['wide']['episodes']:>12,}")
    for name in names:
        small, wide = results["small"][name], results["wide"][name]
        print(f"  {name:<28}{small:>12.1f}{wide:>12.1f}   {wide / small:.2f}")


def report_pulls(results: dict[tuple[str, int], PullRun]) -> None:
    size = results["through the service", 1].moved / 1e6
    print(f"\npulls of one {size:.0f} MB version into empty caches, best of rounds (baseline: through the service){load()}")
    for pullers in (1, 4):
        for way in ("through the service", "presigned redirect"):
            run = results[way, pullers]
            store = f", object store {run.per_gb(run.store_cpu):.1f} s/GB" if run.store_cpu is not None else ""
            print(
                f"  {pullers} puller(s), {way:<20} {run.rate:6.0f} MB/s  service CPU {run.per_gb(run.service_cpu):5.2f} s/GB"
                f" ({run.service_cpu / pullers * 1000:4.0f} ms per pull){store}"
            )
        through, presigned = results["through the service", pullers], results["presigned redirect", pullers]
        print(
            f"    presigned / through: {presigned.rate / through.rate:.2f}x MB/s,"
            f" {presigned.per_gb(presigned.service_cpu) / through.per_gb(through.service_cpu):.3f}x service CPU per GB"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--uploads", type=int, default=60, help="timed uploads per run")
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--replicas", type=int, default=3, help="the largest replica count measured (1 and this)")
    parser.add_argument("--episodes", type=int, default=100_000, help="episodes of the many-episode dataset")
    parser.add_argument("--repeats", type=int, default=20, help="timings per catalog read")
    parser.add_argument("--rounds", type=int, default=2, help="rounds of pulls")
    parser.add_argument("--only", default="commits,catalog,pull")
    parser.add_argument("--storage-url", help="s3://bucket/prefix (AWS_* from the environment); default a throwaway SeaweedFS")
    parser.add_argument("--postgres", default=os.environ.get("REPLAYBANK_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test"))
    parser.add_argument("--redis", default=os.environ.get("REPLAYBANK_TEST_REDIS_URL", "redis://127.0.0.1:6379/15"))
    args = parser.parse_args()
    parts = set(args.only.split(","))
    counts = sorted({1, args.replicas})
    episodes = iter(range(10**9))
    token = uuid.uuid4().hex + uuid.uuid4().hex

    with tempfile.TemporaryDirectory(prefix="replaybank-scale-") as name:
        folder = Path(name)
        cache = folder / "upload-cache"
        if "commits" in parts:
            embedded = Deployment("local folder + SQLite", {"REPLAYBANK_ADMIN_TOKEN": token}, {}, str(folder / "tables"))
            with replicas(embedded, folder, 1) as embedded.replicas:
                report_commits(embedded.name, measure_commits(embedded, args, [1], cache, episodes), args, [1])

        with ExitStack() as stack:
            storage_url, store_env, store_pid = stack.enter_context(object_store(folder / "seaweedfs", args.storage_url))
            database_url = stack.enter_context(postgres_database(args.postgres))
            redis_url = stack.enter_context(redis_database(args.redis))
            settings = {
                **store_env,
                "REPLAYBANK_STORAGE_URL": storage_url,
                "REPLAYBANK_DATABASE_URL": database_url,
                "REPLAYBANK_REDIS_URL": redis_url,
                "REPLAYBANK_ADMIN_TOKEN": token,
            }
            shared = Deployment("S3 + PostgreSQL + Redis", settings, store_env, storage_url, database_url, store_pid)
            shared.replicas = stack.enter_context(replicas(shared, folder, counts[-1]))
            if "commits" in parts:
                results = measure_commits(shared, args, counts, cache, episodes)
                report_commits(shared.name, results, args, counts)
                report_rows(catalog_rows(database_url))
            if "catalog" in parts or "pull" in parts:
                latencies, bulk = measure_catalog(shared, args, cache, episodes)
                if "catalog" in parts:
                    report_catalog(latencies, args.repeats)
                    episodes_now, size = catalog_rows(database_url)["dataset_episodes"]
                    print(f"  dataset_episodes now {episodes_now:,} rows, {size / episodes_now:.0f} bytes/row with indexes")
                if "pull" in parts:
                    report_pulls(measure_pulls(shared, bulk, folder, args.rounds))


if __name__ == "__main__":
    main()
