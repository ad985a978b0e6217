"""Commands on datasets and their versions: datasets (list, show, create, edit, delete), upload, versions, stats,
tags and tag."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import click

from cli.errors import reports_errors
from cli.options import parse_json_object, parse_shape, service_option, token_option, version_option
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
        dataset = client.create_dataset(name, spec, metadata=parse_json_object(metadata, "--metadata") if metadata else None)
    click.echo(f"created dataset {dataset.name}: {spec_summary(dataset)}")


@datasets.command("edit")
@click.argument("name")
@click.option("--description-file", type=click.Path(exists=True, dir_okay=False), help="The dataset card: a Markdown file.")
@click.option("--metadata", help="A JSON object: the dataset's metadata, replaced whole.")
@click.option("--env-id", help="A Gymnasium id for evaluation and collection.")
@click.option("--no-env-id", is_flag=True, help="Remove the environment id.")
@click.pass_obj
@reports_errors
def datasets_edit(
    obj: dict, name: str, description_file: str | None, metadata: str | None, env_id: str | None, no_env_id: bool
) -> None:
    """Edit what may change of dataset NAME: description, metadata, environment id (the spec stays)."""
    from pathlib import Path

    from workers.client import ReplaybankClient

    if env_id is not None and no_env_id:
        raise click.UsageError("give --env-id or --no-env-id, not both")
    if description_file is None and metadata is None and env_id is None and not no_env_id:
        raise click.UsageError("nothing to change: give --description-file, --metadata, --env-id or --no-env-id")
    with ReplaybankClient(obj["service"], obj["token"]) as client:
        edited = client.edit_dataset(
            name,
            description=Path(description_file).read_text() if description_file else None,
            metadata=parse_json_object(metadata, "--metadata") if metadata is not None else None,
            env_id=env_id,
            clear_env_id=no_env_id,
        )
    click.echo(f"edited dataset {edited.name}: env {edited.env_id or '-'}")


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
@click.option("--allow-duplicate", is_flag=True, help="Add FILE as a new copy even if it was uploaded to NAME before.")
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
    allow_duplicate: bool,
    service: str,
    token: str | None,
) -> None:
    """Append FILE (Parquet, Arrow, NPZ, D4RL HDF5 or a Minari dataset) to dataset NAME as a new version.

    The upload is named by NAME and FILE's content: the same file uploaded again adds nothing, and the
    same command re-run after an interruption finds the version it made.
    """
    from workers.client import ReplaybankClient

    body = _BodyProgress()
    try:
        with ReplaybankClient(service, token) as client, progress_bar(f"upload {name}") as progress:
            body.show = progress
            uploaded = client.upload_file(
                name,
                file,
                format=format,
                create=create,
                env_id=env_id,
                action_low=list(action_low) or None,
                action_high=list(action_high) or None,
                allow_duplicate=allow_duplicate,
                on_progress=body.update,
            )
    except KeyboardInterrupt:
        click.echo(_interrupted(name, body.complete, allow_duplicate), err=True)
        raise click.exceptions.Exit(INTERRUPTED_EXIT) from None
    result = uploaded.result
    if uploaded.created:
        click.echo(f"created dataset {name}: {spec_summary(uploaded.dataset)}")
    if result.replayed:
        click.echo(
            f"{file} already uploaded as version {result.version} of {name} ({result.rows} rows): "
            "nothing added (--allow-duplicate adds a copy)"
        )
        return
    click.echo(f"read {uploaded.description}")
    click.echo(f"{name} version {result.version}: {result.rows} rows appended")
    if result.duplicate_episodes:
        click.echo(f"warning: {result.duplicate_episodes} of its episodes already exist in {name} with the same rows", err=True)


INTERRUPTED_EXIT = 130
"""The exit status of a command stopped by SIGINT (128 + 2), as shells report it."""


class _BodyProgress:
    """Feeds the progress display and remembers whether the whole request body went out."""

    def __init__(self) -> None:
        self.show: Callable[[int, int], None] | None = None
        self.complete = False

    def update(self, done: int, total: int) -> None:
        self.complete = total > 0 and done >= total
        if self.show is not None:
            self.show(done, total)


def _interrupted(name: str, body_sent: bool, allow_duplicate: bool) -> str:
    """What an interrupted upload did: after the whole body went out the service may have committed it."""
    if not body_sent:
        return f"interrupted before the whole upload was sent: nothing was added to {name}"
    said = f"interrupted after the whole upload was sent: the service may have committed it as a new version of {name}. "
    if allow_duplicate:
        return said + f"Check `replaybank versions {name}` first: re-run with --allow-duplicate, it adds another copy."
    return said + "Re-running the same command is safe: it finds that version by its key and adds nothing."


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
@service_option
@token_option
@reports_errors
def tags(name: str, service: str, token: str | None) -> None:
    """List the tags of dataset NAME and the versions they point at."""
    from workers.client import ReplaybankClient

    with ReplaybankClient(service, token) as client:
        listed = client.tags(name)
    print_table(["tag", "version"], [[t.name, str(t.version)] for t in listed])


@click.command()
@click.argument("name")
@click.argument("tag_name", metavar="TAG")
@click.argument("version", required=False)
@click.option("--delete", is_flag=True, help="Delete TAG instead (admin).")
@service_option
@token_option
@reports_errors
def tag(name: str, tag_name: str, version: str | None, delete: bool, service: str, token: str | None) -> None:
    """Point TAG of dataset NAME at VERSION (saying where it pointed before), or delete it with --delete."""
    from workers.client import ReplaybankClient

    if delete == (version is not None):
        raise click.UsageError("give VERSION to point TAG at, or --delete, not both" if delete else "give VERSION, or --delete")
    with ReplaybankClient(service, token) as client:
        if delete:
            client.delete_tag(name, tag_name)
            click.echo(f"deleted tag {name}:{tag_name}")
            return
        tagged = client.tag(name, tag_name, version)
    moved = f" (moved from version {tagged.previous})" if tagged.previous is not None and tagged.previous != tagged.version else ""
    click.echo(f"{name}:{tagged.name} -> version {tagged.version}{moved}")


commands: list[click.Command] = [datasets, upload, versions, stats, tags, tag]
