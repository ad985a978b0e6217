"""Commands on datasets and their versions: datasets (list, show, create, delete), upload, versions, stats, tag."""

from __future__ import annotations

import json
from typing import Any

import click

from cli.errors import reports_errors
from cli.options import parse_shape, service_option, token_option, version_option
from cli.output import number, print_table, progress_bar, spec_summary


@click.group(invoke_without_command=True)
@service_option
@token_option
@click.pass_context
@reports_errors
def datasets(context: click.Context, service: str, token: str | None) -> None:
    """List datasets; `show`, `create` and `delete` one."""
    context.obj = {"service": service, "token": token}
    if context.invoked_subcommand is not None:
        return
    from workers.client import ReplaybankClient

    with ReplaybankClient(service, token) as client:
        listed = client.list_datasets()
    rows = [[d.name, str(d.latest_version), str(d.rows), str(d.episodes), spec_summary(d), d.env_id or "-"] for d in listed]
    print_table(["name", "version", "rows", "episodes", "spec", "env"], rows)


@datasets.command("show")
@click.argument("name")
@click.pass_obj
@reports_errors
def datasets_show(obj: dict, name: str) -> None:
    """Show one dataset: spec, latest version, rows."""
    from workers.client import ReplaybankClient

    with ReplaybankClient(obj["service"], obj["token"]) as client:
        dataset = client.get_dataset(name)
    click.echo(json.dumps(dataset.model_dump(mode="json"), indent=2))


@datasets.command("create")
@click.argument("name")
@click.option("--observation-shape", "observation_shape", required=True, help="e.g. 11 or 3,84,84")
@click.option("--action-shape", default="", help="Continuous actions: e.g. 3")
@click.option("--action-low", "action_low", type=float, multiple=True, help="One value for all dimensions, or one per dimension.")
@click.option("--action-high", "action_high", type=float, multiple=True)
@click.option("--discrete", type=int, help="Discrete actions: how many.")
@click.option("--env-id", help="A Gymnasium id for evaluation and collection.")
@click.option("--metadata", help="A JSON object.")
@click.pass_obj
@reports_errors
def datasets_create(
    obj: dict,
    name: str,
    observation_shape: str,
    action_shape: str,
    action_low: tuple[float, ...],
    action_high: tuple[float, ...],
    discrete: int | None,
    env_id: str | None,
    metadata: str | None,
) -> None:
    """Create an empty dataset NAME."""
    from schemas.dataset import ContinuousActionSpec, DatasetSpec, DiscreteActionSpec, ObservationSpec
    from workers.client import ReplaybankClient

    observation, shape = parse_shape(observation_shape), parse_shape(action_shape)
    if discrete is not None:
        action: Any = DiscreteActionSpec(n=discrete)
    else:
        size = 1
        for dim in shape:
            size *= dim
        low = list(action_low) * size if len(action_low) == 1 else list(action_low)
        high = list(action_high) * size if len(action_high) == 1 else list(action_high)
        action = ContinuousActionSpec(shape=shape, low=low, high=high)
    spec = DatasetSpec(observation=ObservationSpec(shape=observation), action=action, env_id=env_id)
    with ReplaybankClient(obj["service"], obj["token"]) as client:
        dataset = client.create_dataset(name, spec, metadata=json.loads(metadata) if metadata else None)
    click.echo(f"created dataset {dataset.name}: {spec_summary(dataset)}")


@datasets.command("delete")
@click.argument("name")
@click.confirmation_option(prompt="Delete the dataset and every version of it?")
@click.pass_obj
@reports_errors
def datasets_delete(obj: dict, name: str) -> None:
    """Delete dataset NAME (admin)."""
    from workers.client import ReplaybankClient

    with ReplaybankClient(obj["service"], obj["token"]) as client:
        client.delete_dataset(name)
    click.echo(f"deleted dataset {name}")


