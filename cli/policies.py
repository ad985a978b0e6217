"""Commands on trained policies: policies (list, show, evaluate, delete) and download."""

from __future__ import annotations

from typing import Any

import click

from cli.errors import reports_errors
from cli.jobs import submit, validated_job
from cli.options import service_option, token_option, watch_option
from cli.output import print_table


@click.group(invoke_without_command=True)
@service_option
@token_option
@click.option("--dataset", default=None)
@click.pass_context
@reports_errors
def policies(context: click.Context, service: str, token: str | None, dataset: str | None) -> None:
    """List trained policies; `show`, `evaluate` and `delete` one."""
    context.obj = {"service": service, "token": token}
    if context.invoked_subcommand is not None:
        return
    from workers.client import ReplaybankClient

    with ReplaybankClient(service, token) as client:
        listed = client.list_policies(dataset=dataset)
    rows = []
    for policy in listed:
        evaluations = policy.card.get("evaluations") or []
        last_return = f"{evaluations[-1]['mean']:.1f}" if evaluations else ""
        created = policy.created_at.strftime("%Y-%m-%d %H:%M")
        rows.append((policy.id, policy.algorithm, f"{policy.dataset}@{policy.version}", policy.parent_policy or "", last_return, created))
    print_table(("id", "algorithm", "data", "parent", "return", "created"), rows)


@policies.command("show")
@click.argument("policy_id")
@click.pass_obj
@reports_errors
def policies_show(obj: dict[str, Any], policy_id: str) -> None:
    """A policy with its card as JSON."""
    from workers.client import ReplaybankClient

    with ReplaybankClient(obj["service"], obj["token"]) as client:
        click.echo(client.get_policy(policy_id).model_dump_json(indent=2))


@policies.command("evaluate")
@click.argument("policy_id")
@click.option("--episodes", default=10, show_default=True, type=click.IntRange(min=1))
@click.option("--seed", default=0, show_default=True, type=click.IntRange(min=0))
@watch_option
@click.pass_obj
@reports_errors
def policies_evaluate(obj: dict[str, Any], policy_id: str, episodes: int, seed: int, watch: bool) -> None:
    """Submit an evaluate job: a worker runs the policy in its dataset's environment; returns go on its card."""
    from workers.client import ReplaybankClient

    with ReplaybankClient(obj["service"], obj["token"]) as client:
        dataset = client.get_policy(policy_id).dataset
    job = validated_job(kind="evaluate", dataset=dataset, seed=seed, evaluate={"policy": policy_id, "episodes": episodes})
    submit(obj["service"], obj["token"], job, watch)


@policies.command("delete")
@click.argument("policy_id")
@click.pass_obj
@reports_errors
def policies_delete(obj: dict[str, Any], policy_id: str) -> None:
    """Delete a policy and its files (admin)."""
    from workers.client import ReplaybankClient

    with ReplaybankClient(obj["service"], obj["token"]) as client:
        client.delete_policy(policy_id)
    click.echo(f"policy {policy_id} deleted")


@click.command()
@service_option
@token_option
@click.argument("policy_id")
@click.option("--out", "out_dir", required=True, type=click.Path(file_okay=False), help="Folder for the files.")
@click.option(
    "--format",
    "formats",
    multiple=True,
    default=["onnx", "torch", "card"],
    show_default=True,
    type=click.Choice(["onnx", "torch", "card", "state"]),
    help="Which files (repeatable).",
)
@reports_errors
def download(service: str, token: str | None, policy_id: str, out_dir: str, formats: tuple[str, ...]) -> None:
    """Download a policy: policy.onnx, policy.pt2 and card.json in --out, as `fit --out` writes them."""
    from workers.client import ReplaybankClient

    with ReplaybankClient(service, token) as client:
        written = client.download_policy(policy_id, out_dir, tuple(formats))
    for path in written.values():
        click.echo(str(path))


commands: list[click.Command] = [policies, download]
