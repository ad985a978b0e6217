"""Commands on sweeps: sweep (submit a grid, and follow it), leaderboard, sweeps (list, cancel)."""

from __future__ import annotations

import json
import time
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

import click

from cli.errors import reports_errors, validation_message
from cli.options import list_item_type, parse_version, service_option, token_option, version_option
from cli.output import number, print_table
from schemas.algorithms import ALGORITHM_PARAMS

if TYPE_CHECKING:
    from schemas.sweeps import SweepCreate, SweepDetail, SweepPublic
    from workers.client import ReplaybankClient

WATCH_POLL_SECONDS = 2.0
"""How often `sweep --watch` asks for the sweep's counts (a sweep has no event stream)."""


@click.command()
@service_option
@token_option
@click.argument("dataset")
@click.option(
    "--algorithm", "-a", "algorithms", required=True, multiple=True, type=click.Choice(sorted(ALGORITHM_PARAMS)),
    help="An algorithm to train (repeatable).",
)  # fmt: skip
@click.option(
    "--param", "-p", "assignments", multiple=True, metavar="KEY=V1,V2",
    help="Values to sweep for a parameter (repeatable), e.g. -p expectile=0.7,0.9; lists in brackets: "
    "-p hidden_sizes=[64,64],[256,256]. Each algorithm that has the parameter tries every value.",
)  # fmt: skip
@click.option("--seeds", default="0", show_default=True, help="Seeds, comma-separated: each grid point trains once per seed.")
@click.option("--steps", default=100_000, show_default=True, type=click.IntRange(min=1), help="Gradient steps of each train job.")
@version_option
@click.option("--validation-fraction", default=0.1, show_default=True, type=click.FloatRange(0.0, 0.9), help="Share of episodes held out of training and estimated on (0: none held out).")
@click.option("--split-seed", default=0, show_default=True, type=click.IntRange(min=0), help="Which episodes are held out.")
@click.option("--method", default="fqe", show_default=True, type=click.Choice(["fqe", "model"]), help="How each policy's return is estimated.")
@click.option("--ope-steps", default=None, type=click.IntRange(min=1), help="fqe: gradient steps (default 20,000); model: rollout horizon.")
@click.option("--discount", default=0.99, show_default=True, type=click.FloatRange(0.0, 1.0, min_open=True, max_open=True))
@click.option("--eval-episodes", default=10, show_default=True, type=click.IntRange(min=1), help="Episodes of each environment evaluation, where the dataset has an env_id.")
@click.option("--device", default="auto", show_default=True, type=click.Choice(["cpu", "cuda", "auto"]))
@click.option("--watch/--no-watch", default=False, show_default=True, help="Follow the sweep until its jobs end, then print the leaderboard.")
@reports_errors
def sweep(
    service: str,
    token: str | None,
    dataset: str,
    algorithms: tuple[str, ...],
    assignments: tuple[str, ...],
    seeds: str,
    steps: int,
    version: str,
    validation_fraction: float,
    split_seed: int,
    method: str,
    ope_steps: int | None,
    discount: float,
    eval_episodes: int,
    device: str,
    watch: bool,
) -> None:
    """Submit a sweep on DATASET: a train job per algorithm, parameter values and seed, each policy then
    estimated on the held-out episodes; prints the sweep id. With --watch, follows it and prints the leaderboard."""
    from workers.client import ReplaybankClient

    created = validated_sweep(
        dataset=dataset,
        version=parse_version(version),
        split={"validation_fraction": validation_fraction, "seed": split_seed},
        algorithms=list(algorithms),
        params=parse_grid(assignments),
        seeds=parse_seeds(seeds),
        steps=steps,
        method=method,
        ope_steps=ope_steps,
        discount=discount,
        eval_episodes=eval_episodes,
        device=device,
    )
    with ReplaybankClient(service, token) as client:
        submitted = client.submit_sweep(created)
        click.echo(f"sweep {submitted.id}: {submitted.train.total} train jobs on {submitted.dataset}@{submitted.version} queued", err=True)
        click.echo(submitted.id)
        if watch:
            finished = follow(client, submitted.id)
            print_leaderboard(finished)
            if finished.status != "finished":
                raise SystemExit(1)


@click.command()
@service_option
@token_option
@click.argument("sweep_id")
@click.option("--json", "as_json", is_flag=True, help="The sweep and its leaderboard as JSON.")
@reports_errors
def leaderboard(service: str, token: str | None, sweep_id: str, as_json: bool) -> None:
    """A sweep's policies ranked by their estimate, with its interval and the environment's return when known."""
    from workers.client import ReplaybankClient

    with ReplaybankClient(service, token) as client:
        found = client.get_sweep(sweep_id)
    if as_json:
        click.echo(found.model_dump_json(indent=2))
    else:
        print_leaderboard(found)


