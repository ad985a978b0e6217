"""Commands on trained policies: policies (list, show, evaluate, delete) and download."""

from __future__ import annotations

from typing import Any

import click

from cli.errors import reports_errors
from cli.jobs import submit, validated_job
from cli.options import parse_version, service_option, split_options, token_option, version_option, watch_option
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
        # an environment's return; off-policy estimates are on the card (`policies show`)
        returns = [entry["mean"] for entry in policy.card.get("evaluations") or [] if "mean" in entry]
        last_return = f"{returns[-1]:.1f}" if returns else ""
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
@click.option(
    "--method",
    default="env",
    show_default=True,
    type=click.Choice(["env", "fqe", "model"]),
    help="run it in the dataset's environment, or estimate its return from logged episodes (no environment)",
)
@version_option
@split_options("fqe/model: the estimate uses those alone")
@click.option("--steps", default=None, type=click.IntRange(min=1), help="fqe: gradient steps (default 20,000); model: rollout horizon")
@click.option("--discount", default=0.99, show_default=True, type=click.FloatRange(0.0, 1.0, min_open=True, max_open=True))
@click.option("--episodes", default=10, show_default=True, type=click.IntRange(min=1), help="env: episodes to run")
@click.option("--seed", default=0, show_default=True, type=click.IntRange(min=0))
@watch_option
@click.pass_obj
@reports_errors
def policies_evaluate(
    obj: dict[str, Any],
    policy_id: str,
    method: str,
    version: str,
    validation_fraction: float | None,
    split_seed: int,
    steps: int | None,
    discount: float,
    episodes: int,
    seed: int,
    watch: bool,
) -> None:
    """Submit an evaluate job: a worker runs the policy in its dataset's environment (env), or estimates its
    return from a version's logged episodes (fqe, model); the result goes on its card."""
    from workers.client import ReplaybankClient

    if method == "env" and (validation_fraction is not None or steps is not None):
        raise click.UsageError("--validation-fraction and --steps are for --method fqe or model")
    with ReplaybankClient(obj["service"], obj["token"]) as client:
        dataset = client.get_policy(policy_id).dataset
    options: dict[str, Any] = {"policy": policy_id, "method": method}
    if method == "env":
        options["episodes"] = episodes
    else:
        options |= {"steps": steps, "discount": discount}
        if validation_fraction is not None:
            options["split"] = {"validation_fraction": validation_fraction, "seed": split_seed}
    job = validated_job(kind="evaluate", dataset=dataset, version=parse_version(version), seed=seed, evaluate=options)
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
