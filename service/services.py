"""Everything a request may need, built once per app by the lifespan and kept on `app.state.services`."""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from filelock import FileLock, Timeout

from service.auth import WORKER_TOKEN_NAME, Tokens
from service.catalog import Catalog
from service.datasets import CompactionPolicy, Datasets
from service.query import QueryRunner
from service.settings import Settings
from service.storage.datasets import DatasetStorage

LOCK_FILE = "service.lock"


class DataDirInUse(RuntimeError):
    """Another service process owns the data directory."""


@dataclass
class Services:
    settings: Settings
    catalog: Catalog
    storage: DatasetStorage
    datasets: Datasets
    tokens: Tokens
    queries: QueryRunner
    generated_admin_token: str | None = None
    """Set on the first start without REPLAYBANK_ADMIN_TOKEN; printed once, never stored in clear."""
    dataset_delete_guards: list[Callable[[str], None]] = field(default_factory=list)
    """Called with a dataset's name before it is deleted; a guard raises ApiError (409) to refuse."""
    readiness_checks: dict[str, Callable[[], object]] = field(default_factory=dict)
    """Extra dependencies /readyz checks (e.g. Redis when configured); each raises when it is down."""
    extensions: dict[str, Any] = field(default_factory=dict)
    """Room for parts built beside the data side (the job queue) without changing this class."""


@contextmanager
def open_services(settings: Settings) -> Iterator[Services]:
    """Own the data directory (refusing a second service on it), open catalog and storage, reconcile."""
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    lock = FileLock(str(settings.data_dir / LOCK_FILE))
    try:
        lock.acquire(timeout=0)
    except Timeout:
        raise DataDirInUse(
            f"another replaybank service is using {settings.data_dir}; stop it or set REPLAYBANK_DATA_DIR to another folder"
        ) from None
    catalog = Catalog(settings.catalog_url)
    datasets: Datasets | None = None
    try:
        catalog.create_all()
        storage = DatasetStorage(settings.data_dir)
        datasets = Datasets(catalog, storage, CompactionPolicy.from_settings(settings))
        datasets.reconcile()
        tokens = Tokens(catalog)
        configured = settings.admin_token.get_secret_value() if settings.admin_token else None
        generated = tokens.ensure_admin(configured)
        if settings.worker_token is not None:
            tokens.ensure_configured(WORKER_TOKEN_NAME, settings.worker_token.get_secret_value(), ["worker"])
        if generated is not None:
            print(
                f"replaybank: generated the admin token (shown only this once, stored hashed):\n  {generated}",
                file=sys.stderr,
                flush=True,
            )
        yield Services(
            settings=settings,
            catalog=catalog,
            storage=storage,
            datasets=datasets,
            tokens=tokens,
            queries=QueryRunner(settings),
            generated_admin_token=generated,
        )
    finally:
        if datasets is not None:
            datasets.close()
        catalog.close()
        lock.release()
