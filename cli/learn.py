"""Commands that learn without a service: fit (train on a local file) and evaluate (a policy folder)."""

from __future__ import annotations

import json

import click

from cli.errors import one_line, reports_errors
from cli.options import data_file_option, memory_budget_option, param_hints, params_option, parse_params, split_options
from schemas.algorithms import ALGORITHM_PARAMS


@click.command("fit")
@click.option("--algorithm", "-a", required=True, type=click.Choice(sorted(ALGORITHM_PARAMS)), help="what to train")
@data_file_option
@click.option("--steps", required=True, type=click.IntRange(min=1), help="gradient steps")
@click.option("--seed", default=0, show_default=True, type=click.IntRange(min=0))
@click.option("--device", default="cpu", show_default=True, type=click.Choice(["cpu", "cuda"]))
@click.option("--out", "out_dir", required=True, type=click.Path(file_okay=False), help="folder for the policy files")
@params_option
@split_options("training never sees them, and metrics.jsonl gains validation metrics on them")
@click.option("--env", "env_id", default=None, help="Gymnasium id to record on the card (default: the file's)")
@click.option(
    "--threads",
    default=None,
    type=click.IntRange(min=1),
    help="torch CPU threads (default: the fastest count, measured, within this process's share of the cores)",
)
@memory_budget_option
def fit_command(
    algorithm: str,
    data_path: str,
    steps: int,
    seed: int,
    device: str,
    out_dir: str,
    assignments: tuple[str, ...],
    validation_fraction: float | None,
    split_seed: int,
    env_id: str | None,
    threads: int | None,
    memory_budget: int | None,
) -> None:
    """Train a policy on a local file; writes policy.onnx, policy.pt2, card.json and metrics.jsonl to --out."""
    from tqdm import tqdm

    from workers.local import fit_file

    # delay: a run refused at once (bad params, unreadable file) shows no empty bar before its message
    with tqdm(total=steps, unit="step", dynamic_ncols=True, desc=algorithm, delay=0.5) as bar:

        def on_progress(step: int, metrics: dict[str, float]) -> None:
            bar.set_postfix({name: f"{value:.3g}" for name, value in metrics.items()}, refresh=False)
            bar.update(step - bar.n)
            if step >= steps:
                bar.close()  # the export that follows is not training time

        try:
            summary = fit_file(
                algorithm,
                data_path,
                steps,
                seed,
                device,
                out_dir,
                params=parse_params(assignments, ALGORITHM_PARAMS[algorithm]),
                on_progress=on_progress,
                env_id=env_id,
                threads=threads,
                validation_fraction=validation_fraction,
                split_seed=split_seed,
                memory_budget=memory_budget,
            )
        except Exception as error:
            message = one_line(error, param_hints(ALGORITHM_PARAMS[algorithm]))
            if message is None:
                raise
            raise click.ClickException(message) from error
    click.echo(json.dumps(summary, indent=2))


@click.command("evaluate")
@click.option("--policy", "policy_dir", required=True, type=click.Path(exists=True, file_okay=False))
@click.option("--env", "env_id", default=None, help="Gymnasium id (default: the card's env_id)")
@click.option("--episodes", default=10, show_default=True, type=click.IntRange(min=1))
@click.option("--seed", default=0, show_default=True, type=click.IntRange(min=0))
@reports_errors
def evaluate_command(policy_dir: str, env_id: str | None, episodes: int, seed: int) -> None:
    """Run a policy directory's ONNX policy for seeded episodes; prints the returns as JSON."""
    from workers.local import evaluate_dir

    click.echo(json.dumps(evaluate_dir(policy_dir, env_id, episodes, seed)))


commands: list[click.Command] = [fit_command, evaluate_command]
