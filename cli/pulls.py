"""Commands that read a version's rows: pull (to a file, through the cache) and query (SQL)."""

from __future__ import annotations

import sys

import click

from cli.errors import reports_errors
from cli.options import service_option, token_option, version_option
from cli.output import cell, print_table, progress_bar


@click.command()
@click.argument("name")
@version_option
@click.option("--out", "-o", required=True, type=click.Path(dir_okay=False), help="A .parquet or .hdf5 file.")
@service_option
@token_option
@reports_errors
def pull(name: str, version: str, out: str, service: str, token: str | None) -> None:
    """Download a version of dataset NAME (only files not cached yet) and write it to --out."""
    from workers.client import ReplaybankClient

    with ReplaybankClient(service, token) as client, progress_bar(f"pull {name}@{version}") as progress:
        pulled = client.pull_to_file(name, version, out, on_progress=progress)
    click.echo(
        f"{name} version {pulled.version} -> {out} "
        f"({len(pulled.paths)} files, {pulled.transferred_bytes} of {pulled.total_bytes} bytes downloaded)"
    )


@click.command()
@click.argument("name")
@click.argument("sql")
@version_option
@click.option("--format", "output", type=click.Choice(["table", "json", "arrow"]), default="table", show_default=True)
@service_option
@token_option
@reports_errors
def query(name: str, sql: str, version: str, output: str, service: str, token: str | None) -> None:
    """Run one read-only SELECT over the view `transitions` of a version of NAME.

    A table the service cut at its row cap says so on stderr, with the full count when the service knows it.
    """
    import pyarrow as pa

    from workers.client import ReplaybankClient

    with ReplaybankClient(service, token) as client:
        if output == "arrow":
            table = client.query(name, sql, version, format="arrow")
            with pa.ipc.new_stream(sys.stdout.buffer, table.schema) as writer:
                writer.write_table(table)
            return
        result = client.query(name, sql, version, format="json")
    if output == "json":
        click.echo(result.model_dump_json(indent=2))
        return
    print_table([column.name for column in result.columns], [[cell(value) for value in row] for row in result.rows])
    if result.truncated:
        of = f"of {result.total_rows}" if result.total_rows is not None else f"of more than {result.row_count}"
        click.echo(f"showing the first {result.row_count} rows {of}", err=True)


commands: list[click.Command] = [pull, query]
