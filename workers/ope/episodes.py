"""What off-policy estimates share: the episodes' initial states and a bootstrap interval over episodes."""

from __future__ import annotations

import numpy as np

from workers.algos.data import TransitionArrays


def initial_rows(data: TransitionArrays) -> np.ndarray:
    """Row index of each complete episode's initial state (its first step), in episode-id order.

    A complete episode is one whose end is in the data (a terminal or truncated row): only then is the
    return from its first state the return the estimate is about. Raises a ValueError when there is none.
    """
    ended = np.unique(data.episode_ids[data.terminals | data.truncateds])
    if len(ended) == 0:
        raise ValueError(
            "no complete episode: no row has terminal or truncated set, "
            "so there is no initial state to estimate a return from"
        )
    order = np.lexsort((data.steps, data.episode_ids))
    ids = data.episode_ids[order]
    first = order[np.flatnonzero(np.r_[True, ids[1:] != ids[:-1]])]
    return first[np.isin(data.episode_ids[first], ended)]


def bootstrap_interval(
    values: np.ndarray, confidence: float, resamples: int, seed: int
) -> tuple[float, float]:
    """Percentile interval of the mean of per-episode `values`, resampling episodes with replacement."""
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must lie strictly between 0 and 1, not {confidence}")
    if resamples < 1:
        raise ValueError("resamples must be at least 1")
    values = np.asarray(values, dtype=np.float64)
    rng = np.random.default_rng(seed)
    # Resamples in chunks of about ten million draws, so a million episodes stay within memory.
    chunk = max(1, 10_000_000 // len(values))
    means = np.concatenate(
        [
            values[rng.integers(0, len(values), size=(min(chunk, resamples - start), len(values)))].mean(axis=1)
            for start in range(0, resamples, chunk)
        ]
    )
    tail = 50.0 * (1.0 - confidence)
    low, high = np.percentile(means, [tail, 100.0 - tail])
    return float(low), float(high)
