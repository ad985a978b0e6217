"""A sweep's leaderboard from what its jobs found: ranks by the off-policy estimate, and how well that ranking
agrees with the environment's returns (Spearman's rank correlation, and the regret of the top pick).

Pure arithmetic on the entries: nothing here reads the catalog.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from schemas.sweeps import Leaderboard, LeaderboardEntry


def ranked(entries: list[LeaderboardEntry]) -> Leaderboard:
    """The entries ranked by estimate, highest first (ties in train job order), then those without one;
    the summary over the entries with both an estimate and an environment return."""
    estimated = sorted(
        ((entry.estimate, entry) for entry in entries if entry.estimate is not None), key=lambda pair: -pair[0]
    )  # a stable sort: tied estimates stay in train job order
    ordered = [entry.model_copy(update={"rank": rank}) for rank, (_, entry) in enumerate(estimated, start=1)]
    ordered += [entry.model_copy(update={"rank": None}) for entry in entries if entry.estimate is None]
    compared = [
        (entry.estimate, entry.env_return) for entry in ordered if entry.estimate is not None and entry.env_return is not None
    ]
    estimates = [estimate for estimate, _ in compared]
    returns = [found for _, found in compared]
    return Leaderboard(
        entries=ordered,
        compared=len(compared),
        spearman=spearman(estimates, returns),
        regret_at_1=regret_at_1(estimates, returns),
    )


def average_ranks(values: Sequence[float]) -> list[float]:
    """1 for the smallest value; tied values share the mean of the ranks they span."""
    order = sorted(range(len(values)), key=lambda index: values[index])
    ranks = [0.0] * len(values)
    start = 0
    while start < len(order):
        end = start
        while end + 1 < len(order) and values[order[end + 1]] == values[order[start]]:
            end += 1
        for position in range(start, end + 1):
            ranks[order[position]] = (start + end) / 2 + 1
        start = end + 1
    return ranks


def spearman(xs: Sequence[float], ys: Sequence[float]) -> float | None:
    """Pearson's correlation of the average ranks; None below two pairs, or when either side is constant."""
    if len(xs) != len(ys):
        raise ValueError(f"{len(xs)} estimates against {len(ys)} returns")
    if len(xs) < 2:
        return None
    rx, ry = average_ranks(xs), average_ranks(ys)
    mean_x, mean_y = sum(rx) / len(rx), sum(ry) / len(ry)
    covariance = sum((x - mean_x) * (y - mean_y) for x, y in zip(rx, ry))
    spread = math.sqrt(sum((x - mean_x) ** 2 for x in rx) * sum((y - mean_y) ** 2 for y in ry))
    return None if spread == 0 else covariance / spread


def regret_at_1(estimates: Sequence[float], returns: Sequence[float]) -> float | None:
    """The return lost by deploying the highest estimate instead of the best policy, as a share of the
    spread of returns: 0 picks the best, 1 the worst. 0 when all returns are equal; None below two policies.
    Of tied estimates the first is the pick."""
    if len(estimates) != len(returns):
        raise ValueError(f"{len(estimates)} estimates against {len(returns)} returns")
    if len(estimates) < 2:
        return None
    best, worst = max(returns), min(returns)
    if best == worst:
        return 0.0
    pick = max(range(len(estimates)), key=lambda index: (estimates[index], -index))
    return (best - returns[pick]) / (best - worst)
