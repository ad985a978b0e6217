"""`replaybank worker`: claim and run jobs until stopped."""

from __future__ import annotations

import logging
import sys
from pathlib import Path

import click

from cli.options import memory_budget_option, service_option, token_option


@click.command()
@service_option
@token_option
@click.option("--device", type=click.Choice(["cpu", "cuda"]), default=None, help="Default: CUDA when torch sees a GPU.")
@click.option("--name", default=None, help="A name for job records and logs (default: host-pid).")
@click.option("--wait", "wait_seconds", default=20.0, show_default=True, type=click.FloatRange(0, 60), help="Seconds one claim waits for a job.")
@click.option("--checkpoint-seconds", default=60.0, show_default=True, type=click.FloatRange(min=0), help="Seconds between checkpoints.")
@click.option("--progress-every", default=200, show_default=True, type=click.IntRange(min=1), help="Gradient steps between progress reports.")
@click.option("--eval-episodes", default=5, show_default=True, type=click.IntRange(min=0), help="Episodes to evaluate each trained policy (0: none).")
@click.option("--max-jobs", default=None, type=click.IntRange(min=1), help="Exit after this many jobs.")
@click.option("--exit-when-idle", is_flag=True, help="Exit when a claim finds no job.")
@click.option("--threads", default=None, type=click.IntRange(min=1), help="torch CPU threads (default: the fastest count within this worker's share of the cores).")
@click.option("--cache-dir", default=None, type=click.Path(file_okay=False), help="Snapshot file cache (default: REPLAYBANK_CACHE_DIR or ~/.cache/replaybank).")
@memory_budget_option
def worker(
    service: str,
    token: str | None,
    device: str | None,
    name: str | None,
    wait_seconds: float,
    checkpoint_seconds: float,
    progress_every: int,
    eval_episodes: int,
    max_jobs: int | None,
    exit_when_idle: bool,
    threads: int | None,
    cache_dir: str | None,
    memory_budget: int | None,
) -> None:
    """Claim and run jobs (train, collect, evaluate) until SIGTERM; checkpoints and gives the job back on the way out."""
    if not token:
        raise click.ClickException("a worker needs a token with the worker scope (REPLAYBANK_TOKEN or --token-file PATH)")
    # torch and the algorithms load only where a worker runs
    from workers.runtime.loop import WorkerOptions, run_worker

    fields = {
        "name": name,
        "wait_seconds": wait_seconds,
        "checkpoint_seconds": checkpoint_seconds,
        "progress_every": progress_every,
        "eval_episodes": eval_episodes,
        "max_jobs": max_jobs,
        "exit_when_idle": exit_when_idle,
        "threads": threads,
        "cache_dir": Path(cache_dir) if cache_dir else None,
        "memory_budget": memory_budget,
    }
    options = WorkerOptions(**{key: value for key, value in fields.items() if value is not None})
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(name)s %(levelname)s %(message)s", stream=sys.stderr)
    # the worker's own steps at INFO; libraries (httpx: a line per heartbeat, ONNX export passes) only warnings
    logging.getLogger("replaybank").setLevel(logging.INFO)
    ran = run_worker(service, token, device, options)
    click.echo(f"worker stopped after {ran} job(s)", err=True)


commands: list[click.Command] = [worker]
