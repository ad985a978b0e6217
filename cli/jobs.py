"""Commands: jobs, workers and policies. Each imports what it needs inside the command."""

from __future__ import annotations

from pathlib import Path

import click

from cli.data import service_option, token_option, version_option
from schemas.algorithms import ALGORITHM_PARAMS

commands: list[click.Command] = []

ALGORITHM_CHOICES = click.Choice(sorted(ALGORITHM_PARAMS))
DEVICE_CHOICES = click.Choice(["cpu", "cuda", "auto"])
watch_option = click.option("--watch/--no-watch", default=False, show_default=True, help="Follow the job until it ends.")


def _command(function: click.Command) -> click.Command:
    commands.append(function)
    return function


@_command
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
@click.option("--threads", default=None, type=click.IntRange(min=1), help="torch CPU threads (default: torch's).")
@click.option("--cache-dir", default=None, type=click.Path(file_okay=False), help="Snapshot file cache (default: REPLAYBANK_CACHE_DIR or ~/.cache/replaybank).")
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
) -> None:
    """Claim and run jobs (train, collect, evaluate) until SIGTERM; checkpoints and gives the job back on the way out."""
    from workers.job_commands import start_worker
    from workers.worker import WorkerOptions

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
    }
    start_worker(service, token, device, WorkerOptions(**{key: value for key, value in fields.items() if value is not None}))


@_command
@click.command()
@service_option
@token_option
@click.argument("dataset")
@click.option("--algorithm", "-a", required=True, type=ALGORITHM_CHOICES)
@version_option
@click.option("--steps", default=100_000, show_default=True, type=click.IntRange(min=1), help="Gradient steps.")
@click.option("--seed", default=0, show_default=True, type=click.IntRange(min=0))
@click.option("--param", "-p", "assignments", multiple=True, metavar="KEY=VALUE", help="An algorithm parameter (repeatable).")
@click.option("--parent", default=None, help="Fine-tune from this policy (its full training state).")
@click.option(
    "--online-fraction",
    default=None,
    type=click.FloatRange(0.0, 1.0),
    help="Share of every batch drawn from rows policies collected (the rest from logged rows); default: all rows alike.",
)
@click.option("--device", default="auto", show_default=True, type=DEVICE_CHOICES)
@watch_option
def train(
    service: str,
    token: str | None,
    dataset: str,
    algorithm: str,
    version: str,
    steps: int,
    seed: int,
    assignments: tuple[str, ...],
    parent: str | None,
    online_fraction: float | None,
    device: str,
    watch: bool,
) -> None:
    """Submit a training job on DATASET; prints the job id."""
    from workers.job_commands import submit_train

    submit_train(service, token, dataset, algorithm, version, steps, seed, assignments, parent, online_fraction, device, watch)


@_command
@click.command()
@service_option
@token_option
@click.argument("dataset")
@click.option("--policy", required=True, help="The policy to run in the dataset's environment.")
@click.option("--episodes", default=None, type=click.IntRange(min=1), help="Episodes to collect (or --steps).")
@click.option("--steps", default=None, type=click.IntRange(min=1), help="Environment steps to collect (or --episodes).")
@click.option("--noise", default=None, type=click.FloatRange(0, 10), help="Gaussian exploration: sigma as a share of the half-range.")
@click.option("--epsilon", default=None, type=click.FloatRange(0, 1), help="Epsilon exploration: chance of a random action.")
@click.option("--chunk-steps", default=5_000, show_default=True, type=click.IntRange(min=1), help="Rows per uploaded chunk (closed on an episode end).")
@click.option("--seed", default=0, show_default=True, type=click.IntRange(min=0))
@watch_option
def collect(
    service: str,
    token: str | None,
    dataset: str,
    policy: str,
    episodes: int | None,
    steps: int | None,
    noise: float | None,
    epsilon: float | None,
    chunk_steps: int,
    seed: int,
    watch: bool,
) -> None:
    """Submit a collect job: a worker runs POLICY and appends what it saw to DATASET, chunk by chunk."""
    from workers.job_commands import submit_collect

    submit_collect(service, token, dataset, policy, episodes, steps, noise, epsilon, chunk_steps, seed, watch)


