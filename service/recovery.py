"""Recovery: the Delta log is the source of truth, and this brings the catalog up to it.

After a crash between a Delta commit and its catalog write, `catch_up` records the commits the catalog
lacks (on start, and before every commit or compaction); `reconcile` runs on start: it finishes
interrupted deletes, adopts Delta tables the catalog does not know, catches every dataset up and
clears what interrupted uploads and deletes left behind.
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta, timezone

from schemas.dataset import DatasetCreate
from schemas.transition import summarize_episodes, transition_schema
from service import fingerprints
from service import stats as statistics
from service.catalog import CatalogConflict
from service.datasets import Datasets, dataset_rows, spec_of

log = logging.getLogger("replaybank.recovery")


def catch_up(datasets: Datasets, dataset_id: str) -> int:
    """Record Delta commits the catalog lacks; returns how many. Hold the dataset's lock."""
    catalog, storage = datasets.catalog, datasets.storage
    dataset = catalog.dataset_by_id(dataset_id)
    if dataset is None:
        return 0
    latest = catalog.version(dataset_id, dataset.latest_version)
    assert latest is not None
    if storage.latest_delta_version(dataset_id) <= latest.delta_version:
        return 0
    spec = spec_of(dataset)
    schema = transition_schema(spec)
    recovered = 0
    for commit in storage.commits(dataset_id):
        number = int(commit.metadata["version"])
        if number <= latest.version:
            continue
        if number != latest.version + 1:
            raise RuntimeError(f"dataset {dataset.name}: Delta commit {commit.delta_version} holds version {number}, expected {latest.version + 1}")
        added = storage.added_files(dataset_id, commit.delta_version)
        table = storage.read_files(dataset_id, [file.path for file in added], schema)
        episodes = summarize_episodes(table)
        prior = catalog.episodes(dataset_id, episodes.episode_ids.tolist())
        datasets.record_version(
            dataset,
            spec,
            latest,
            episodes,
            statistics.measure(table, spec),
            fingerprints.measure(table),
            prior,
            number=number,
            delta_version=commit.delta_version,
            idempotency_key=commit.metadata.get("idempotency_key"),
            body_sha256=commit.metadata.get("body_sha256"),
            batch_id=commit.metadata.get("batch_id"),
            created_at=datetime.fromtimestamp(commit.timestamp_ms / 1000, timezone.utc),
        )
        latest = catalog.version(dataset_id, number)
        assert latest is not None
        recovered += 1
    if recovered:
        log.warning("dataset %s: recovered %d committed version(s) missing from the catalog", dataset.name, recovered)
    return recovered


def reconcile(datasets: Datasets, staged_grace: timedelta) -> None:
    """On start: finish interrupted deletes, adopt tables the catalog lacks, record commits it missed, clear
    the trash, and remove dynamics models of datasets that no longer exist.

    Other replicas may be running meanwhile, so each dataset is looked at under its lock, and a data file
    no version refers to is taken for an interrupted upload's only once it is `staged_grace` old: until its
    commit, a live replica's upload looks just the same."""
    catalog, storage = datasets.catalog, datasets.storage
    known = {row.id for row in catalog.datasets()}
    for dataset_id in storage.table_ids():
        if dataset_id not in known:
            with datasets.lock(dataset_id):  # not while a replica is creating it
                if catalog.dataset_by_id(dataset_id) is None and storage.exists(dataset_id):
                    _adopt(datasets, dataset_id)
    for row in catalog.datasets():
        with datasets.lock(row.id):
            if not storage.exists(row.id):
                if storage.in_trash(row.id):
                    catalog.remove_dataset(row.id)
                elif catalog.dataset_by_id(row.id) is not None:
                    log.error("dataset %s: its Delta table %s is missing", row.name, storage.path(row.id))
                continue
            catch_up(datasets, row.id)
            removed = storage.remove_unreferenced(row.id, staged_grace)
        if removed:
            log.warning("dataset %s: removed %d staged file(s) an interrupted upload left behind", row.name, removed)
    for dataset_id in storage.trash():
        with datasets.lock(dataset_id):
            storage.purge(dataset_id)
    live = {row.id for row in catalog.datasets()}
    for dataset_id in datasets.artifacts.dynamics_datasets() - live:
        # a delete that stopped between its catalog write and this folder
        datasets.artifacts.remove_dataset(dataset_id)


def _adopt(datasets: Datasets, dataset_id: str) -> None:
    """Register a Delta table the catalog does not know (a lost catalog, or a crash inside `create`).

    Version 0's commit carries the creation request, so name, spec and metadata come back as they were,
    with the edits the card beside the table records (`DatasetStorage.write_card`); `catch_up` then
    replays every later commit.
    """
    storage = datasets.storage
    commits = storage.commits(dataset_id)
    if not commits or commits[0].metadata.get("version") != "0" or "dataset" not in commits[0].metadata:
        log.error("table %s is not a replaybank dataset (no creation record); left alone", storage.path(dataset_id))
        return
    request = DatasetCreate.model_validate_json(commits[0].metadata["dataset"])
    card = storage.card(dataset_id)
    if card is not None:  # edited since its creation: the card beside the table says how it is now
        request = request.model_copy(update=card)
    created_at = datetime.fromtimestamp(commits[0].timestamp_ms / 1000, timezone.utc)
    try:
        datasets.catalog.add_dataset(*dataset_rows(dataset_id, request, created_at, commits[0].delta_version))
    except CatalogConflict:
        log.error("table %s holds dataset %r, but that name is taken in the catalog; left alone", storage.path(dataset_id), request.name)
        return
    log.warning("dataset %s: adopted from its Delta table, which the catalog did not know", request.name)
