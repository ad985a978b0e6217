"""The command tree; every command lives in cli/data.py, cli/learn.py or cli/jobs.py."""

import click

from cli import data, jobs, learn


@click.group()
@click.version_option(package_name="replaybank")
def cli() -> None:
    """replaybank: versioned offline-RL datasets and the policies trained on them."""


for _module in (data, learn, jobs):
    for _command in _module.commands:
        cli.add_command(_command)


def main() -> None:
    cli()
