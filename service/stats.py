"""Per-version statistics, advanced incrementally: each version starts from the previous version's running sums.

Means and spreads combine with Chan et al.'s pairwise update (count, mean, M2), which stays accurate where
sum-of-squares would cancel. Rewards, episode returns and episode lengths also keep a histogram whose bin
width is a power of two: two such histograms merge exactly (a finer bin lies inside one coarser bin), so a
version's histogram is its previous version's plus its upload's, without reading old rows again.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa

from schemas.dataset import ContinuousActionSpec, DatasetSpec, DimensionStats, Distribution, Histogram
from schemas.transition import EpisodeSummary

MAX_DIMENSIONS_TRACKED = 4096
"""Per-dimension statistics are kept for vectors up to this size (not, say, for raw images)."""


MOMENT_BLOCK_ROWS = 8192
"""Rows per block in `_moments`: a block in float64 stays in cache while every statistic is taken from it."""


MAX_BINS = 32
"""A histogram keeps at most this many bins; merging coarsens the width (by powers of two) to stay within."""


def _width_exponent(low: float, high: float, at_least: int) -> int:
    """The smallest power-of-two width exponent >= `at_least` at which [low, high] spans at most MAX_BINS bins."""
    span = high - low
    if span > 0:
        exponent = max(at_least, math.ceil(math.log2(span / (MAX_BINS - 1))))
    else:  # one value: bins a thirty-second of its magnitude wide, so later values can still spread out
        exponent = max(at_least, math.floor(math.log2(abs(low))) - 5 if low != 0 else -20)
    while math.floor(high / 2.0**exponent) - math.floor(low / 2.0**exponent) + 1 > MAX_BINS:
        exponent += 1
    return exponent


def _histogram(values: np.ndarray) -> dict[str, Any]:
    """Bins `[k * 2**exponent, (k + 1) * 2**exponent)` for k from `start`, over a 1-D float array (not empty)."""
    low, high = float(values.min()), float(values.max())
    exponent = _width_exponent(low, high, -1074)
    start = math.floor(low / 2.0**exponent)
    # Scaling by a power of two is exact in the values' own precision, so a float32 column needs no float64
    # copy; its floor, and `start`, the floor of its smallest value, are integers that precision holds.
    with np.errstate(over="ignore"):
        scale = values.dtype.type(2.0**-exponent)
    if not np.isfinite(scale):
        values, scale = values.astype(np.float64), 2.0**-exponent
    keys = (np.floor(values * scale) - start).astype(np.int64)
    return {"exponent": exponent, "start": start, "counts": np.bincount(keys).tolist()}


def _merge_histograms(a: dict[str, Any], b: dict[str, Any], low: float, high: float) -> dict[str, Any]:
    """`a` and `b` at one common width, the coarsest of theirs or coarser, so that [low, high] fits MAX_BINS."""
    exponent = _width_exponent(low, high, max(a["exponent"], b["exponent"]))
    merged: dict[int, int] = {}
    for histogram in (a, b):
        shift = exponent - histogram["exponent"]
        for offset, count in enumerate(histogram["counts"]):
            if count:
                key = (histogram["start"] + offset) >> shift  # a floor division, for negative keys too
                merged[key] = merged.get(key, 0) + count
    start = min(merged)
    counts = [0] * (max(merged) - start + 1)
    for key, count in merged.items():
        counts[key - start] += count
    return {"exponent": exponent, "start": start, "counts": counts}


def _moments(values: np.ndarray, histogram: bool = False) -> dict[str, Any]:
    """Running moments of a [N, D] array (D may be 1), in float64, one cache-sized block of rows at a time
    (one pass over memory instead of one per statistic; no float64 copy of the whole data); with
    `histogram`, also the histogram of a [N, 1] array.

    Values are shifted by their first row before squaring, which keeps the one-pass variance accurate
    when the mean is large next to the spread.
    """
    count, size = values.shape
    if count == 0:
        return {"count": 0}
    shift = values[0].astype(np.float64)
    total, squares = np.zeros(size), np.zeros(size)
    low, high = values[0].copy(), values[0].copy()
    centred = np.empty((min(count, MOMENT_BLOCK_ROWS), size))
    for start in range(0, count, MOMENT_BLOCK_ROWS):
        part = values[start : start + MOMENT_BLOCK_ROWS]
        np.minimum(low, part.min(axis=0), out=low)
        np.maximum(high, part.max(axis=0), out=high)
        block = centred[: len(part)]
        np.subtract(part, shift, out=block)
        total += block.sum(axis=0)
        squares += np.einsum("ij,ij->j", block, block)
    offset = total / count
    moments = {
        "count": count,
        "mean": (shift + offset).tolist(),
        "m2": np.maximum(squares - total * offset, 0.0).tolist(),
        "min": low.astype(np.float64).tolist(),
        "max": high.astype(np.float64).tolist(),
    }
    if histogram:
        moments["histogram"] = _histogram(values[:, 0])
    return moments


def _combine(a: dict[str, Any], b: dict[str, Any]) -> dict[str, Any]:
    if a["count"] == 0:
        return b
    if b["count"] == 0:
        return a
    n_a, n_b = a["count"], b["count"]
    n = n_a + n_b
    mean_a, mean_b = np.asarray(a["mean"]), np.asarray(b["mean"])
    delta = mean_b - mean_a
    combined = {
        "count": n,
        "mean": (mean_a + delta * (n_b / n)).tolist(),
        "m2": (np.asarray(a["m2"]) + np.asarray(b["m2"]) + delta**2 * (n_a * n_b / n)).tolist(),
        "min": np.minimum(a["min"], b["min"]).tolist(),
        "max": np.maximum(a["max"], b["max"]).tolist(),
    }
    # A version committed before histograms were kept has none; its successors then have none either.
    if "histogram" in a and "histogram" in b:
        combined["histogram"] = _merge_histograms(a["histogram"], b["histogram"], combined["min"][0], combined["max"][0])
    return combined


def empty() -> dict[str, Any]:
    return {
        "rows": 0,
        "sources": {},
        "observation": {"count": 0},
        "action": {"count": 0},
        "reward": {"count": 0},
        "episode_return": {"count": 0},
        "episode_length": {"count": 0},
    }


@dataclass(frozen=True)
class UploadMoments:
    """What one upload adds to the statistics, computed before the commit lock (alongside the file write)."""

    rows: int
    sources: dict[str, int]
    observation: dict[str, Any] | None
    action: dict[str, Any] | None
    reward: dict[str, Any]

    def merge(self, other: "UploadMoments") -> "UploadMoments":
        """The moments of both parts of one upload together."""
        sources = dict(self.sources)
        for source, count in other.sources.items():
            sources[source] = sources.get(source, 0) + count
        return UploadMoments(
            rows=self.rows + other.rows,
            sources=sources,
            observation=None if self.observation is None or other.observation is None else _combine(self.observation, other.observation),
            action=None if self.action is None or other.action is None else _combine(self.action, other.action),
            reward=_combine(self.reward, other.reward),
        )


def measure(table: pa.Table, spec: DatasetSpec) -> UploadMoments:
    n = table.num_rows
    observation = None
    if spec.observation.size <= MAX_DIMENSIONS_TRACKED:
        observation = _moments(table.column("observation").combine_chunks().values.to_numpy().reshape(n, spec.observation.size))
    action_column = table.column("action").combine_chunks()
    action = None
    if isinstance(spec.action, ContinuousActionSpec):
        if spec.action.size <= MAX_DIMENSIONS_TRACKED:
            action = _moments(action_column.values.to_numpy().reshape(n, spec.action.size))
    else:
        action = _moments(action_column.to_numpy().reshape(n, 1))
    counted = table.column("source").value_counts().to_pylist()
    return UploadMoments(
        rows=n,
        sources={entry["values"]: entry["counts"] for entry in counted},
        observation=observation,
        action=action,
        reward=_moments(table.column("reward").combine_chunks().to_numpy().reshape(n, 1), histogram=True),
    )


def advance(previous: dict[str, Any], upload: UploadMoments, episodes: EpisodeSummary, prior_rows: np.ndarray, prior_returns: np.ndarray) -> dict[str, Any]:
    """The next version's statistics: the previous version's, combined with one upload's.

    `prior_rows`/`prior_returns` hold, per episode in `episodes`, the rows and reward already stored in
    earlier versions, so an episode that ends in this upload counts its whole length and return.
    """
    stats = dict(previous)
    stats["rows"] = previous["rows"] + upload.rows
    sources = dict(previous["sources"])
    for source, count in upload.sources.items():
        sources[source] = sources.get(source, 0) + count
    stats["sources"] = sources
    if upload.observation is not None:
        stats["observation"] = _combine(previous["observation"], upload.observation)
    if upload.action is not None:
        stats["action"] = _combine(previous["action"], upload.action)
    stats["reward"] = _combine(previous["reward"], upload.reward)

    finished = episodes.ended
    returns = (prior_returns + episodes.reward_sums)[finished]
    lengths = (prior_rows + episodes.rows)[finished].astype(np.float64)
    stats["episode_return"] = _combine(previous["episode_return"], _moments(returns.reshape(-1, 1), histogram=True))
    stats["episode_length"] = _combine(previous["episode_length"], _moments(lengths.reshape(-1, 1), histogram=True))
    return stats


def dimensions(moments: dict[str, Any]) -> DimensionStats | None:
    if moments["count"] == 0:
        return None
    count = moments["count"]
    return DimensionStats(
        mean=moments["mean"],
        std=[math.sqrt(max(m2, 0.0) / count) for m2 in moments["m2"]],
        min=moments["min"],
        max=moments["max"],
    )


def distribution(moments: dict[str, Any]) -> Distribution:
    count = moments["count"]
    if count == 0:
        return Distribution(count=0, mean=None, std=None, min=None, max=None)
    bins = moments.get("histogram")
    return Distribution(
        count=count,
        mean=moments["mean"][0],
        std=math.sqrt(max(moments["m2"][0], 0.0) / count),
        min=moments["min"][0],
        max=moments["max"][0],
        histogram=None if bins is None else Histogram(width=2.0 ** bins["exponent"], low=bins["start"] * 2.0 ** bins["exponent"], counts=bins["counts"]),
    )
