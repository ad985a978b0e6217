"""Training speed streamed from memory-mapped columns beside fully resident, measured in the same run.

    nice .venv/bin/python benchmarks/streaming.py [--rows 300000] [--budget-ratio 3] [--steps 300] [--rounds 3]

A Hopper-shaped version (11-d observations, 3-d actions) of `--rows` rows is written as three Parquet
files, converted to column folders (`workers.algos.columns`) and trained on with a memory budget of a
third of its device size, so it streams (`StreamingReplay`); the baseline is the same rows resident
(`ReplayBuffer`), the same IQL (256, 256) networks, batch 256, one thread. Rounds alternate the two and
the best round of each counts. Also shown: batches per second of the sampler alone (no update), the
one-off conversion and streamed-normalisation times, and a streamed round after the column files were
dropped from the page cache (`posix_fadvise(DONTNEED)`), where every gathered row may be a read from
disk. The baseline is the resident run: the printed ratio is streamed / resident steps per second, and per
CPU-second of the process (the prefetch thread's time included), which moves less on a shared machine.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import pyarrow.parquet as pq
import torch
from _common import HOPPER, hopper_rows

from workers.algos.columns import MappedTransitions, parquet_to_columns, streamed_normalisation
from workers.algos.data import Normalisation, arrays_from_arrow
from workers.algos.replay import ReplayBuffer
from workers.algos.streaming import StreamingReplay, device_row_bytes, should_stream
from workers.algos.training import make_algorithm, train

PARAMS = {"batch_size": 256, "hidden_sizes": [256, 256]}
FILES = 3


def steps_per_second(replay, normalisation: Normalisation, steps: int) -> tuple[float, float]:
    """IQL updates per wall-clock second and per CPU-second of the process (the prefetch thread's included)."""
    algorithm = make_algorithm("iql", PARAMS, HOPPER, normalisation, "cpu", seed=0, total_steps=2 * steps)
    train(algorithm, replay, 20, 256)  # warm-up: first allocations, the prefetch thread's start
    start, start_cpu = time.perf_counter(), time.process_time()
    train(algorithm, replay, 20 + steps, 256, progress_every=10 * steps)
    return steps / (time.perf_counter() - start), steps / (time.process_time() - start_cpu)


def batches_per_second(replay, batches: int) -> float:
    replay.sample(256)
    start = time.perf_counter()
    for _ in range(batches):
        replay.sample(256)
    return batches / (time.perf_counter() - start)


def drop_from_page_cache(folders: list[Path]) -> None:
    for path in (file for folder in folders for file in folder.iterdir()):
        descriptor = os.open(path, os.O_RDONLY)
        try:
            os.posix_fadvise(descriptor, 0, 0, os.POSIX_FADV_DONTNEED)
        finally:
            os.close(descriptor)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=300_000)
    parser.add_argument("--budget-ratio", type=float, default=3.0, help="the version's device size over the budget")
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    torch.set_num_threads(1)

    version_bytes = args.rows * device_row_bytes(HOPPER)
    budget = int(version_bytes / args.budget_ratio)
    assert should_stream(args.rows, HOPPER, budget)
    with tempfile.TemporaryDirectory(prefix="replaybank-bench-streaming-") as scratch:
        root = Path(scratch)
        table = hopper_rows(args.rows)
        per_file = -(-args.rows // FILES)
        paths = []
        for number in range(FILES):
            paths.append(root / f"part-{number}.parquet")
            pq.write_table(table.slice(number * per_file, per_file), paths[-1])
        resident_data = arrays_from_arrow(table)
        del table

        started = time.perf_counter()
        folders = [parquet_to_columns(path, path.with_suffix(".columns"), HOPPER) for path in paths]
        conversion = time.perf_counter() - started
        mapped = MappedTransitions(folders)
        started = time.perf_counter()
        normalisation = streamed_normalisation(mapped)
        normalising = time.perf_counter() - started
        resident = ReplayBuffer.from_arrays(resident_data, normalisation, HOPPER.action, torch.device("cpu"), 0)

        best = dict.fromkeys(["resident", "streamed", "resident_cpu", "streamed_cpu", "resident_sampling", "streamed_sampling"], 0.0)

        def keep(name: str, rates: tuple[float, float]) -> None:
            best[name], best[f"{name}_cpu"] = max(best[name], rates[0]), max(best[f"{name}_cpu"], rates[1])

        for _ in range(args.rounds):
            keep("resident", steps_per_second(resident, normalisation, args.steps))
            with StreamingReplay(mapped, normalisation, HOPPER.action, torch.device("cpu"), 0) as streamed:
                keep("streamed", steps_per_second(streamed, normalisation, args.steps))
            best["resident_sampling"] = max(best["resident_sampling"], batches_per_second(resident, 20 * args.steps))
            with StreamingReplay(mapped, normalisation, HOPPER.action, torch.device("cpu"), 0) as streamed:
                best["streamed_sampling"] = max(best["streamed_sampling"], batches_per_second(streamed, 20 * args.steps))
        drop_from_page_cache(folders)
        with StreamingReplay(mapped, normalisation, HOPPER.action, torch.device("cpu"), 0) as streamed:
            cold, _ = steps_per_second(streamed, normalisation, args.steps)

    print(f"version: {args.rows} rows, {version_bytes / 1e6:.1f} MB on the device; budget {budget / 1e6:.1f} MB "
          f"({args.budget_ratio:g}x over): streams")  # fmt: skip
    print(f"one-off: conversion to columns {conversion:.2f} s, streamed normalisation {normalising:.2f} s")
    print(f"{'':36}{'resident':>12}{'streamed':>12}{'ratio':>8}")
    print(f"{'IQL steps/s (256x256, batch 256)':36}{best['resident']:12.1f}{best['streamed']:12.1f}"
          f"{best['streamed'] / best['resident']:8.2f}")  # fmt: skip
    print(f"{'IQL steps per CPU-second':36}{best['resident_cpu']:12.1f}{best['streamed_cpu']:12.1f}"
          f"{best['streamed_cpu'] / best['resident_cpu']:8.2f}")  # fmt: skip
    print(f"{'sampler alone, batches/s':36}{best['resident_sampling']:12.0f}{best['streamed_sampling']:12.0f}"
          f"{best['streamed_sampling'] / best['resident_sampling']:8.2f}")  # fmt: skip
    print(f"streamed after dropping the files from the page cache: {cold:.1f} steps/s "
          f"({cold / best['resident']:.2f} of resident)")  # fmt: skip


if __name__ == "__main__":
    main()
