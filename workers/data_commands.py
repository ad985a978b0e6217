"""What the data commands of the `replaybank` console script do: one function per command.

Each function talks to the service through `ReplaybankClient` and prints for a person. Every failure
becomes a `click.ClickException`, so the command prints the service's message and exits non-zero
without a traceback.
"""

from __future__ import annotations

import functools
import json
import sys
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any, ParamSpec, TypeVar

import click
import pyarrow as pa

from schemas.dataset import ContinuousActionSpec, DatasetSpec, DiscreteActionSpec, ObservationSpec
from workers.cache import ChecksumMismatch
from workers.client import Progress, ReplaybankClient, ReplaybankError
from workers.formats import FormatError

P = ParamSpec("P")
R = TypeVar("R")


def reports_errors(function: Callable[P, R]) -> Callable[P, R]:
    """Turn the failures a user can cause or fix into a one-line message and a non-zero exit."""

    @functools.wraps(function)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return function(*args, **kwargs)
        except ReplaybankError as error:
            where = f" ({error.field})" if error.field else ""
            raise click.ClickException(f"{error.message}{where} [{error.status} {error.code}]") from error
        except FormatError as error:
            where = f" ({error.field})" if error.field else ""
            raise click.ClickException(f"{error}{where}") from error
        except BrokenPipeError:
            raise  # the reader of our output went away (`| head`): click ends quietly
        except (ChecksumMismatch, OSError, ValueError) as error:
            raise click.ClickException(str(error)) from error

    return wrapper


@contextmanager
def progress_bar(description: str) -> Iterator[Progress]:
    """A byte-counting tqdm bar, on stderr, fed by a client's (done, total) progress callback."""
    from tqdm import tqdm

    with tqdm(total=0, unit="B", unit_scale=True, unit_divisor=1024, desc=description, file=sys.stderr, leave=False) as bar:

        def update(done: int, total: int) -> None:
            if total != bar.total:
                bar.total = total
                bar.refresh()
            bar.update(done - bar.n)

        yield update


# --- datasets ------------------------------------------------------------------------------------------


@reports_errors
def list_datasets(service: str, token: str | None) -> None:
    with ReplaybankClient(service, token) as client:
        datasets = client.list_datasets()
    rows = [
        [d.name, str(d.latest_version), str(d.rows), str(d.episodes), _spec_summary(d), d.env_id or "-"]
        for d in datasets
    ]
    _print_table(["name", "version", "rows", "episodes", "spec", "env"], rows)


@reports_errors
def show_dataset(service: str, token: str | None, name: str) -> None:
    with ReplaybankClient(service, token) as client:
        dataset = client.get_dataset(name)
    click.echo(json.dumps(dataset.model_dump(mode="json"), indent=2))


@reports_errors
def create_dataset(
    service: str,
    token: str | None,
    name: str,
    observation_shape: Sequence[int],
    action_shape: Sequence[int],
    action_low: Sequence[float],
    action_high: Sequence[float],
    discrete: int | None,
    env_id: str | None,
    metadata: str | None,
) -> None:
    if discrete is not None:
        action: Any = DiscreteActionSpec(n=discrete)
    else:
        size = 1
        for dim in action_shape:
            size *= dim
        low = list(action_low) * size if len(action_low) == 1 else list(action_low)
        high = list(action_high) * size if len(action_high) == 1 else list(action_high)
        action = ContinuousActionSpec(shape=list(action_shape), low=low, high=high)
    spec = DatasetSpec(observation=ObservationSpec(shape=list(observation_shape)), action=action, env_id=env_id)
    with ReplaybankClient(service, token) as client:
        dataset = client.create_dataset(name, spec, metadata=json.loads(metadata) if metadata else None)
    click.echo(f"created dataset {dataset.name}: {_spec_summary(dataset)}")


@reports_errors
def delete_dataset(service: str, token: str | None, name: str) -> None:
    with ReplaybankClient(service, token) as client:
        client.delete_dataset(name)
    click.echo(f"deleted dataset {name}")


# --- uploads and versions ------------------------------------------------------------------------------


@reports_errors
def upload(
    service: str,
    token: str | None,
    name: str,
    path: str,
    format: str | None,
    create: bool,
    env_id: str | None,
    action_low: Sequence[float],
    action_high: Sequence[float],
) -> None:
    with ReplaybankClient(service, token) as client, progress_bar(f"upload {name}") as progress:
        uploaded = client.upload_file(
            name,
            path,
            format=format,
            create=create,
            env_id=env_id,
            action_low=list(action_low) or None,
            action_high=list(action_high) or None,
            on_progress=progress,
        )
    if uploaded.created:
        click.echo(f"created dataset {name}: {_spec_summary(uploaded.dataset)}")
    click.echo(f"read {uploaded.description}")
    click.echo(f"{name} version {uploaded.result.version}: {uploaded.result.rows} rows appended")


