"""Everything a request may need, built once per app by the lifespan and kept on `app.state.services`."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import timedelta

import anyio.to_thread
from filelock import FileLock, Timeout

from service.auth import WORKER_TOKEN_NAME, Tokens
from service.catalog import Catalog
from service.clock import Clock, SystemClock
from service.compaction import Compaction, CompactionPolicy
from service.datasets import Datasets
from service.errors import ApiError
from service.ingest import Ingest
from service.jobs.protocol import WorkerProtocol
from service.jobs.roster import WorkerRoster
from service.jobs.submission import Jobs
from service.locks import Locks, open_locks
from service.observability.gauges import CatalogGauges
from service.observability.job_outcomes import JobOutcomes
from service.observability.metrics import ServiceMetrics
from service.policies import Policies
from service.query import QueryRunner
from service.queue import JobQueue, create_queue
from service.recovery import reconcile
from service.settings import Settings
from service.storage.artifacts import ArtifactStorage
from service.storage.datasets import DatasetStorage
from service.storage.stores import open_store
from service.sweeps import Sweeps

LOCK_FILE = "service.lock"


class DataDirInUse(RuntimeError):
    """Another service process owns the data directory."""


@dataclass
class Services:
    settings: Settings
    catalog: Catalog
    storage: DatasetStorage
    artifacts: ArtifactStorage
    datasets: Datasets
    compaction: Compaction
    ingest: Ingest
    tokens: Tokens
    queries: QueryRunner
    queue: JobQueue
    jobs: Jobs
    protocol: WorkerProtocol
    policies: Policies
    roster: WorkerRoster
    metrics: ServiceMetrics
    sweeps: Sweeps
    locks: Locks
    generated_admin_token: str | None = None
    """Set on the first start without REPLAYBANK_ADMIN_TOKEN; printed once, never stored in clear."""

    async def check_ready(self) -> None:
        """Raise 503 `not_ready` naming the first of catalog, storage and queue that does not answer."""
        checks = {
            "catalog": lambda: anyio.to_thread.run_sync(self.catalog.ping),
            "storage": lambda: anyio.to_thread.run_sync(self.storage.ping),
            "queue": self.queue.ping,
        }
        for name, check in checks.items():
            try:
                await check()
            except Exception as error:  # any failure of a dependency means "not ready", with its reason
                raise ApiError(503, "not_ready", f"{name} is not answering: {error.__class__.__name__}: {error}", name) from None


def own_data_dir(settings: Settings) -> FileLock:
    """The data directory's lock, held; `DataDirInUse` when another service holds it. With object storage
    the folder still holds the scratch space (and the SQLite catalog, when there is no database URL)."""
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    lock = FileLock(str(settings.data_dir / LOCK_FILE))
    try:
        lock.acquire(timeout=0)
    except Timeout:
        raise DataDirInUse(
            f"another replaybank service is using {settings.data_dir}; stop it or set REPLAYBANK_DATA_DIR to another folder"
        ) from None
    return lock


@contextmanager
def open_services(
    settings: Settings, metrics: ServiceMetrics | None = None, clock: Clock | None = None
) -> Iterator[Services]:
    """Own the data directory (refusing a second service on it), open catalog and storage, reconcile, and
    build the job side on them, its leases on `clock` (the system's unless a test brings its own). The
    queue's connections are the caller's to close (`await queue.close()`). `metrics` (the app's; by
    default a registry of their own) gain the catalog's gauges while open.

    Replicas of one deployment (the same catalog, storage and queue, each its own data directory) start one
    at a time: making the tables, reconciling and making the configured tokens happen under one lock."""
    metrics = metrics or ServiceMetrics()
    lock = own_data_dir(settings)
    catalog = Catalog(settings.catalog_url)
    locks = open_locks(catalog.engine)
    compaction: Compaction | None = None
    ingest: Ingest | None = None
    gauges: CatalogGauges | None = None
    try:
        presign_seconds = settings.presign_seconds if settings.presigned_downloads else None
        store = open_store(settings.storage_url, settings.data_dir, settings.s3_options, presign_seconds)
        storage = DatasetStorage(store)
        artifacts = ArtifactStorage(store, settings.data_dir)
        datasets = Datasets(catalog, storage, artifacts, locks)
        tokens = Tokens(catalog)
        with locks.hold("start-up"):
            catalog.create_all()
            # On object storage, even a service with a catalog of its own may not be the only writer (a second
            # one pointed at the same prefix by mistake): a young file no version refers to may be its upload.
            staged_grace = timedelta(seconds=settings.staged_file_grace_seconds if locks.shared or store.shared else 0)
            reconcile(datasets, staged_grace)
            configured = settings.admin_token.get_secret_value() if settings.admin_token else None
            generated = tokens.ensure_admin(configured)
            if settings.worker_token is not None:
                tokens.ensure_configured(WORKER_TOKEN_NAME, settings.worker_token.get_secret_value(), ["worker"])
        JobOutcomes(metrics).attach(catalog)
        roster = WorkerRoster(catalog, settings.workers_window_seconds)
        gauges = CatalogGauges(catalog, roster)
        metrics.watch(gauges)
        compaction = Compaction(datasets, CompactionPolicy.from_settings(settings))
        ingest = Ingest(datasets, compaction, metrics)
        if generated is not None:
            print(
                f"replaybank: generated the admin token (shown only this once, stored hashed):\n  {generated}",
                file=sys.stderr,
                flush=True,
            )
        queue = create_queue(
            settings.redis_url, catalog.engine, settings.lease_seconds, settings.max_attempts, clock or SystemClock()
        )
        policies = Policies(catalog, artifacts, settings.max_upload_bytes)
        jobs = Jobs(catalog, queue, datasets, artifacts)
        sweeps = Sweeps(catalog, jobs, datasets)
        yield Services(
            settings=settings,
            catalog=catalog,
            storage=storage,
            artifacts=artifacts,
            datasets=datasets,
            compaction=compaction,
            ingest=ingest,
            tokens=tokens,
            queries=QueryRunner(settings),
            queue=queue,
            jobs=jobs,
            protocol=WorkerProtocol(catalog, queue, datasets, artifacts, policies, sweeps, settings.max_upload_bytes, roster),
            policies=policies,
            sweeps=sweeps,
            roster=roster,
            metrics=metrics,
            locks=locks,
            generated_admin_token=generated,
        )
    finally:
        if gauges is not None:
            metrics.unwatch(gauges)
        if compaction is not None:
            compaction.close()
        if ingest is not None:
            ingest.close()
        locks.close()
        catalog.close()
        lock.release()