@click.command()
@click.argument("name")
@click.argument("file")
@click.option("--create", is_flag=True, help="Create the dataset, with a spec inferred from the file, if it does not exist.")
@click.option("--env-id", help="With --create: the dataset's environment id.")
@click.option("--format", "format", type=click.Choice(["parquet", "arrow", "npz", "hdf5", "minari"]), help="Default: from FILE's suffix.")
@click.option("--action-low", "action_low", type=float, multiple=True, help="With --create: action bounds (default: the data's).")
@click.option("--action-high", "action_high", type=float, multiple=True)
@service_option
@token_option
@reports_errors
def upload(
    name: str,
    file: str,
    create: bool,
    env_id: str | None,
    format: str | None,
    action_low: tuple[float, ...],
    action_high: tuple[float, ...],
    service: str,
    token: str | None,
) -> None:
    """Append FILE (Parquet, Arrow, NPZ, D4RL HDF5 or a Minari dataset) to dataset NAME as a new version."""
    from workers.client import ReplaybankClient

    with ReplaybankClient(service, token) as client, progress_bar(f"upload {name}") as progress:
        uploaded = client.upload_file(
            name,
            file,
            format=format,
            create=create,
            env_id=env_id,
            action_low=list(action_low) or None,
            action_high=list(action_high) or None,
            on_progress=progress,
        )
    if uploaded.created:
        click.echo(f"created dataset {name}: {spec_summary(uploaded.dataset)}")
    click.echo(f"read {uploaded.description}")
    click.echo(f"{name} version {uploaded.result.version}: {uploaded.result.rows} rows appended")


@click.command()
@click.argument("name")
@click.option("--version", "-v", "version", default=None, help="Show this version's statistics instead of the list.")
@click.option("--json", "as_json", is_flag=True, help="With --version: print the statistics as JSON.")
@service_option
@token_option
@reports_errors
def versions(name: str, version: str | None, as_json: bool, service: str, token: str | None) -> None:
    """List the versions of dataset NAME, or show one version's statistics."""
    if version is not None:
        _print_statistics(service, token, name, version, as_json)
        return
    from workers.client import ReplaybankClient

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
    print_table(["version", "rows", "added", "episodes", "sources", "created", "tags"], rows)


@click.command()
@click.argument("name")
@version_option
@click.option("--json", "as_json", is_flag=True, help="Print the statistics as JSON.")
@service_option
@token_option
@reports_errors
def stats(name: str, version: str, as_json: bool, service: str, token: str | None) -> None:
    """Statistics of one version: returns, lengths, per-dimension mean/std/min/max."""
    _print_statistics(service, token, name, version, as_json)


def _print_statistics(service: str, token: str | None, name: str, version: str, as_json: bool) -> None:
    from workers.client import ReplaybankClient

    with ReplaybankClient(service, token) as client:
        found = client.version_stats(name, version)
    if as_json:
        click.echo(json.dumps(found.model_dump(mode="json"), indent=2))
        return
    click.echo(f"{name} version {found.version}  tags: {', '.join(found.tags) or '-'}  created {found.created_at:%Y-%m-%d %H:%M:%S}")
    click.echo(f"rows {found.rows} (+{found.added_rows})  episodes {found.episodes}")
    click.echo("sources  " + (", ".join(f"{s}: {c}" for s, c in sorted(found.sources.items())) or "-"))
    for label, dist in (("reward", found.reward), ("episode return", found.episode_return), ("episode length", found.episode_length)):
        click.echo(
            f"{label:<15} count {dist.count}  mean {number(dist.mean)}  std {number(dist.std)}  min {number(dist.min)}  max {number(dist.max)}"
        )
    for label, dims in (("observation", found.observation), ("action", found.action)):
        if dims is None:
            continue
        click.echo(f"{label} per dimension:")
        print_table(
            ["dim", "mean", "std", "min", "max"],
            [[str(i), number(dims.mean[i]), number(dims.std[i]), number(dims.min[i]), number(dims.max[i])] for i in range(len(dims.mean))],
        )


@click.command()
@click.argument("name")
@click.argument("tag_name", metavar="TAG")
@click.argument("version")
@service_option
@token_option
@reports_errors
def tag(name: str, tag_name: str, version: str, service: str, token: str | None) -> None:
    """Point TAG of dataset NAME at VERSION."""
    from workers.client import ReplaybankClient

    with ReplaybankClient(service, token) as client:
        tagged = client.tag(name, tag_name, version)
    click.echo(f"{name}:{tagged.name} -> version {tagged.version}")


commands: list[click.Command] = [datasets, upload, versions, stats, tag]
