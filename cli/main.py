"""The command tree: every group of commands, added to one `replaybank` group."""

import click

from cli import datasets, jobs, learn, ope, operators, policies, pulls, service, sweeps, worker


@click.group()
@click.version_option(package_name="replaybank")
def cli() -> None:
    """replaybank: versioned offline-RL datasets and the policies trained on them."""


for _module in (service, datasets, pulls, learn, ope, jobs, policies, sweeps, worker, operators):
    for _command in _module.commands:
        cli.add_command(_command)


def main() -> None:
    cli()
