"""Sweep submission: one POST /v1/sweeps of N train jobs against N POST /v1/jobs of the same jobs, one by one.

    .venv/bin/python benchmarks/sweep_submit.py [--jobs 50 300] [--episodes 20]

A `replaybank serve` (SQLite, the embedded queue) runs as a subprocess, on a Hopper-shaped dataset without
an environment. A sweep submits its train jobs through the same `Jobs.submit` a single POST /v1/jobs runs,
so the baseline, measured in the same run, is that route called N times by one client; the ratio says what
the sweep's own bookkeeping (a catalog row per job, the checks made once) costs or saves against it. Each is
run twice, in the order baseline, sweep, sweep, baseline (the catalog grows as it goes), and the faster
time kept. The time to read the sweep back with its leaderboard is printed beside it.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from _common import HOPPER, hopper_rows, running_service

from schemas.dataset import DatasetSpec
from workers.client import ReplaybankClient

SPLIT = {"validation_fraction": 0.2, "seed": 0}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, nargs="+", default=[50, 300], help="train jobs per sweep (at most 500)")
    parser.add_argument("--episodes", type=int, default=20, help="1000-step episodes in the dataset")
    arguments = parser.parse_args()
    spec = DatasetSpec(observation=HOPPER.observation, action=HOPPER.action, env_id=None)
    with tempfile.TemporaryDirectory(prefix="replaybank-sweep-bench-") as folder, running_service(Path(folder) / "data") as service:
        with ReplaybankClient(service.url, service.token, timeout=600) as client:
            client.create_dataset("logged", spec)
            client.upload("logged", hopper_rows(arguments.episodes * 1000))
            print(f"{'train jobs':>10} {'sweep s':>9} {'jobs one by one s':>18} {'ratio':>7} {'GET sweep ms':>13}")
            for count in arguments.jobs:

                def one_by_one() -> None:
                    for seed in range(count):
                        job = {"kind": "train", "algorithm": "iql", "dataset": "logged", "version": 1, "seed": seed, "split": SPLIT}
                        client.submit_job(job)

                def sweep() -> None:
                    body = {"dataset": "logged", "version": 1, "algorithms": ["iql"], "seeds": list(range(count)), "split": SPLIT}
                    assert client.submit_sweep(body).train.total == count

                baseline_1, sweep_1, sweep_2, baseline_2 = (timed(run) for run in (one_by_one, sweep, sweep, one_by_one))
                baseline, sweep_seconds = min(baseline_1, baseline_2), min(sweep_1, sweep_2)
                newest = client.list_sweeps()[0]
                read_ms = timed(lambda: client.get_sweep(newest.id)) * 1000
                print(f"{count:>10} {sweep_seconds:>9.2f} {baseline:>18.2f} {sweep_seconds / baseline:>7.2f} {read_ms:>13.0f}")


def timed(run: Callable[[], object]) -> float:
    started = time.perf_counter()
    run()
    return time.perf_counter() - started


if __name__ == "__main__":
    main()