@click.group(invoke_without_command=True)
@service_option
@token_option
@click.option("--dataset", default=None)
@click.pass_context
@reports_errors
def sweeps(context: click.Context, service: str, token: str | None, dataset: str | None) -> None:
    """List sweeps, newest first; `cancel` one."""
    context.obj = {"service": service, "token": token}
    if context.invoked_subcommand is not None:
        return
    from workers.client import ReplaybankClient

    with ReplaybankClient(service, token) as client:
        listed = client.list_sweeps(dataset=dataset)
    rows = [
        (item.id, f"{item.dataset}@{item.version}", ",".join(item.algorithms), item.status, progress_line(item))
        for item in listed
    ]
    print_table(("id", "data", "algorithms", "status", "progress"), rows)


@sweeps.command("cancel")
@click.argument("sweep_id")
@click.pass_obj
@reports_errors
def sweeps_cancel(obj: dict[str, Any], sweep_id: str) -> None:
    """Cancel a sweep: every unfinished job of it is cancelled, and no evaluation follows."""
    from workers.client import ReplaybankClient

    with ReplaybankClient(obj["service"], obj["token"]) as client:
        cancelled = client.cancel_sweep(sweep_id)
    click.echo(f"sweep {cancelled.id} {cancelled.status}: {progress_line(cancelled)}")


def parse_grid(assignments: Iterable[str]) -> dict[str, list[Any]]:
    """`key=v1,v2` strings as a grid: the values are read as one JSON list when they parse as one
    (`0.7,0.9`, `[64,64],[256,256]`), else as comma-separated text (`gaussian,deterministic`). A key given
    again adds its values."""
    grid: dict[str, list[Any]] = {}
    for assignment in assignments:
        key, separator, text = assignment.partition("=")
        key = key.strip()
        if not separator or not key or not text.strip():
            raise click.BadParameter(f"{assignment!r} is not key=values, e.g. -p expectile=0.7,0.9", param_hint="--param")
        try:
            values = json.loads(f"[{text}]")
        except json.JSONDecodeError:
            values = [part.strip() for part in text.split(",") if part.strip()]
        grid.setdefault(key, []).extend(values)
    return grid


def parse_seeds(text: str) -> list[int]:
    try:
        return [int(part) for part in text.split(",") if part.strip()]
    except ValueError as error:
        raise click.BadParameter(f"{text!r} is not comma-separated integers, e.g. 0,1,2", param_hint="--seeds") from error


def validated_sweep(**fields: Any) -> SweepCreate:
    """The sweep as the service will see it, checked here first so mistakes are named before anything is sent."""
    from pydantic import ValidationError

    from schemas.sweeps import SweepCreate

    try:
        return SweepCreate.model_validate({key: value for key, value in fields.items() if value is not None})
    except ValidationError as error:
        raise click.ClickException(validation_message(error, _list_hints(fields.get("algorithms") or []))) from error


def _list_hints(algorithms: Iterable[str]) -> dict[str, str]:
    """What a list-typed parameter takes on the command line, where one value is itself a list."""
    hints = {}
    for algorithm in algorithms:
        for name, field in ALGORITHM_PARAMS[algorithm].model_fields.items():
            if list_item_type(field.annotation) is not None:
                hints[name] = f"each value is a list, in brackets: -p {name}=[64,64],[256,256]"
    return hints


def follow(client: ReplaybankClient, sweep_id: str) -> SweepDetail:
    """Say on stderr how the sweep's jobs stand each time that changes, until it is no longer running."""
    shown = ""
    while True:
        found = client.get_sweep(sweep_id)
        line = f"sweep {found.id} {found.status}: {progress_line(found)}"
        if line != shown:
            click.echo(line, err=True)
            shown = line
        if found.status != "running":
            return found
        time.sleep(WATCH_POLL_SECONDS)


def progress_line(found: SweepPublic) -> str:
    parts = []
    for role, counts in (("train", found.train), ("evaluations", found.evaluations)):
        done = counts.succeeded + counts.failed + counts.cancelled
        text = f"{role} {done}/{counts.total} done"
        extra = [f"{value} {name}" for name, value in (("running", counts.running), ("failed", counts.failed)) if value]
        parts.append(text + (f" ({', '.join(extra)})" if extra else ""))
    return ", ".join(parts)


def print_leaderboard(found: SweepDetail) -> None:
    """rank, policy, algorithm, params, estimate [low, high], environment return; then the agreement summary."""
    rows = []
    for entry in found.leaderboard.entries:
        params = ",".join(f"{name}={json.dumps(value)}" for name, value in entry.params.items()) or "-"
        if entry.estimate is not None:
            estimate = f"{number(entry.estimate)} [{number(entry.low)}, {number(entry.high)}]"
        else:
            estimate = entry.error.splitlines()[0][:60] if entry.error else (entry.ope_status or entry.train_status)
        rows.append(
            (
                str(entry.rank) if entry.rank is not None else "-",
                entry.policy_id or entry.train_job,
                entry.algorithm,
                f"{params} seed={entry.seed}",
                estimate,
                number(entry.env_return),
            )
        )
    print_table(("rank", "policy", "algorithm", "params", f"{found.method} estimate [low, high]", "env return"), rows)
    board = found.leaderboard
    if board.compared:
        click.echo(
            f"over {board.compared} policies with an environment return: spearman {number(board.spearman)}, "
            f"regret@1 {number(board.regret_at_1)}"
        )


commands: list[click.Command] = [sweep, leaderboard, sweeps]
