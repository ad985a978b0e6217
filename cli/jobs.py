"""Commands on jobs: train and collect (submit one), jobs (list, show, cancel, metrics), watch."""

from __future__ import annotations

import sys
import time
from typing import TYPE_CHECKING, Any

import click

from cli.errors import reports_errors, validation_message
from cli.options import (
    param_hints,
    params_option,
    parse_params,
    parse_version,
    service_option,
    split_options,
    token_option,
    version_option,
    watch_option,
)
from cli.output import print_table
from schemas.algorithms import ALGORITHM_PARAMS

if TYPE_CHECKING:
    from schemas.jobs import JobCreate, JobPublic

POLL_SECONDS = 1.0
"""Pause before following a job again after its event stream broke."""


@click.command()
@service_option
@token_option
@click.argument("dataset")
@click.option("--algorithm", "-a", required=True, type=click.Choice(sorted(ALGORITHM_PARAMS)))
@version_option
@click.option("--steps", default=100_000, show_default=True, type=click.IntRange(min=1), help="Gradient steps.")
@click.option("--seed", default=0, show_default=True, type=click.IntRange(min=0))
@params_option
@click.option("--parent", default=None, help="Fine-tune from this policy (its full training state).")
@click.option(
    "--online-fraction",
    default=None,
    type=click.FloatRange(0.0, 1.0),
    help="Share of every batch drawn from rows policies collected (the rest from logged rows); default: all rows alike.",
)
@split_options("training never sees them, and the job's metrics gain validation metrics on them")
@click.option("--device", default="auto", show_default=True, type=click.Choice(["cpu", "cuda", "auto"]))
@watch_option
@reports_errors
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
    validation_fraction: float | None,
    split_seed: int,
    device: str,
    watch: bool,
) -> None:
    """Submit a training job on DATASET; prints the job id."""
    job = validated_job(
        kind="train",
        dataset=dataset,
        algorithm=algorithm,
        version=parse_version(version),
        steps=steps,
        seed=seed,
        params=parse_params(assignments, ALGORITHM_PARAMS[algorithm]),
        parent_policy=parent,
        online_fraction=online_fraction,
        split=None if validation_fraction is None else {"validation_fraction": validation_fraction, "seed": split_seed},
        device=device,
    )
    submit(service, token, job, watch)


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
@reports_errors
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
    if noise is not None and epsilon is not None:
        raise click.ClickException("choose one exploration: --noise (Gaussian) or --epsilon")
    exploration = {"kind": "gaussian", "sigma": noise} if noise is not None else None
    if epsilon is not None:
        exploration = {"kind": "epsilon", "epsilon": epsilon}
    options = {"policy": policy, "episodes": episodes, "steps": steps, "exploration": exploration, "chunk_steps": chunk_steps}
    job = validated_job(
        kind="collect",
        dataset=dataset,
        seed=seed,
        collect={key: value for key, value in options.items() if value is not None},
    )
    submit(service, token, job, watch)


@click.group(invoke_without_command=True)
@service_option
@token_option
@click.option("--status", default=None, type=click.Choice(["queued", "running", "succeeded", "failed", "cancelled"]))
@click.option("--dataset", default=None)
@click.option("--limit", default=50, show_default=True, type=click.IntRange(1, 1000))
@click.pass_context
@reports_errors
def jobs(context: click.Context, service: str, token: str | None, status: str | None, dataset: str | None, limit: int) -> None:
    """List jobs, newest first; `show`, `cancel` and `metrics` one."""
    context.obj = {"service": service, "token": token}
    if context.invoked_subcommand is not None:
        return
    from workers.client import ReplaybankClient

    with ReplaybankClient(service, token) as client:
        page = client.list_jobs(status=status, dataset=dataset, limit=limit)
    rows = [
        (
            job.id,
            job.kind,
            _what(job),
            f"{job.dataset}@{job.version}",
            job.status,
            f"{job.progress:.0%}",
            str(job.attempts),
            job.policy_id or "",
        )
        for job in page.data
    ]
    print_table(("id", "kind", "what", "data", "status", "progress", "attempts", "policy"), rows)
    if page.next:
        click.echo(f"... {page.count} jobs in all", err=True)


@jobs.command("show")
@click.argument("job_id")
@click.pass_obj
@reports_errors
def jobs_show(obj: dict[str, Any], job_id: str) -> None:
    """A job as JSON: status, progress, metrics, attempts, policy."""
    from workers.client import ReplaybankClient

    with ReplaybankClient(obj["service"], obj["token"]) as client:
        click.echo(client.get_job(job_id).model_dump_json(indent=2))


