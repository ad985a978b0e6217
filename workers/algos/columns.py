"""A dataset version as memory-mapped fixed-width records, for versions larger than the memory budget.

Each Parquet file of a version becomes, once, a folder of two `.npy` files written row group by row
group: `training.npy`, one packed record per row with what a batch needs (observation, action, reward,
next observation, terminal), and `episodes.npy` with what statistics and row masks need (episode id,
step, truncated, collected by a policy). A batch row is one record, so gathering a random row touches
one place of one file rather than five. The folder is written under a temporary name and renamed
whole, so a folder that exists is complete. `MappedTransitions` opens a version's folders with memory
mapping and gathers rows by their index in the version; `streamed_normalisation` computes the same
`Normalisation` as `Normalisation.from_arrays` (of the whole version, or of the rows a mask keeps), a
chunk of rows at a time.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from schemas.dataset import ContinuousActionSpec, DatasetSpec
from workers.algos.data import (
    OBSERVATION_STD_FLOOR,
    Normalisation,
    TransitionArrays,
    arrays_from_arrow,
    collected_by_policy,
    reward_scale,
)

TRAINING_FILE = "training.npy"
EPISODES_FILE = "episodes.npy"
READ_ROWS = 1 << 16
"""Rows converted (and, for statistics, read) at a time: a few MB, whatever the version's size."""


def training_dtype(spec: DatasetSpec) -> np.dtype:
    """One packed training record: what a batch gathers for a row."""
    observation = ("observations", np.float32, (spec.observation.size,))
    if isinstance(spec.action, ContinuousActionSpec):
        action: tuple = ("actions", np.float32, (spec.action.size,))
    else:
        action = ("actions", np.int64)
    next_observation = ("next_observations", np.float32, (spec.observation.size,))
    return np.dtype([observation, action, ("rewards", np.float32), next_observation, ("terminals", np.bool_)])


EPISODES_DTYPE = np.dtype(
    [("episode_ids", np.int64), ("steps", np.int32), ("truncateds", np.bool_), ("collected", np.bool_)]
)


@dataclass(frozen=True)
class Rows:
    """Gathered training rows: the columns `normalise_arrays` reads, in the order they were asked for."""

    observations: np.ndarray
    actions: np.ndarray
    rewards: np.ndarray
    next_observations: np.ndarray
    terminals: np.ndarray

    def __len__(self) -> int:
        return len(self.rewards)


def write_columns(batches: Iterable[pa.Table | pa.RecordBatch], rows: int, folder: Path, spec: DatasetSpec) -> Path:
    """Write `rows` transition rows, arriving in `batches`, as a column folder at `folder` (see the module
    docstring); when another process finished the same folder first, its copy is kept."""
    if folder.exists():
        return folder
    partial = folder.with_name(f".{folder.name}.partial-{os.getpid()}")
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True)
    try:
        training = np.lib.format.open_memmap(partial / TRAINING_FILE, mode="w+", dtype=training_dtype(spec), shape=(rows,))
        episodes = np.lib.format.open_memmap(partial / EPISODES_FILE, mode="w+", dtype=EPISODES_DTYPE, shape=(rows,))
        start = 0
        for batch in batches:
            table = batch if isinstance(batch, pa.Table) else pa.Table.from_batches([batch])
            if start + table.num_rows > rows:
                raise ValueError(f"more than the {rows} rows announced arrived")
            stop = start + table.num_rows
            arrays = arrays_from_arrow(table)
            for name in training.dtype.names:
                training[name][start:stop] = getattr(arrays, name).reshape(training[name][start:stop].shape)
            for name in ("episode_ids", "steps", "truncateds"):
                episodes[name][start:stop] = getattr(arrays, name)
            episodes["collected"][start:stop] = collected_by_policy(table)
            start = stop
        if start != rows:
            raise ValueError(f"{start} rows arrived where {rows} were announced")
        training.flush()
        episodes.flush()
        del training, episodes
        try:
            partial.rename(folder)
        except OSError:
            if not folder.exists():
                raise
            shutil.rmtree(partial)  # another process renamed its complete copy first
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)
        raise
    return folder


def parquet_to_columns(parquet: Path, folder: Path, spec: DatasetSpec) -> Path:
    """A Parquet file of transitions as a column folder (see `write_columns`), read a few row groups at a time."""
    if folder.exists():
        return folder
    file = pq.ParquetFile(parquet)
    names = ["episode_id", "step", "observation", "action", "reward", "next_observation", "terminal", "truncated", "source"]
    return write_columns(file.iter_batches(READ_ROWS, columns=names), file.metadata.num_rows, folder, spec)


