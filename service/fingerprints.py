"""Episode fingerprints: a content hash of each whole episode, so an upload that repeats episodes already
stored under other episode ids (the same file uploaded twice with fresh ids) is noticed.

Each row folds into three 64-bit lanes (observation, action, reward with the step): the sum of the values'
32-bit patterns, each times a fixed odd multiplier of its dimension (mod 2**32); an episode's lanes are the
wrapping sums of its rows' lanes.
Integer sums are exact and order-free, so the parts of a streamed upload sum to what the whole upload
would, however the body was cut. The fingerprint hashes the row count and the lanes. One pass of
vectorised integer arithmetic over the columns the commit already holds; no Python per row.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import numpy as np
import pyarrow as pa

from schemas.transition import EpisodeSummary

LANES = 3
BLOCK_ROWS = 8192
"""Rows per block: one block's products stay in cache (three times faster than one pass over a big upload)."""
_GOLDEN = np.uint64(0x9E3779B97F4A7C15)


def _multipliers(count: int) -> np.ndarray:
    """`count` fixed odd 32-bit constants (the low half of splitmix64 of 1..count): one per dimension."""
    z = np.arange(1, count + 1, dtype=np.uint64) * _GOLDEN
    z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return ((z ^ (z >> np.uint64(31))) | np.uint64(1)).astype(np.uint32)


@dataclass(frozen=True)
class EpisodeLanes:
    """Per episode seen in some rows: its id and the wrapping sums of its rows' lanes (ids may repeat
    until `combined`)."""

    episode_ids: np.ndarray  # int64 [k]
    sums: np.ndarray  # uint64 [k, LANES]

    def merge(self, other: EpisodeLanes) -> EpisodeLanes:
        return EpisodeLanes(np.concatenate((self.episode_ids, other.episode_ids)), np.concatenate((self.sums, other.sums)))

    def combined(self) -> EpisodeLanes:
        """One entry per episode, sorted by id."""
        ids, inverse = np.unique(self.episode_ids, return_inverse=True)
        sums = np.zeros((len(ids), LANES), dtype=np.uint64)
        np.add.at(sums, inverse, self.sums)
        return EpisodeLanes(ids, sums)


def _vector_lane(column: pa.ChunkedArray, start: int, stop: int, multipliers: np.ndarray) -> np.ndarray:
    """Per row of `column[start:stop]` (fixed-size float32 lists, or int64 for discrete actions)."""
    values = column.slice(start, stop - start).combine_chunks()
    rows = stop - start
    if pa.types.is_fixed_size_list(values.type):
        bits = values.flatten().to_numpy(zero_copy_only=False).view(np.uint32).reshape(rows, -1)
    else:  # int64 discrete actions: both halves
        bits = values.to_numpy(zero_copy_only=False).view(np.uint32).reshape(rows, 2)
    return (bits * multipliers[: bits.shape[1]]).sum(axis=1, dtype=np.uint64)


def measure(table: pa.Table) -> EpisodeLanes:
    """The lanes of every episode in `table` (rows in the dataset's schema)."""
    n = table.num_rows
    if n == 0:
        return EpisodeLanes(np.zeros(0, dtype=np.int64), np.zeros((0, LANES), dtype=np.uint64))
    action = table.schema.field("action").type
    width = max(table.schema.field("observation").type.list_size, action.list_size if pa.types.is_fixed_size_list(action) else 1)
    multipliers = _multipliers(width + 3)
    episode_ids = table.column("episode_id").to_numpy()
    steps = table.column("step").to_numpy().view(np.uint32)
    rewards = table.column("reward").to_numpy().view(np.uint32)
    lanes = np.empty((n, LANES), dtype=np.uint64)
    for start in range(0, n, BLOCK_ROWS):
        stop = min(start + BLOCK_ROWS, n)
        lanes[start:stop, 0] = _vector_lane(table.column("observation"), start, stop, multipliers)
        lanes[start:stop, 1] = _vector_lane(table.column("action"), start, stop, multipliers[1:])
    lanes[:, 2] = (rewards * multipliers[-1]).astype(np.uint64) + (steps * multipliers[-2])
    starts = np.flatnonzero(np.concatenate(([True], episode_ids[1:] != episode_ids[:-1])))
    return EpisodeLanes(episode_ids[starts], np.add.reduceat(lanes, starts, axis=0))


def whole_episodes(lanes: EpisodeLanes, episodes: EpisodeSummary, continued: set[int]) -> dict[int, str]:
    """Fingerprints of the episodes that lie wholly in this upload: they end in it, and `continued` (those
    with rows in earlier versions) does not hold them."""
    combined = lanes.combined()
    assert np.array_equal(combined.episode_ids, episodes.episode_ids), "lanes and summary of different rows"
    fingerprints = {}
    for episode_id, rows, ended, sums in zip(
        episodes.episode_ids.tolist(), episodes.rows.tolist(), episodes.ended.tolist(), combined.sums
    ):
        if ended and episode_id not in continued:
            digest = hashlib.blake2b(rows.to_bytes(8, "little") + sums.tobytes(), digest_size=16)
            fingerprints[episode_id] = digest.hexdigest()
    return fingerprints
