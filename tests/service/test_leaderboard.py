"""The leaderboard's arithmetic on numbers worked out by hand: ranks, Spearman's rho with ties, regret@1."""

from __future__ import annotations

import pytest

from schemas.sweeps import LeaderboardEntry
from service.leaderboard import average_ranks, ranked, regret_at_1, spearman


def entry(name: str, estimate: float | None, env_return: float | None) -> LeaderboardEntry:
    return LeaderboardEntry(
        rank=None,
        algorithm="iql",
        params={},
        seed=0,
        train_job=name,
        train_status="succeeded",
        policy_id=f"iql-{name}",
        ope_job=None,
        ope_status=None,
        estimate=estimate,
        low=None if estimate is None else estimate - 1,
        high=None if estimate is None else estimate + 1,
        env_return=env_return,
    )


def test_tied_values_share_the_mean_of_their_ranks() -> None:
    assert average_ranks([10.0, 30.0, 20.0]) == [1.0, 3.0, 2.0]
    assert average_ranks([5.0, 1.0, 5.0, 2.0]) == [3.5, 1.0, 3.5, 2.0]
    assert average_ranks([7.0, 7.0, 7.0]) == [2.0, 2.0, 2.0]


def test_spearman_on_known_numbers() -> None:
    assert spearman([1, 2, 3, 4], [10, 20, 30, 40]) == pytest.approx(1.0)
    assert spearman([1, 2, 3, 4], [4, 3, 2, 1]) == pytest.approx(-1.0)
    # ranks (3, 1, 2) against (2, 3, 1): 1 - 6 * (1 + 4 + 1) / (3 * (9 - 1)) = -0.5
    assert spearman([3.0, 1.0, 2.0], [20.0, 30.0, 10.0]) == pytest.approx(-0.5)
    # with a tie, Pearson on average ranks: x ranks (1, 2.5, 2.5, 4), y ranks (1, 2, 3, 4) -> 4.5 / sqrt(4.5 * 5)
    assert spearman([1.0, 2.0, 2.0, 3.0], [1.0, 2.0, 3.0, 4.0]) == pytest.approx(4.5 / (4.5 * 5) ** 0.5)
    assert spearman([1.0], [2.0]) is None
    assert spearman([1.0, 1.0, 1.0], [1.0, 2.0, 3.0]) is None  # constant estimates rank nothing


def test_regret_is_the_share_of_the_spread_the_top_estimate_loses() -> None:
    assert regret_at_1([3.0, 1.0, 2.0], [20.0, 30.0, 10.0]) == pytest.approx(0.5)  # picks 20 of best 30, worst 10
    assert regret_at_1([3.0, 1.0, 2.0], [30.0, 20.0, 10.0]) == 0.0
    assert regret_at_1([3.0, 1.0, 2.0], [10.0, 20.0, 30.0]) == pytest.approx(1.0)
    assert regret_at_1([1.0, 1.0], [5.0, 9.0]) == pytest.approx(1.0)  # of tied estimates the first is the pick
    assert regret_at_1([1.0, 2.0], [4.0, 4.0]) == 0.0
    assert regret_at_1([1.0], [4.0]) is None


def test_entries_rank_by_estimate_and_the_summary_covers_those_with_both_figures() -> None:
    board = ranked(
        [
            entry("a", 3.0, 20.0),
            entry("b", None, 50.0),  # no estimate yet: unranked, and not compared
            entry("c", 1.0, 30.0),
            entry("d", 2.0, 10.0),
            entry("e", 5.0, None),  # the best estimate, without a return: ranked first, not compared
        ]
    )
    assert [(item.train_job, item.rank) for item in board.entries] == [("e", 1), ("a", 2), ("d", 3), ("c", 4), ("b", None)]
    assert board.compared == 3
    assert board.spearman == pytest.approx(-0.5)
    assert board.regret_at_1 == pytest.approx(0.5)
    alone = ranked([entry("a", 1.0, 3.0), entry("b", 2.0, None)])
    assert (alone.compared, alone.spearman, alone.regret_at_1) == (1, None, None)
