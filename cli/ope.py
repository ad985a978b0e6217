"""`replaybank ope`: estimate a policy's return from logged transitions in a local file, without an environment."""

from __future__ import annotations

import json
import sys

import click

from cli.errors import one_line
from cli.options import data_file_option, split_options


@click.command("ope")
@click.option("--policy", "policy_dir", required=True, type=click.Path(exists=True), help="a policy folder (policy.onnx / policy.pt2, card.json), or one of its files")
@data_file_option
@click.option("--method", default="fqe", show_default=True, type=click.Choice(["fqe", "model"]), help="Fitted Q Evaluation, or rollouts in a learned dynamics ensemble")
@click.option("--steps", default=None, type=click.IntRange(min=1), help="FQE gradient steps (default 20,000), or the model rollout horizon (default: the mean episode length)")
@click.option("--seed", default=0, show_default=True, type=click.IntRange(min=0))
@split_options("the estimate uses those alone")
@click.option("--discount", default=0.99, show_default=True, type=click.FloatRange(0.0, 1.0, max_open=True))
@click.option("--device", default="cpu", show_default=True, type=click.Choice(["cpu", "cuda"]))
@click.option("--env", "env_id", default=None, help="Gymnasium id to record (default: the file's); no environment is run")
def ope_command(
    policy_dir: str,
    data_path: str,
    method: str,
    steps: int | None,
    seed: int,
    validation_fraction: float | None,
    split_seed: int,
    discount: float,
    device: str,
    env_id: str | None,
) -> None:
    """Off-policy evaluation of a policy on logged data: prints one JSON object (estimate, interval, episodes)."""
    from tqdm import tqdm

    from workers.ope.estimate import ope_file

    # the bar and its metrics go to stderr, so stdout holds the JSON answer alone
    with tqdm(unit="step", dynamic_ncols=True, desc=f"ope {method}", delay=0.5, file=sys.stderr) as bar:

        def on_progress(step: int, metrics: dict[str, float]) -> None:
            bar.set_postfix({name: f"{value:.3g}" for name, value in metrics.items()}, refresh=False)
            bar.update(step - bar.n)

        try:
            result = ope_file(
                policy_dir,
                data_path,
                method=method,
                steps=steps,
                seed=seed,
                discount=discount,
                validation_fraction=validation_fraction,
                split_seed=split_seed,
                device=device,
                env_id=env_id,
                on_progress=on_progress,
            )
        except Exception as error:
            message = one_line(error)
            if message is None:
                raise
            raise click.ClickException(message) from error
    click.echo(json.dumps(result))


commands: list[click.Command] = [ope_command]
