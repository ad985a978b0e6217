"""Commands for operators: workers (the workers the service saw recently)."""

from __future__ import annotations

import json
from datetime import datetime, timezone

import click

from cli.errors import reports_errors
from cli.options import service_option, token_option
from cli.output import print_table


@click.command()
@service_option
@token_option
@click.option("--json", "as_json", is_flag=True, help="Print the workers as a JSON array.")
@reports_errors
def workers(service: str, token: str | None, as_json: bool) -> None:
    """Workers that claimed or heartbeated recently: device, threads, current job, last heartbeat."""
    from workers.client import ReplaybankClient

    with ReplaybankClient(service, token) as client:
        seen = client.list_workers()
    if as_json:
        click.echo(json.dumps([worker.model_dump(mode="json") for worker in seen], indent=2))
        return
    now = datetime.now(timezone.utc)
    rows = [
        (
            worker.name,
            worker.device or "-",
            str(worker.threads) if worker.threads is not None else "-",
            worker.current_job or "(idle)",
            ago(worker.last_heartbeat, now),
            ago(worker.last_seen, now),
        )
        for worker in seen
    ]
    print_table(("name", "device", "threads", "job", "last heartbeat", "last seen"), rows)


def ago(moment: datetime | None, now: datetime) -> str:
    """`12s ago`, `3m ago`, `2h ago`; `never` for no moment."""
    if moment is None:
        return "never"
    seconds = max(0, int((now - moment).total_seconds()))
    if seconds < 120:
        return f"{seconds}s ago"
    if seconds < 7200:
        return f"{seconds // 60}m ago"
    return f"{seconds // 3600}h ago"


commands: list[click.Command] = [workers]
