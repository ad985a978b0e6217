"""What the job commands of the `replaybank` console script do: one function per command.

Each talks to the service through `JobsClient` and prints for a person; failures become one-line
`click.ClickException`s (see `reports_errors`).
"""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click
from pydantic import ValidationError

from schemas.jobs import FINISHED_STATUSES, EvaluateOptions, JobCreate, JobPublic
from workers.client import ReplaybankError
from workers.data_commands import reports_errors
from workers.jobs_client import JobsClient
from workers.local import parse_params

if TYPE_CHECKING:
    from workers.worker import WorkerOptions

POLL_SECONDS = 1.0


def _client(service: str, token: str | None) -> JobsClient:
    return JobsClient(service, token)


def _validated(**fields: Any) -> JobCreate:
    """The job as the service will see it, checked here first so mistakes are named before anything is sent."""
    try:
        return JobCreate.model_validate({key: value for key, value in fields.items() if value is not None})
    except ValidationError as error:
        problems = "; ".join(
            f"{'.'.join(str(part) for part in item['loc']) or 'job'}: {item['msg']}" for item in error.errors()
        )
        raise click.ClickException(problems) from error


def start_worker(service: str, token: str | None, device: str | None, options: WorkerOptions) -> None:
    from workers.worker import run_worker  # torch and the algorithms load only where a worker runs

    if not token:
        raise click.ClickException("a worker needs a token with the worker scope (--token or REPLAYBANK_TOKEN)")
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(name)s %(levelname)s %(message)s", stream=sys.stderr)
    # the worker's own steps at INFO; libraries (httpx: a line per heartbeat, ONNX export passes) only warnings
    logging.getLogger("replaybank").setLevel(logging.INFO)
    ran = run_worker(service, token, device, options)
    click.echo(f"worker stopped after {ran} job(s)", err=True)


@reports_errors
def submit_train(
    service: str,
    token: str | None,
    dataset: str,
    algorithm: str,
    version: str,
    steps: int,
    seed: int,
    assignments: Iterable[str],
    parent: str | None,
    online_fraction: float | None,
    device: str,
    watch: bool,
) -> None:
    job = _validated(
        kind="train",
        dataset=dataset,
        algorithm=algorithm,
        version=_version(version),
        steps=steps,
        seed=seed,
        params=parse_params(assignments),
        parent_policy=parent,
        online_fraction=online_fraction,
        device=device,
    )
    _submit(service, token, job, watch)


@reports_errors
def submit_collect(
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
    if noise is not None and epsilon is not None:
        raise click.ClickException("choose one exploration: --noise (Gaussian) or --epsilon")
    exploration = {"kind": "gaussian", "sigma": noise} if noise is not None else None
    if epsilon is not None:
        exploration = {"kind": "epsilon", "epsilon": epsilon}
    options = {"policy": policy, "episodes": episodes, "steps": steps, "exploration": exploration, "chunk_steps": chunk_steps}
    job = _validated(
        kind="collect",
        dataset=dataset,
        seed=seed,
        collect={key: value for key, value in options.items() if value is not None},
    )
    _submit(service, token, job, watch)


@reports_errors
def submit_evaluate(service: str, token: str | None, policy: str, episodes: int, seed: int, watch: bool) -> None:
    with _client(service, token) as client:
        dataset = client.get_policy(policy).dataset
    job = _validated(kind="evaluate", dataset=dataset, seed=seed, evaluate=EvaluateOptions(policy=policy, episodes=episodes))
    _submit(service, token, job, watch)


def _version(text: str) -> int | str:
    return int(text) if text.isdigit() else text


def _submit(service: str, token: str | None, job: JobCreate, watch: bool) -> None:
    with _client(service, token) as client:
        submitted = client.submit_job(job)
    click.echo(f"job {submitted.id}: {submitted.kind} on {submitted.dataset}@{submitted.version} queued", err=True)
    click.echo(submitted.id)
    if watch:
        watch_job(service, token, submitted.id)


@reports_errors
def list_jobs(service: str, token: str | None, status: str | None, dataset: str | None, limit: int) -> None:
    with _client(service, token) as client:
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
    _table(("id", "kind", "what", "data", "status", "progress", "attempts", "policy"), rows)
    if page.next:
        click.echo(f"... {page.count} jobs in all", err=True)


@reports_errors
def show_job(service: str, token: str | None, job_id: str) -> None:
    with _client(service, token) as client:
        click.echo(client.get_job(job_id).model_dump_json(indent=2))


@reports_errors
def cancel_job(service: str, token: str | None, job_id: str) -> None:
    with _client(service, token) as client:
        job = client.cancel_job(job_id)
    click.echo(f"job {job.id} {job.status}")


@reports_errors
def job_metrics(service: str, token: str | None, job_id: str) -> None:
    """Prints the metric history as JSON lines (one point per line)."""
    with _client(service, token) as client:
        for point in client.job_metrics(job_id):
            click.echo(point.model_dump_json())


@reports_errors
def watch_job(service: str, token: str | None, job_id: str) -> None:
    """A live bar with the latest metrics; follows server-sent events, polling if the stream breaks."""
    from tqdm import tqdm

    with _client(service, token) as client, tqdm(total=1.0, unit="", dynamic_ncols=True, file=sys.stderr) as bar:
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
                if error.status not in (0, 502, 503, 504):
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


@reports_errors
def list_policies(service: str, token: str | None, dataset: str | None) -> None:
    with _client(service, token) as client:
        policies = client.list_policies(dataset=dataset)
    rows = []
    for policy in policies:
        evaluations = policy.card.get("evaluations") or []
        last_return = f"{evaluations[-1]['mean']:.1f}" if evaluations else ""
        rows.append(
            (policy.id, policy.algorithm, f"{policy.dataset}@{policy.version}", policy.parent_policy or "", last_return, policy.created_at.strftime("%Y-%m-%d %H:%M"))
        )
    _table(("id", "algorithm", "data", "parent", "return", "created"), rows)


@reports_errors
def show_policy(service: str, token: str | None, policy_id: str) -> None:
    with _client(service, token) as client:
        click.echo(client.get_policy(policy_id).model_dump_json(indent=2))


@reports_errors
def delete_policy(service: str, token: str | None, policy_id: str) -> None:
    with _client(service, token) as client:
        client.delete_policy(policy_id)
    click.echo(f"policy {policy_id} deleted")


@reports_errors
def download_policy(service: str, token: str | None, policy_id: str, out_dir: str, formats: Iterable[str]) -> None:
    with _client(service, token) as client:
        written = client.download_policy(policy_id, Path(out_dir), tuple(formats))
    for path in written.values():
        click.echo(str(path))


def _what(job: JobPublic) -> str:
    if job.collect is not None:
        return f"policy {job.collect.policy}"
    if job.evaluate is not None:
        return f"policy {job.evaluate.policy}"
    return job.algorithm or ""


def _table(header: tuple[str, ...], rows: list[tuple[str, ...]]) -> None:
    widths = [max(len(str(cell)) for cell in column) for column in zip(header, *rows)]
    for row in (header, *rows):
        click.echo("  ".join(str(cell).ljust(width) for cell, width in zip(row, widths)).rstrip())

