"""Options and argument parsing the commands share."""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any

import click

service_option = click.option(
    "--service", envvar="REPLAYBANK_URL", default="http://127.0.0.1:8000", show_default=True, help="The service's URL (REPLAYBANK_URL)."
)
token_option = click.option("--token", envvar="REPLAYBANK_TOKEN", help="A bearer token (REPLAYBANK_TOKEN).")
version_option = click.option("--version", "-v", "version", default="latest", show_default=True, help="A version number, 'latest' or a tag.")
watch_option = click.option("--watch/--no-watch", default=False, show_default=True, help="Follow the job until it ends.")
params_option = click.option("--param", "-p", "assignments", multiple=True, metavar="KEY=VALUE", help="An algorithm parameter (repeatable).")


def parse_params(assignments: Iterable[str]) -> dict[str, Any]:
    """`key=value` strings as algorithm params; values are read as JSON when they parse, else as text.

    `expectile=0.8` gives a float, `hidden_sizes=[64,64]` a list, `actor=deterministic` a string.
    """
    params: dict[str, Any] = {}
    for assignment in assignments:
        key, separator, text = assignment.partition("=")
        key = key.strip()
        if not separator or not key:
            raise ValueError(f"param {assignment!r} is not key=value")
        if key in params:
            raise ValueError(f"param {key!r} is given twice")
        try:
            params[key] = json.loads(text)
        except json.JSONDecodeError:
            params[key] = text
    return params


def parse_shape(text: str) -> list[int]:
    """`11`, `3,84,84` or `3x84x84` as a shape; an empty text is the shape of a scalar ([])."""
    try:
        return [int(part) for part in text.replace("x", ",").split(",") if part.strip()]
    except ValueError as error:
        raise click.BadParameter(f"{text!r} is not a shape such as 11 or 3,84,84") from error


def parse_version(text: str) -> int | str:
    """A version number as an int; `latest` or a tag as it is."""
    return int(text) if text.isdigit() else text
