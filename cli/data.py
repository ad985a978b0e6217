"""Commands: data. Each imports what it needs inside the command."""

from __future__ import annotations

import click

commands: list[click.Command] = []

service_option = click.option(
    "--service", envvar="REPLAYBANK_URL", default="http://127.0.0.1:8000", show_default=True, help="The service's URL (REPLAYBANK_URL)."
)
token_option = click.option("--token", envvar="REPLAYBANK_TOKEN", help="A bearer token (REPLAYBANK_TOKEN).")
version_option = click.option("--version", "-v", "version", default="latest", show_default=True, help="A version number, 'latest' or a tag.")


def _command(function: click.Command) -> click.Command:
    commands.append(function)
    return function


@_command
@click.command()
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=8000, show_default=True, type=int)
@click.option("--data-dir", type=click.Path(file_okay=False), help="Overrides REPLAYBANK_DATA_DIR.")
@click.option("--database-url", help="Overrides REPLAYBANK_DATABASE_URL.")
@click.option("--redis-url", help="Overrides REPLAYBANK_REDIS_URL.")
def serve(host: str, port: int, data_dir: str | None, database_url: str | None, redis_url: str | None) -> None:
    """Run the service (settings from REPLAYBANK_* environment variables; options override them)."""
    from service.server import serve as run
    from service.settings import Settings

    overrides = {"data_dir": data_dir, "database_url": database_url, "redis_url": redis_url}
    run(host, port, Settings(**{key: value for key, value in overrides.items() if value is not None}))


@_command
@click.group()
def token() -> None:
    """Manage API tokens in the service's catalog (run where the service's data lives)."""


@token.command("create")
@click.argument("name")
@click.option("--scope", "scopes", multiple=True, default=["read"], show_default=True, type=click.Choice(["read", "write", "worker", "admin"]))
@click.option("--data-dir", type=click.Path(file_okay=False), help="Overrides REPLAYBANK_DATA_DIR.")
@click.option("--database-url", help="Overrides REPLAYBANK_DATABASE_URL.")
def token_create(name: str, scopes: tuple[str, ...], data_dir: str | None, database_url: str | None) -> None:
    """Create a token NAME; prints the secret once."""
    from service.tokens import create_token_command

    create_token_command(name, list(scopes), data_dir=data_dir, database_url=database_url)


@token.command("revoke")
@click.argument("token_id")
@click.option("--data-dir", type=click.Path(file_okay=False), help="Overrides REPLAYBANK_DATA_DIR.")
@click.option("--database-url", help="Overrides REPLAYBANK_DATABASE_URL.")
def token_revoke(token_id: str, data_dir: str | None, database_url: str | None) -> None:
    """Revoke a token by its id or name."""
    from service.tokens import revoke_token_command

    revoke_token_command(token_id, data_dir=data_dir, database_url=database_url)


@_command
@click.group(invoke_without_command=True)
@service_option
@token_option
@click.pass_context
def datasets(context: click.Context, service: str, token: str | None) -> None:
    """List datasets; `show`, `create` and `delete` one."""
    context.obj = {"service": service, "token": token}
    if context.invoked_subcommand is None:
        from workers.data_commands import list_datasets

        list_datasets(service, token)


@datasets.command("show")
@click.argument("name")
@click.pass_obj
def datasets_show(obj: dict, name: str) -> None:
    """Show one dataset: spec, latest version, rows."""
    from workers.data_commands import show_dataset

    show_dataset(obj["service"], obj["token"], name)


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
    from workers.data_commands import create_dataset

    create_dataset(
        obj["service"],
        obj["token"],
        name,
        _shape(observation_shape),
        _shape(action_shape),
        action_low,
        action_high,
        discrete,
        env_id,
        metadata,
    )


@datasets.command("delete")
@click.argument("name")
@click.confirmation_option(prompt="Delete the dataset and every version of it?")
@click.pass_obj
def datasets_delete(obj: dict, name: str) -> None:
    """Delete dataset NAME (admin)."""
    from workers.data_commands import delete_dataset

    delete_dataset(obj["service"], obj["token"], name)


@_command
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
    from workers.data_commands import upload as run

    run(service, token, name, file, format, create, env_id, action_low, action_high)


@_command
@click.command()
@click.argument("name")
@click.option("--version", "-v", "version", default=None, help="Show this version's statistics instead of the list.")
@click.option("--json", "as_json", is_flag=True, help="With --version: print the statistics as JSON.")
@service_option
@token_option
def versions(name: str, version: str | None, as_json: bool, service: str, token: str | None) -> None:
    """List the versions of dataset NAME, or show one version's statistics."""
    from workers import data_commands

    if version is None:
        data_commands.versions(service, token, name)
    else:
        data_commands.statistics(service, token, name, version, as_json)


@_command
@click.command()
@click.argument("name")
@version_option
@click.option("--json", "as_json", is_flag=True, help="Print the statistics as JSON.")
@service_option
@token_option
def stats(name: str, version: str, as_json: bool, service: str, token: str | None) -> None:
    """Statistics of one version: returns, lengths, per-dimension mean/std/min/max."""
    from workers.data_commands import statistics

    statistics(service, token, name, version, as_json)


@_command
@click.command()
@click.argument("name")
@click.argument("tag_name", metavar="TAG")
@click.argument("version")
@service_option
@token_option
def tag(name: str, tag_name: str, version: str, service: str, token: str | None) -> None:
    """Point TAG of dataset NAME at VERSION."""
    from workers.data_commands import tag as run

    run(service, token, name, tag_name, version)


@_command
@click.command()
@click.argument("name")
@version_option
@click.option("--out", "-o", required=True, type=click.Path(dir_okay=False), help="A .parquet or .hdf5 file.")
@service_option
@token_option
def pull(name: str, version: str, out: str, service: str, token: str | None) -> None:
    """Download a version of dataset NAME (only files not cached yet) and write it to --out."""
    from workers.data_commands import pull as run

    run(service, token, name, version, out)


@_command
@click.command()
@click.argument("name")
@click.argument("sql")
@version_option
@click.option("--format", "output", type=click.Choice(["table", "json", "arrow"]), default="table", show_default=True)
@service_option
@token_option
def query(name: str, sql: str, version: str, output: str, service: str, token: str | None) -> None:
    """Run one read-only SELECT over the view `transitions` of a version of NAME."""
    from workers.data_commands import query as run

    run(service, token, name, sql, version, output)


def _shape(text: str) -> list[int]:
    try:
        return [int(part) for part in text.replace("x", ",").split(",") if part.strip()]
    except ValueError as error:
        raise click.BadParameter(f"{text!r} is not a shape such as 11 or 3,84,84") from error
