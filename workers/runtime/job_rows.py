"""What a train job trains on: its version resident, or streamed when it exceeds the memory budget.

The choice is made from the version's manifest before any row is read: its row count times the bytes
a row takes on the training device (`streaming.should_stream`) against the worker's `--memory-budget`.
Resident, the version is pulled into one Arrow table and copied to the device, as always. Streamed,
its Parquet files come into the local file cache as usual and each is converted once into a column
folder beside it in the cache (`<digest>.columns-v1`, content-addressed like the file itself, so a
newer version converts only its new files), which training maps into memory and samples from.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from schemas.dataset import ActionSpec, DatasetSpec
from schemas.jobs import JobPublic
from workers.algos.base import OfflineAlgorithm, PreparedParts
from workers.algos.columns import MappedTransitions, parquet_to_columns, streamed_normalisation
from workers.algos.data import Normalisation, TransitionArrays, collected_by_policy
from workers.algos.replay import Batch, Replay, training_replay
from workers.algos.streaming import device_row_bytes, should_stream, streaming_replay
from workers.algos.training import refuse_streaming, validation_batch
from workers.client import ReplaybankClient

log = logging.getLogger("replaybank.worker")

COLUMNS_SUFFIX = ".columns-v1"
"""Beside a cached file `<digest>`, the folder `<digest>.columns-v1` holds its mapped columns (the
suffix names the layout, so a change of layout never reads an old folder)."""


def columns_folder(cached_file: Path) -> Path:
    return cached_file.with_name(cached_file.name + COLUMNS_SUFFIX)


@dataclass(frozen=True)
class JobRows:
    """A job's version: `arrays` when resident, `mapped` columns when streamed."""

    arrays: TransitionArrays | None
    mapped: MappedTransitions | None
    online: np.ndarray | None
    """Resident only: which rows policies collected, when the job mixes online rows."""
    estimated_bytes: int
    memory_budget: int | None

    @property
    def streamed(self) -> bool:
        return self.mapped is not None

    def normalisation(self, rows: np.ndarray | None = None) -> Normalisation:
        """The version's normalisation, or that of the rows the boolean mask `rows` marks (a training split)."""
        if self.mapped is not None:
            return streamed_normalisation(self.mapped, rows=rows)
        assert self.arrays is not None
        return Normalisation.from_arrays(self.arrays if rows is None else self.arrays.subset(rows))

    def replay(
        self,
        normalisation: Normalisation,
        action_spec: ActionSpec,
        device: torch.device,
        seed: int,
        online_fraction: float | None,
        rows: np.ndarray | None = None,
    ) -> Replay:
        """What the job samples from; `rows`, a boolean mask over the version (e.g. a training split), limits
        it to the rows it marks."""
        if self.mapped is not None:
            return streaming_replay(self.mapped, normalisation, action_spec, device, seed, online_fraction, rows)
        assert self.arrays is not None
        arrays, online = self.arrays, self.online
        if rows is not None:
            arrays, online = arrays.subset(rows), (online[rows] if online is not None else None)
        return training_replay(arrays, normalisation, action_spec, device, seed, online_fraction, online)

    def episode_ids(self) -> np.ndarray:
        """Every row's episode id in version order, resident or streamed (to build row masks from)."""
        if self.mapped is not None:
            return self.mapped.column("episode_ids")
        assert self.arrays is not None
        return self.arrays.episode_ids

    def validation(
        self, held_out: np.ndarray, normalisation: Normalisation, action_spec: ActionSpec, device: torch.device, seed: int
    ) -> Batch | None:
        """The fixed sample of held-out rows (the mask `held_out`) every report measures (`training.validation_batch`);
        streamed, only the sampled rows are gathered from the mapped columns."""
        data = self.mapped if self.mapped is not None else self.arrays
        assert data is not None
        return validation_batch(data, held_out, normalisation, action_spec, device, seed)

    def prepare(self, algorithm: OfflineAlgorithm, parts: PreparedParts, rows: np.ndarray | None = None) -> dict[str, str]:
        """`algorithm.prepare` on the resident arrays, or the rows the mask `rows` marks (algorithms that
        stream prepare nothing from the data)."""
        if self.arrays is None:
            return {}
        return algorithm.prepare(self.arrays if rows is None else self.arrays.subset(rows), parts)

    def describe(self) -> dict[str, Any]:
        """For the job's result: whether it streamed, and the estimate against the budget."""
        return {"streamed": self.streamed, "estimated_device_bytes": self.estimated_bytes, "memory_budget": self.memory_budget}


def pull_job_rows(client: ReplaybankClient, job: JobPublic, spec: DatasetSpec, memory_budget: int | None) -> JobRows:
    """The job's version, resident or streamed by the estimate against `memory_budget` (see the module docstring)."""
    manifest = client.files(job.dataset, job.version)
    rows = sum(entry.rows for entry in manifest.data)
    estimate = rows * device_row_bytes(spec)
    if not should_stream(rows, spec, memory_budget):
        table = client.pull(job.dataset, job.version)
        online = collected_by_policy(table) if job.online_fraction is not None else None
        return JobRows(TransitionArrays.from_arrow(table), None, online, estimate, memory_budget)
    assert job.algorithm is not None
    refuse_streaming(job.algorithm)
    pulled = client.pull_files(job.dataset, job.version)
    folders = [parquet_to_columns(path, columns_folder(path), spec) for path in pulled.paths]
    log.info(
        "job %s streams %s@%d: %d rows, about %.1f MB on the device against a budget of %.1f MB",
        job.id, job.dataset, job.version, rows, estimate / 1e6, (memory_budget or 0) / 1e6,
    )  # fmt: skip
    return JobRows(None, MappedTransitions(folders), None, estimate, memory_budget)
