"""Job latency: from submitting a training job to its first gradient step, with a cold and a warm cache.

    .venv/bin/python benchmarks/job_latency.py [--rows 1000000]

A `replaybank serve` and one `replaybank worker` (already waiting on its claim) run as subprocesses.
The same IQL job is submitted twice on a Hopper-shaped version: the first pull fills the worker's
empty snapshot cache (cold), the second finds every file there (warm). The first gradient step's time
is the worker's timestamp on the job's first metric point (it reports every step here). The baseline,
measured in the same run, is what the work needs at the least: `pyarrow.parquet.read_table` of the
same files plus copying the columns into tensors; the ratios say how much the job machinery adds.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import torch
from _common import HOPPER, best_of_rounds, hopper_rows, running_service

from schemas.jobs import JobPublic
from workers.client import ReplaybankClient

STEPS = 20
PARAMS = {"hidden_sizes": [256, 256], "batch_size": 256}


def first_step_latency(client: ReplaybankClient) -> tuple[float, JobPublic]:
    """Seconds from submission to the end of the job's first gradient step."""
    submitted_at = datetime.now(timezone.utc)
    job = client.submit_job(
        {"kind": "train", "algorithm": "iql", "dataset": "hopper", "steps": STEPS, "seed": 0, "params": PARAMS}
    )
    deadline = time.monotonic() + 1800
    while True:
        job = client.get_job(job.id)
        if job.status in ("failed", "cancelled"):
            raise RuntimeError(f"job {job.id} {job.status}: {job.error}")
        if job.status == "succeeded":
            break
        if time.monotonic() > deadline:
            raise RuntimeError(f"job {job.id} did not finish within 30 minutes")
        time.sleep(0.5)
    first = client.job_metrics(job.id)[0]
    assert first.step == 1 and first.time is not None
    return (first.time - submitted_at).total_seconds(), job


def raw_read_to_tensors(paths: list[Path]) -> None:
    table = pq.read_table(paths[0]) if len(paths) == 1 else pq.ParquetDataset(paths).read()
    for name in ("observation", "action", "next_observation"):
        column = table.column(name).combine_chunks()
        values = column.values.to_numpy(zero_copy_only=False)
        torch.tensor(values.reshape(len(column), -1))
    for name in ("reward", "terminal", "truncated"):
        torch.tensor(table.column(name).to_numpy(zero_copy_only=False).astype(np.float32))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--threads", type=int, default=1, help="torch threads of the worker and the baseline")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    with tempfile.TemporaryDirectory(prefix="replaybank-latency-") as folder, running_service(Path(folder) / "data") as service:
        cache = Path(folder) / "worker-cache"
        with ReplaybankClient(service.url, service.token, cache=Path(folder) / "user-cache") as client:
            client.create_dataset("hopper", HOPPER)
            client.upload("hopper", hopper_rows(args.rows))
            worker_token = client.create_token("latency-worker", ["worker"]).token
            worker = subprocess.Popen(
                [
                    str(Path(sys.executable).with_name("replaybank")), "worker", "--service", service.url,
                    "--token", worker_token, "--device", "cpu", "--progress-every", "1", "--eval-episodes", "0",
                    "--max-jobs", "2", "--wait", "5", "--threads", str(args.threads), "--cache-dir", str(cache),
                ],  # fmt: skip
                env={**os.environ, "OMP_NUM_THREADS": str(args.threads)},
                stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE,
            )
            try:
                # let the worker import torch and start waiting on its claim: startup is not job latency
                time.sleep(10)
                cold, _ = first_step_latency(client)
                warm, _ = first_step_latency(client)
            finally:
                worker.terminate()
                _, errors = worker.communicate(timeout=60)
                if worker.returncode not in (0, -15):
                    print(errors.decode()[-3000:], file=sys.stderr)
            # cached files are named by their digest; lock and partial files have a suffix
            files = sorted(path for path in cache.rglob("*") if path.is_file() and "." not in path.name)
            [baseline] = best_of_rounds(3, [lambda: raw_read_to_tensors(files)])

    print(f"{args.rows} rows, IQL {PARAMS['hidden_sizes']} batch {PARAMS['batch_size']}, {args.threads} thread(s)")
    print(f"baseline (read_table of the same files + tensors): {baseline:8.2f} s")
    print(f"submit -> first gradient step, cold cache:         {cold:8.2f} s   {cold / baseline:6.1f}x baseline")
    print(f"submit -> first gradient step, warm cache:         {warm:8.2f} s   {warm / baseline:6.1f}x baseline")
    print(f"warm / cold: {warm / cold:.2f}")


if __name__ == "__main__":
    main()
