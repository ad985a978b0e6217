"""Commands for running and administering the service: serve, and token (create, list, revoke).

Token commands go through the API (`/v1/tokens`) with an admin token, like every other client command,
so they work from any machine and folder that can reach the service.
"""

from __future__ import annotations

import click

from cli.errors import reports_errors
from cli.options import service_option, token_option
from cli.output import print_table


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


@click.group()
def token() -> None:
    """Manage API tokens through the service (needs an admin token)."""


@token.command("create")
@click.argument("name")
@click.option("--scope", "scopes", multiple=True, default=["read"], show_default=True, type=click.Choice(["read", "write", "worker", "admin"]))
@service_option
@token_option
@reports_errors
def token_create(name: str, scopes: tuple[str, ...], service: str, token: str | None) -> None:
    """Create a token NAME; prints its secret alone on stdout (shown once: only a hash is kept)."""
    from workers.client import ReplaybankClient

    with ReplaybankClient(service, token) as client:
        created = client.create_token(name, list(scopes))
    click.echo(created.token)


@token.command("list")
@service_option
@token_option
@reports_errors
def token_list(service: str, token: str | None) -> None:
    """List tokens: id, name, scopes, when created, whether revoked."""
    from workers.client import ReplaybankClient

    with ReplaybankClient(service, token) as client:
        tokens = client.list_tokens()
    rows = [
        (t.id, t.name, ",".join(t.scopes), t.created_at.strftime("%Y-%m-%d %H:%M:%S"), "yes" if t.revoked else "no")
        for t in tokens
    ]
    print_table(("id", "name", "scopes", "created", "revoked"), rows)


@token.command("revoke")
@click.argument("token_id")
@service_option
@token_option
@reports_errors
def token_revoke(token_id: str, service: str, token: str | None) -> None:
    """Revoke a token by its id or name."""
    from workers.client import ReplaybankClient

    with ReplaybankClient(service, token) as client:
        client.revoke_token(token_id)
    click.echo(f"revoked token {token_id}")


commands: list[click.Command] = [serve, token]
