"""Options and argument parsing the commands share."""

from __future__ import annotations

import functools
import json
import os
import re
import types
import typing
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import click

if TYPE_CHECKING:
    from pydantic import BaseModel

F = TypeVar("F", bound=Callable[..., Any])

TOKEN_VARIABLE = "REPLAYBANK_TOKEN"
TOKEN_IN_ARGV_WARNING = (
    "warning: --token puts the secret in the process list, where any local user can read it; "
    f"use {TOKEN_VARIABLE} or --token-file PATH"
)

service_option = click.option(
    "--service", envvar="REPLAYBANK_URL", default="http://127.0.0.1:8000", show_default=True, help="The service's URL (REPLAYBANK_URL)."
)
version_option = click.option("--version", "-v", "version", default="latest", show_default=True, help="A version number, 'latest' or a tag.")
watch_option = click.option("--watch/--no-watch", default=False, show_default=True, help="Follow the job until it ends.")
data_file_option = click.option(
    "--data",
    "data_path",
    required=True,
    type=click.Path(exists=True),
    help="transitions: Parquet, Arrow, NPZ or D4RL-layout HDF5 file, or a Minari dataset",
)
"""A local file of transitions, for the commands that work without a service (fit, ope)."""
MAX_VALIDATION_FRACTION = 0.9
"""`schemas.splits.MAX_VALIDATION_FRACTION`, repeated (a test holds them equal): importing it loads numpy."""


def split_options(held_out_use: str) -> Callable[[F], F]:
    """`--validation-fraction F` and `--split-seed S`: whole episodes held out by the hash in `schemas.splits`
    (the service's, so a local run and a job agree); `held_out_use` says what the command does with them."""

    def decorate(command: F) -> F:
        command = click.option(
            "--split-seed", default=0, show_default=True, type=click.IntRange(min=0), help="which episodes are held out"
        )(command)
        return click.option(
            "--validation-fraction",
            default=None,
            type=click.FloatRange(0.0, MAX_VALIDATION_FRACTION, min_open=True),
            help=f"hold out this share of the episodes: {held_out_use}",
        )(command)

    return decorate


params_option = click.option(
    "--param", "-p", "assignments", multiple=True, metavar="KEY=VALUE", help="An algorithm parameter (repeatable), e.g. -p hidden_sizes=64,64."
)


_SIZE_UNITS = {"": 1, "b": 1, "kb": 10**3, "mb": 10**6, "gb": 10**9, "tb": 10**12, "kib": 1 << 10, "mib": 1 << 20, "gib": 1 << 30, "tib": 1 << 40}
_SIZE = re.compile(r"^\s*(\d+(?:\.\d*)?|\.\d+)\s*([a-z]*)\s*$", re.IGNORECASE)


class ByteSize(click.ParamType):
    """A size in bytes: `2GiB`, `512MB`, `1.5 GiB` or a plain number of bytes."""

    name = "size"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> int:
        if isinstance(value, int):
            return value
        match = _SIZE.match(str(value))
        unit = match.group(2).lower() if match else ""
        if match is None or unit not in _SIZE_UNITS:
            self.fail(f"{value!r} is not a size such as 2GiB, 512MB or 1000000 (bytes)", param, ctx)
        size = int(float(match.group(1)) * _SIZE_UNITS[unit])
        if size < 1:
            self.fail(f"{value!r} is not a positive size", param, ctx)
        return size


memory_budget_option = click.option(
    "--memory-budget",
    envvar="REPLAYBANK_MEMORY_BUDGET",
    default=None,
    type=ByteSize(),
    help="Bytes a version may take on the training device, e.g. 2GiB (REPLAYBANK_MEMORY_BUDGET); "
    "a larger one trains by streaming from memory-mapped files. Default: no limit, always resident.",
)


def token_option(command: F) -> F:
    """`--token-file PATH` (its first line) or `REPLAYBANK_TOKEN`, handed to the command as `token`.

    `--token SECRET` still works, with a warning: a secret in argv is visible to every local user.
    """

    @functools.wraps(command)
    def with_token(*args: Any, token: str | None, token_file: str | None, **kwargs: Any) -> Any:
        return command(*args, token=resolve_token(token, token_file), **kwargs)

    with_token = click.option(
        "--token-file",
        type=click.Path(dir_okay=False),
        help=f"A file whose first line is the bearer token (default: {TOKEN_VARIABLE}).",
    )(with_token)
    with_token = click.option("--token", help="A bearer token; visible to other users in the process list, prefer --token-file.")(with_token)
    return typing.cast(F, with_token)


