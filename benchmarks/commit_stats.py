"""What the reward histogram adds to the statistics an upload computes before its commit.

    .venv/bin/python benchmarks/commit_stats.py [--rows 1000000]

`service.stats.measure` on Hopper-shaped rows, as an upload runs it, against the same call with the
histogram left out (the baseline, measured in the same run, taking turns).
"""

from __future__ import annotations

import argparse

from _common import HOPPER, best_of_rounds, hopper_rows

from service import stats


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--rounds", type=int, default=7)
    arguments = parser.parse_args()
    table = hopper_rows(arguments.rows)
    moments = stats._moments

    def with_histogram() -> None:
        stats.measure(table, HOPPER)

    def without_histogram() -> None:
        stats._moments = lambda values, histogram=False: moments(values)
        try:
            stats.measure(table, HOPPER)
        finally:
            stats._moments = moments

    baseline, measured = best_of_rounds(arguments.rounds, [without_histogram, with_histogram])
    print(f"measure() of {arguments.rows:,} rows: {baseline * 1000:.1f} ms without the reward histogram, "
          f"{measured * 1000:.1f} ms with it: x{measured / baseline:.2f} the baseline")


if __name__ == "__main__":
    main()
