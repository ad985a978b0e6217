"""What measuring held-out episodes costs a run: one validation report beside one gradient step, same run.

    .venv/bin/python benchmarks/validation_overhead.py [--algorithms iql cql awac bc] [--threads 1] [--device cpu]

Hopper-shaped random transitions (11-d observations, 3-d actions), the paper's network sizes (256, 256)
and batch 256. For each algorithm: the median time of one `update` (sampling included) and of one
`validation_measures` call on `VALIDATION_ROWS` held-out rows (the fixed sample every report measures),
interleaved so other load hits both alike. The overhead is one validation per `progress_every` steps:
validation time / (progress_every x step time), shown at the worker's default report interval and at 100.
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np
import torch

from schemas.dataset import ContinuousActionSpec, DatasetSpec, ObservationSpec
from workers.algos.data import Normalisation, TransitionArrays
from workers.algos.replay import training_replay
from workers.algos.training import VALIDATION_ROWS, make_algorithm, validation_batch, validation_measures

SPEC = DatasetSpec(
    observation=ObservationSpec(shape=[11]), action=ContinuousActionSpec(shape=[3], low=[-1.0] * 3, high=[1.0] * 3)
)
WORKER_PROGRESS_EVERY = 1000
"""`replaybank worker --progress-every`'s default."""


def hopper_shaped(rows: int, seed: int) -> TransitionArrays:
    rng = np.random.default_rng(seed)
    observations = rng.standard_normal((rows + 1, 11)).astype(np.float32)
    step = np.arange(rows) % 1000
    return TransitionArrays(
        observations=observations[:-1],
        actions=rng.uniform(-1, 1, (rows, 3)).astype(np.float32),
        rewards=rng.standard_normal(rows).astype(np.float32),
        next_observations=observations[1:],
        terminals=np.zeros(rows, bool),
        truncateds=step == 999,
        episode_ids=(np.arange(rows) // 1000).astype(np.int64),
        steps=step.astype(np.int32),
    )


def median_seconds(function, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        function()
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--algorithms", nargs="+", default=["iql", "cql", "awac", "bc"])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--rounds", type=int, default=5)
    arguments = parser.parse_args()
    torch.set_num_threads(arguments.threads)
    device = torch.device(arguments.device)
    training, held_out = hopper_shaped(50_000, 0), hopper_shaped(10_000, 1)
    normalisation = Normalisation.from_arrays(training)
    print(f"validation on {VALIDATION_ROWS} rows vs one update (batch 256, hidden 256x256), {arguments.threads} thread(s), {device}")
    print(f"{'algorithm':<10}{'step ms':>10}{'validation ms':>15}{'overhead @1000':>16}{'overhead @100':>15}")
    for name in arguments.algorithms:
        algorithm = make_algorithm(name, {}, SPEC, normalisation, device, 0, total_steps=10_000)
        replay = training_replay(training, normalisation, SPEC.action, device, 0)
        batch = validation_batch(held_out, np.ones(len(held_out), np.bool_), normalisation, SPEC.action, device, 0)
        assert batch is not None

        def step() -> None:
            algorithm.update(replay.sample(256))
            algorithm.step += 1

        def measure() -> None:
            [value.item() for value in validation_measures(algorithm, batch).values()]

        for _ in range(5):  # warm-up
            step()
            measure()
        steps, measures = [], []
        for _ in range(arguments.rounds):
            steps.append(median_seconds(step, 20))
            measures.append(median_seconds(measure, 5))
        step_seconds, measure_seconds = min(steps), min(measures)
        overhead = {every: measure_seconds / (every * step_seconds) for every in (WORKER_PROGRESS_EVERY, 100)}
        print(
            f"{name:<10}{1000 * step_seconds:>10.2f}{1000 * measure_seconds:>15.2f}"
            f"{overhead[WORKER_PROGRESS_EVERY]:>15.2%}{overhead[100]:>15.2%}"
        )


if __name__ == "__main__":
    main()