def resolve_token(token: str | None, token_file: str | None) -> str | None:
    """The bearer token: `--token` (with a warning on stderr), else `--token-file`, else REPLAYBANK_TOKEN."""
    if token is not None and token_file is not None:
        raise click.UsageError("give --token or --token-file, not both")
    if token is not None:
        click.echo(TOKEN_IN_ARGV_WARNING, err=True)
        return token
    if token_file is not None:
        try:
            lines = Path(token_file).read_text().splitlines()
        except OSError as error:
            raise click.BadParameter(f"cannot read {token_file}: {error.strerror or error}", param_hint="--token-file") from error
        secret = lines[0].strip() if lines else ""
        if not secret:
            raise click.BadParameter(f"{token_file} is empty; its first line should be the token", param_hint="--token-file")
        return secret
    return os.environ.get(TOKEN_VARIABLE) or None


def parse_params(assignments: Iterable[str], model: type[BaseModel] | None = None) -> dict[str, Any]:
    """`key=value` strings as algorithm params; values are read as JSON when they parse, else as text.

    `expectile=0.8` gives a float, `hidden_sizes=[64,64]` a list, `actor=deterministic` a string. With
    the params `model`, an unknown name is refused with the known ones, and a list-typed param also takes
    comma-separated values: `hidden_sizes=64,64`.
    """
    params: dict[str, Any] = {}
    for assignment in assignments:
        key, separator, text = assignment.partition("=")
        key = key.strip()
        if not separator or not key:
            raise ValueError(f"param {assignment!r} is not key=value, e.g. -p expectile=0.8")
        if key in params:
            raise ValueError(f"param {key!r} is given twice")
        if model is not None and key not in model.model_fields:
            raise ValueError(f"unknown param {key!r}; the params are {', '.join(sorted(model.model_fields))}")
        value = _json_or_text(text)
        if model is not None and isinstance(value, (str, int, float)):
            if list_item_type(model.model_fields[key].annotation) is not None:
                value = [_json_or_text(part.strip()) for part in text.split(",") if part.strip()]
        params[key] = value
    return params


_LIST_EXAMPLES: dict[Any, tuple[str, str]] = {int: ("integers", "64,64"), float: ("numbers", "0.5,0.5"), str: ("names", "a,b")}


def param_hints(model: type[BaseModel]) -> dict[str, str]:
    """What each list-typed param of `model` accepts, with the syntax: for error messages."""
    hints: dict[str, str] = {}
    for name, field in model.model_fields.items():
        item = list_item_type(field.annotation)
        if item is None:
            continue
        kind, example = _LIST_EXAMPLES.get(item, (f"{getattr(item, '__name__', 'value')} values", "a,b"))
        hints[name] = f"expected a list of {kind}, e.g. -p {name}={example}"
    return hints


def list_item_type(annotation: Any) -> type | None:
    """The item type of a `list[...]` annotation (also inside Annotated or Optional); None for anything else."""
    origin = typing.get_origin(annotation)
    if origin is typing.Annotated:
        return list_item_type(typing.get_args(annotation)[0])
    if origin in (typing.Union, types.UnionType):
        found = [list_item_type(arg) for arg in typing.get_args(annotation)]
        return next((item for item in found if item is not None), None)
    if origin is list:
        (item,) = typing.get_args(annotation) or (Any,)
        while typing.get_origin(item) is typing.Annotated:
            item = typing.get_args(item)[0]
        return item if isinstance(item, type) else object
    return None


def parse_json_object(text: str, option: str) -> dict[str, Any]:
    """A JSON object given on the command line; anything else names the option and says what it takes."""
    try:
        value = json.loads(text)
    except json.JSONDecodeError as error:
        raise click.BadParameter(f"not JSON ({error.msg} at character {error.pos}); give an object, e.g. '{{\"source\": \"sim\"}}'", param_hint=option) from error
    if not isinstance(value, dict):
        raise click.BadParameter(f"expected a JSON object, e.g. '{{\"source\": \"sim\"}}', not {type(value).__name__}", param_hint=option)
    return value


def _json_or_text(text: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def parse_shape(text: str) -> list[int]:
    """`11`, `3,84,84` or `3x84x84` as a shape; an empty text is the shape of a scalar ([])."""
    try:
        return [int(part) for part in text.replace("x", ",").split(",") if part.strip()]
    except ValueError as error:
        raise click.BadParameter(f"{text!r} is not a shape such as 11 or 3,84,84") from error


def parse_version(text: str) -> int | str:
    """A version number as an int; `latest` or a tag as it is."""
    return int(text) if text.isdigit() else text