@_command
@click.group(invoke_without_command=True)
@service_option
@token_option
@click.option("--status", default=None, type=click.Choice(["queued", "running", "succeeded", "failed", "cancelled"]))
@click.option("--dataset", default=None)
@click.option("--limit", default=50, show_default=True, type=click.IntRange(1, 1000))
@click.pass_context
def jobs(context: click.Context, service: str, token: str | None, status: str | None, dataset: str | None, limit: int) -> None:
    """List jobs, newest first; `show`, `cancel` and `metrics` one."""
    context.obj = {"service": service, "token": token}
    if context.invoked_subcommand is None:
        from workers.job_commands import list_jobs

        list_jobs(service, token, status, dataset, limit)


@jobs.command("show")
@click.argument("job_id")
@click.pass_obj
def jobs_show(obj: dict[str, str | None], job_id: str) -> None:
    """A job as JSON: status, progress, metrics, attempts, policy."""
    from workers.job_commands import show_job

    show_job(obj["service"], obj["token"], job_id)  # type: ignore[arg-type]


@jobs.command("cancel")
@click.argument("job_id")
@click.pass_obj
def jobs_cancel(obj: dict[str, str | None], job_id: str) -> None:
    """Cancel a job; a running one stops at its worker's next heartbeat."""
    from workers.job_commands import cancel_job

    cancel_job(obj["service"], obj["token"], job_id)  # type: ignore[arg-type]


@jobs.command("metrics")
@click.argument("job_id")
@click.pass_obj
def jobs_metrics(obj: dict[str, str | None], job_id: str) -> None:
    """The job's metric history (learning curves) as JSON lines."""
    from workers.job_commands import job_metrics

    job_metrics(obj["service"], obj["token"], job_id)  # type: ignore[arg-type]


@_command
@click.command()
@service_option
@token_option
@click.argument("job_id")
def watch(service: str, token: str | None, job_id: str) -> None:
    """A live progress bar with the latest metrics until the job ends; exits non-zero unless it succeeded."""
    from workers.job_commands import watch_job

    watch_job(service, token, job_id)


@_command
@click.group(invoke_without_command=True)
@service_option
@token_option
@click.option("--dataset", default=None)
@click.pass_context
def policies(context: click.Context, service: str, token: str | None, dataset: str | None) -> None:
    """List trained policies; `show`, `evaluate` and `delete` one."""
    context.obj = {"service": service, "token": token}
    if context.invoked_subcommand is None:
        from workers.job_commands import list_policies

        list_policies(service, token, dataset)


@policies.command("show")
@click.argument("policy_id")
@click.pass_obj
def policies_show(obj: dict[str, str | None], policy_id: str) -> None:
    """A policy with its card as JSON."""
    from workers.job_commands import show_policy

    show_policy(obj["service"], obj["token"], policy_id)  # type: ignore[arg-type]


@policies.command("evaluate")
@click.argument("policy_id")
@click.option("--episodes", default=10, show_default=True, type=click.IntRange(min=1))
@click.option("--seed", default=0, show_default=True, type=click.IntRange(min=0))
@watch_option
@click.pass_obj
def policies_evaluate(obj: dict[str, str | None], policy_id: str, episodes: int, seed: int, watch: bool) -> None:
    """Submit an evaluate job: a worker runs the policy in its dataset's environment; returns go on its card."""
    from workers.job_commands import submit_evaluate

    submit_evaluate(obj["service"], obj["token"], policy_id, episodes, seed, watch)  # type: ignore[arg-type]


@policies.command("delete")
@click.argument("policy_id")
@click.pass_obj
def policies_delete(obj: dict[str, str | None], policy_id: str) -> None:
    """Delete a policy and its files (admin)."""
    from workers.job_commands import delete_policy

    delete_policy(obj["service"], obj["token"], policy_id)  # type: ignore[arg-type]


@_command
@click.command()
@service_option
@token_option
@click.argument("policy_id")
@click.option("--out", "out_dir", required=True, type=click.Path(file_okay=False), help="Folder for the files.")
@click.option(
    "--format",
    "formats",
    multiple=True,
    default=["onnx", "torch", "card"],
    show_default=True,
    type=click.Choice(["onnx", "torch", "card", "state"]),
    help="Which files (repeatable).",
)
def download(service: str, token: str | None, policy_id: str, out_dir: str, formats: tuple[str, ...]) -> None:
    """Download a policy: policy.onnx, policy.pt2 and card.json in --out, as `fit --out` writes them."""
    from workers.job_commands import download_policy

    download_policy(service, token, policy_id, out_dir, formats)