@reports_errors
def versions(service: str, token: str | None, name: str) -> None:
    with ReplaybankClient(service, token) as client:
        listed = client.versions(name)
    rows = [
        [
            str(v.version),
            str(v.rows),
            str(v.added_rows),
            str(v.episodes),
            ", ".join(f"{source}: {count}" for source, count in sorted(v.sources.items())) or "-",
            v.created_at.strftime("%Y-%m-%d %H:%M:%S"),
            ", ".join(v.tags) or "",
        ]
        for v in listed
    ]
    _print_table(["version", "rows", "added", "episodes", "sources", "created", "tags"], rows)


@reports_errors
def statistics(service: str, token: str | None, name: str, version: str, as_json: bool) -> None:
    with ReplaybankClient(service, token) as client:
        stats = client.version_stats(name, version)
    if as_json:
        click.echo(json.dumps(stats.model_dump(mode="json"), indent=2))
        return
    click.echo(f"{name} version {stats.version}  tags: {', '.join(stats.tags) or '-'}  created {stats.created_at:%Y-%m-%d %H:%M:%S}")
    click.echo(f"rows {stats.rows} (+{stats.added_rows})  episodes {stats.episodes}")
    click.echo("sources  " + (", ".join(f"{s}: {c}" for s, c in sorted(stats.sources.items())) or "-"))
    for label, dist in (("reward", stats.reward), ("episode return", stats.episode_return), ("episode length", stats.episode_length)):
        click.echo(f"{label:<15} count {dist.count}  mean {_num(dist.mean)}  std {_num(dist.std)}  min {_num(dist.min)}  max {_num(dist.max)}")
    for label, dims in (("observation", stats.observation), ("action", stats.action)):
        if dims is None:
            continue
        click.echo(f"{label} per dimension:")
        _print_table(
            ["dim", "mean", "std", "min", "max"],
            [[str(i), _num(dims.mean[i]), _num(dims.std[i]), _num(dims.min[i]), _num(dims.max[i])] for i in range(len(dims.mean))],
        )


@reports_errors
def tag(service: str, token: str | None, name: str, tag_name: str, version: str) -> None:
    with ReplaybankClient(service, token) as client:
        tagged = client.tag(name, tag_name, version)
    click.echo(f"{name}:{tagged.name} -> version {tagged.version}")


# --- pulls and queries ---------------------------------------------------------------------------------


@reports_errors
def pull(service: str, token: str | None, name: str, version: str, out: str) -> None:
    with ReplaybankClient(service, token) as client, progress_bar(f"pull {name}@{version}") as progress:
        pulled = client.pull_to_file(name, version, out, on_progress=progress)
    click.echo(
        f"{name} version {pulled.version} -> {out} "
        f"({len(pulled.paths)} files, {pulled.transferred_bytes} of {pulled.total_bytes} bytes downloaded)"
    )


@reports_errors
def query(service: str, token: str | None, name: str, sql: str, version: str, output: str) -> None:
    with ReplaybankClient(service, token) as client:
        if output == "json":
            click.echo(client.query(name, sql, version, format="json").model_dump_json(indent=2))
            return
        table = client.query(name, sql, version, format="arrow")
    if output == "arrow":
        with pa.ipc.new_stream(sys.stdout.buffer, table.schema) as writer:
            writer.write_table(table)
        return
    rows = [[_cell(value) for value in row.values()] for row in table.to_pylist()]
    _print_table(table.column_names, rows)


# --- presentation --------------------------------------------------------------------------------------


def _spec_summary(dataset: DatasetSpec) -> str:
    observation = "x".join(map(str, dataset.observation.shape))
    if isinstance(dataset.action, DiscreteActionSpec):
        return f"obs {observation}, discrete {dataset.action.n}"
    action = dataset.action
    bounds = f"[{min(action.low):g}, {max(action.high):g}]"
    return f"obs {observation}, action {'x'.join(map(str, action.shape))} in {bounds}"


def _num(value: float | None) -> str:
    return "-" if value is None else f"{value:.4g}"


def _cell(value: Any) -> str:
    if isinstance(value, float):
        return _num(value)
    if isinstance(value, list):
        return "[" + ", ".join(_cell(v) for v in value) + "]"
    return str(value)


def _print_table(header: list[str], rows: list[list[str]]) -> None:
    if not rows:
        click.echo("(none)")
        return
    widths = [max(len(header[i]), *(len(row[i]) for row in rows)) for i in range(len(header))]
    for line in [header, *rows]:
        click.echo("  ".join(cell.ljust(width) for cell, width in zip(line, widths)).rstrip())