class MappedTransitions:
    """A version's column folders, memory-mapped, addressed by row index over the whole version."""

    def __init__(self, folders: Iterable[Path]) -> None:
        folders = list(folders)
        self.training = [np.load(Path(folder) / TRAINING_FILE, mmap_mode="r") for folder in folders]
        self.episodes = [np.load(Path(folder) / EPISODES_FILE, mmap_mode="r") for folder in folders]
        sizes = [len(part) for part in self.training]
        self.starts = np.concatenate([[0], np.cumsum(sizes, dtype=np.int64)])
        self.rows = int(self.starts[-1])

    def __len__(self) -> int:
        return self.rows

    def gather(self, index: np.ndarray) -> Rows:
        """The training rows at `index` (int64 positions in the version), in that order."""
        records = np.empty(len(index), dtype=self.training[0].dtype if self.training else None)
        order = np.argsort(index, kind="stable")
        ordered = index[order]
        # Rows are read in file order, each file's share sorted (the mapped pages in sequence), and put back
        # where the caller asked for them: batches stay in the order drawn.
        bounds = np.searchsorted(ordered, self.starts)
        for part, (low, high) in enumerate(zip(bounds[:-1], bounds[1:])):
            if high > low:
                records[order[low:high]] = self.training[part][ordered[low:high] - self.starts[part]]
        return Rows(**{name: records[name] for name in records.dtype.names})

    def chunks(self, rows: int = READ_ROWS) -> Iterator[TransitionArrays]:
        """The whole version in order, `rows` rows at a time (training and episode columns)."""
        for training, episodes in zip(self.training, self.episodes):
            for start in range(0, len(training), rows):
                records, sides = training[start : start + rows], episodes[start : start + rows]
                yield TransitionArrays(
                    **{name: np.asarray(records[name]) for name in records.dtype.names},
                    truncateds=np.asarray(sides["truncateds"]),
                    episode_ids=np.asarray(sides["episode_ids"]),
                    steps=np.asarray(sides["steps"]),
                )

    def column(self, name: str) -> np.ndarray:
        """One of the episode columns (`episode_ids`, `steps`, `truncateds`, `collected`) for the whole version:
        small enough to hold (at most 8 bytes a row), for row masks."""
        if name not in EPISODES_DTYPE.names:
            raise ValueError(f"no episode column {name!r}; the columns are {EPISODES_DTYPE.names}")
        return np.concatenate([np.asarray(part[name]) for part in self.episodes]) if self.episodes else np.empty(0)


def streamed_normalisation(
    data: MappedTransitions, chunk_rows: int = READ_ROWS, rows: np.ndarray | None = None
) -> Normalisation:
    """`Normalisation.from_arrays` of the whole version, or of the rows the boolean mask `rows` marks (a
    training split), computed `chunk_rows` rows at a time (Chan's parallel mean and variance, per-episode
    sums merged across chunks)."""
    if rows is not None and len(rows) != len(data):
        raise ValueError(f"the row mask has {len(rows)} entries for a version of {len(data)} rows")
    if (len(data) if rows is None else int(rows.sum())) == 0:
        raise ValueError("the dataset has no transitions to compute statistics from")
    observations = _Moments()
    rewards = _Moments()
    largest_reward = 0.0
    episodes = _EpisodeSums()
    start = 0
    for chunk in data.chunks(chunk_rows):
        stop = start + len(chunk)
        if rows is not None:
            chunk = chunk.subset(rows[start:stop])
        start = stop
        if len(chunk) == 0:
            continue
        observations.add(chunk.observations.astype(np.float64))
        chunk_rewards = chunk.rewards.astype(np.float64)
        rewards.add(chunk_rewards[:, None])
        largest_reward = max(largest_reward, float(np.abs(chunk_rewards).max()))
        episodes.add(chunk.episode_ids, chunk_rewards, chunk.terminals | chunk.truncateds)
    returns, lengths = episodes.finished()
    return Normalisation(
        observation_mean=observations.mean.astype(np.float32),
        observation_std=np.maximum(observations.std(), OBSERVATION_STD_FLOOR).astype(np.float32),
        reward_scale=reward_scale(
            return_spread=float(returns.max() - returns.min()) if len(returns) else 0.0,
            mean_absolute_return=float(abs(returns.mean())) if len(returns) else 0.0,
            mean_episode_length=float(lengths.mean()) if len(lengths) else 0.0,
            reward_std=float(rewards.std()[0]),
            largest_reward=largest_reward,
        ),
    )


class _Moments:
    """Running count, mean and sum of squared deviations per column, merged chunk by chunk."""

    def __init__(self) -> None:
        self.count = 0
        self.mean: np.ndarray = np.zeros(0)
        self.squares: np.ndarray = np.zeros(0)

    def add(self, values: np.ndarray) -> None:
        count = len(values)
        if count == 0:
            return
        mean = values.mean(0)
        squares = ((values - mean) ** 2).sum(0)
        if self.count == 0:
            self.count, self.mean, self.squares = count, mean, squares
            return
        total = self.count + count
        delta = mean - self.mean
        self.mean = self.mean + delta * (count / total)
        self.squares = self.squares + squares + delta**2 * (self.count * count / total)
        self.count = total

    def std(self) -> np.ndarray:
        return np.sqrt(self.squares / self.count)


class _EpisodeSums:
    """Per episode id: summed reward, row count, and whether a row ended it; one entry per episode seen."""

    def __init__(self) -> None:
        self.ids = np.empty(0, np.int64)
        self.returns = np.empty(0, np.float64)
        self.lengths = np.empty(0, np.int64)
        self.ended = np.empty(0, np.bool_)

    def add(self, ids: np.ndarray, rewards: np.ndarray, ended: np.ndarray) -> None:
        merged, inverse = np.unique(np.concatenate([self.ids, ids]), return_inverse=True)
        size = len(merged)
        old, new = inverse[: len(self.ids)], inverse[len(self.ids) :]
        self.returns = np.bincount(old, self.returns, size) + np.bincount(new, rewards, size)
        self.lengths = np.bincount(old, self.lengths, size).astype(np.int64) + np.bincount(new, minlength=size)
        self.ended = np.bincount(old, self.ended, size).astype(bool) | np.bincount(new, ended, size).astype(bool)
        self.ids = merged

    def finished(self) -> tuple[np.ndarray, np.ndarray]:
        """Returns and lengths of the episodes that ended (as `episode_returns`)."""
        return self.returns[self.ended], self.lengths[self.ended]
