"""The commit-time histograms: merging two power-of-two-width histograms equals binning all values at once."""

from __future__ import annotations

import numpy as np
import pytest

from service import stats


def binned(values: np.ndarray, exponent: int) -> dict:
    keys = np.floor(values.astype(np.float64) / 2.0**exponent).astype(np.int64)
    return {"exponent": exponent, "start": int(keys.min()), "counts": np.bincount(keys - keys.min()).tolist()}


@pytest.mark.parametrize(
    "first, second",
    [
        (np.random.default_rng(0).normal(size=500), np.random.default_rng(1).normal(5.0, 3.0, size=300)),
        (np.full(10, 200.0), np.arange(50.0, 400.0)),  # one length, then many
        (np.zeros(7), -np.random.default_rng(2).uniform(0, 1e-3, 40)),  # a constant zero reward, then tiny ones
        (np.array([-1e6]), np.array([1e6, 3.5])),
        # float32 rewards far from zero next to their spread, binned in their own precision
        (np.float32(1e6) + np.arange(40, dtype=np.float32) * np.float32(0.0625), np.full(3, 1e6 + 0.5, np.float32)),
    ],
)
def test_merging_equals_binning_everything_at_the_merged_width(first: np.ndarray, second: np.ndarray) -> None:
    a = stats._moments(first.reshape(-1, 1), histogram=True)
    b = stats._moments(second.reshape(-1, 1), histogram=True)
    merged = stats._combine(a, b)["histogram"]
    everything = np.concatenate([first, second]).astype(np.float64)
    assert merged == binned(everything, merged["exponent"])
    assert len(merged["counts"]) <= stats.MAX_BINS and sum(merged["counts"]) == everything.size
    assert merged["exponent"] >= max(a["histogram"]["exponent"], b["histogram"]["exponent"])
    # as fine as the range allows: one exponent finer would need more bins than are kept (or a coarser part)
    finer = binned(everything, merged["exponent"] - 1)
    assert len(finer["counts"]) > stats.MAX_BINS or merged["exponent"] - 1 < max(a["histogram"]["exponent"], b["histogram"]["exponent"])


def test_a_version_without_a_histogram_passes_none_on() -> None:
    old = {k: v for k, v in stats._moments(np.ones((3, 1))).items()}
    assert "histogram" not in stats._combine(old, stats._moments(np.ones((2, 1)), histogram=True))
    assert stats.distribution(stats._combine(old, stats._moments(np.ones((2, 1)), histogram=True))).histogram is None