@jobs.command("cancel")
@click.argument("job_id")
@click.pass_obj
@reports_errors
def jobs_cancel(obj: dict[str, Any], job_id: str) -> None:
    """Cancel a job; a running one stops at its worker's next heartbeat."""
    from workers.client import ReplaybankClient

    with ReplaybankClient(obj["service"], obj["token"]) as client:
        job = client.cancel_job(job_id)
    click.echo(f"job {job.id} {job.status}")


@jobs.command("metrics")
@click.argument("job_id")
@click.pass_obj
@reports_errors
def jobs_metrics(obj: dict[str, Any], job_id: str) -> None:
    """The job's metric history (learning curves) as JSON lines."""
    from workers.client import ReplaybankClient

    with ReplaybankClient(obj["service"], obj["token"]) as client:
        for point in client.job_metrics(job_id):
            click.echo(point.model_dump_json())


@click.command()
@service_option
@token_option
@click.argument("job_id")
@reports_errors
def watch(service: str, token: str | None, job_id: str) -> None:
    """A live progress bar with the latest metrics until the job ends; exits non-zero unless it succeeded."""
    watch_job(service, token, job_id)


def validated_job(**fields: Any) -> JobCreate:
    """The job as the service will see it, checked here first so mistakes are named before anything is sent."""
    from pydantic import ValidationError

    from schemas.jobs import JobCreate

    try:
        return JobCreate.model_validate({key: value for key, value in fields.items() if value is not None})
    except ValidationError as error:
        model = ALGORITHM_PARAMS.get(fields.get("algorithm") or "")
        raise click.ClickException(validation_message(error, param_hints(model) if model else None)) from error


def submit(service: str, token: str | None, job: JobCreate, watch: bool) -> None:
    """Submit `job`, print its id alone on stdout (for scripts), and follow it when `watch`."""
    from workers.client import ReplaybankClient

    with ReplaybankClient(service, token) as client:
        submitted = client.submit_job(job)
    click.echo(f"job {submitted.id}: {submitted.kind} on {submitted.dataset}@{submitted.version} queued", err=True)
    click.echo(submitted.id)
    if watch:
        watch_job(service, token, submitted.id)


def watch_job(service: str, token: str | None, job_id: str) -> None:
    """A live bar with the latest metrics; follows server-sent events, polling if the stream breaks."""
    from tqdm import tqdm

    from schemas.jobs import FINISHED_STATUSES
    from workers.client import ReplaybankClient, ReplaybankError

    with ReplaybankClient(service, token) as client, tqdm(total=1.0, unit="", dynamic_ncols=True, file=sys.stderr) as bar:
        bar.bar_format = "{desc} {percentage:3.0f}%|{bar}| {elapsed}<{remaining} {postfix}"

        last_error: str | None = None

        def show(job: JobPublic) -> None:
            nonlocal last_error
            # An active job's error says why its last attempt ended (the summary below says why a job ended).
            if job.error and job.error != last_error and job.status not in FINISHED_STATUSES:
                bar.write(job.error, file=sys.stderr)
            last_error = job.error
            bar.set_description_str(f"{job.id} {job.status}", refresh=False)
            shown = {name: f"{value:.4g}" for name, value in list(job.metrics.items())[:6]}
            bar.set_postfix({"step": job.step, **shown}, refresh=False)
            bar.update(job.progress - bar.n)

        job = client.get_job(job_id)
        show(job)
        while job.status not in FINISHED_STATUSES:
            try:
                for job in client.job_events(job_id):
                    show(job)
            except ReplaybankError as error:
                if not error.transient:
                    raise
                time.sleep(POLL_SECONDS)
            job = client.get_job(job_id)
            show(job)
    summary = f"job {job.id} {job.status}"
    if job.policy_id:
        summary += f": policy {job.policy_id}"
    if job.error:
        summary += f"\n{job.error.strip().splitlines()[0]}"
    click.echo(summary)
    if job.status != "succeeded":
        raise SystemExit(1)


def _what(job: JobPublic) -> str:
    if job.collect is not None:
        return f"policy {job.collect.policy}"
    if job.evaluate is not None:
        return f"policy {job.evaluate.policy}"
    return job.algorithm or ""


commands: list[click.Command] = [train, collect, jobs, watch]
