"""Training throughput of 1, 2 and 4 workers on this machine, with torch's default threads and with ours.

    .venv/bin/python benchmarks/worker_throughput.py [--workers 1 2 4] [--steps 1500] [--rows 100000]

A `replaybank serve` and N `replaybank worker` processes run at once, each worker training one IQL job
(256x256 networks, batch 256, the defaults) on the same Hopper-shaped version. Throughput is the sum of
the jobs' gradient steps per second over the window in which all N trained at the same time, read from
the jobs' metric histories (a point every 50 steps, stamped by the worker). Two arms, alternated:
- `torch default`: each worker with `--threads` set to what torch takes by default (one per core), as
  workers ran before they chose their own count;
- `auto`: no `--threads`, so each worker takes its share of the cores and times its candidates.
The baseline is one worker alone in the `auto` arm: two workers on two cores should reach at least
0.9x its steps/s together.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from _common import HOPPER, hopper_rows, running_service

from schemas.jobs import JobPublic
from workers.client import ReplaybankClient

REPLAYBANK = str(Path(sys.executable).with_name("replaybank"))


def run_workers(client: ReplaybankClient, service_url: str, token: str, count: int, steps: int, threads: int | None) -> float:
    """Total gradient steps per second of `count` workers training at the same time."""
    jobs = [
        client.submit_job({"kind": "train", "algorithm": "iql", "dataset": "hopper", "steps": steps, "seed": seed})
        for seed in range(count)
    ]
    command = [REPLAYBANK, "worker", "--service", service_url, "--device", "cpu", "--eval-episodes", "0",
               "--progress-every", "50", "--max-jobs", "1", "--wait", "5"]  # fmt: skip
    if threads is not None:
        command += ["--threads", str(threads)]
    env = {key: value for key, value in os.environ.items() if key != "OMP_NUM_THREADS"} | {"REPLAYBANK_TOKEN": token}
    workers = [subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE) for _ in jobs]
    try:
        finished = [_wait(client, job.id) for job in jobs]
    finally:
        for worker in workers:
            worker.terminate()
        for worker in workers:
            worker.communicate(timeout=60)
    return _overlapping_rate(client, finished)


def _wait(client: ReplaybankClient, job_id: str) -> JobPublic:
    deadline = time.monotonic() + 3600
    while time.monotonic() < deadline:
        job = client.get_job(job_id)
        if job.status == "succeeded":
            return job
        if job.status in ("failed", "cancelled"):
            raise RuntimeError(f"job {job_id} {job.status}: {job.error}")
        time.sleep(1.0)
    raise RuntimeError(f"job {job_id} did not finish within an hour")


def _overlapping_rate(client: ReplaybankClient, jobs: list[JobPublic]) -> float:
    curves = []
    for job in jobs:
        points = [(point.time.timestamp(), point.step) for point in client.job_metrics(job.id) if point.time]
        curves.append(np.asarray(points, dtype=np.float64))
    start = max(curve[0, 0] for curve in curves)
    end = min(curve[-1, 0] for curve in curves)
    if end <= start:
        raise RuntimeError("the jobs never trained at the same time; give them more steps")
    steps = sum(float(np.interp(end, c[:, 0], c[:, 1]) - np.interp(start, c[:, 0], c[:, 1])) for c in curves)
    return steps / (end - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2, 4])
    parser.add_argument("--steps", type=int, default=1500, help="gradient steps of each job")
    parser.add_argument("--rows", type=int, default=100_000)
    args = parser.parse_args()
    import torch

    default_threads = torch.get_num_threads()
    arms = {"torch default": default_threads, "auto": None}
    results: dict[tuple[str, int], float] = {}
    with tempfile.TemporaryDirectory(prefix="replaybank-workers-") as folder, running_service(Path(folder) / "data") as service:
        with ReplaybankClient(service.url, service.token, cache=Path(folder) / "cache") as client:
            client.create_dataset("hopper", HOPPER)
            client.upload("hopper", hopper_rows(args.rows))
            token = client.create_token("bench-workers", ["worker"]).token
            for count in args.workers:
                for arm, threads in arms.items():
                    results[arm, count] = run_workers(client, service.url, token, count, args.steps, threads)
                    print(f"{count} worker(s), {arm:>13}: {results[arm, count]:7.1f} steps/s", flush=True)

    baseline = results["auto", args.workers[0]]
    print(f"\n{os.cpu_count()} cores; IQL 256x256, batch 256, {args.rows} rows; torch default = {default_threads} threads")
    print(f"{'workers':>7}  {'torch default':>14}  {'auto':>8}  {'auto / one alone':>16}")
    for count in args.workers:
        print(
            f"{count:>7}  {results['torch default', count]:>9.1f} /s  {results['auto', count]:>6.1f} /s"
            f"  {results['auto', count] / baseline:>15.2f}x"
        )


if __name__ == "__main__":
    main()
