"""One voice for errors: every failure a user can cause or fix becomes one line and a non-zero exit.

`reports_errors` wraps a command; `validation_message` is the one place a pydantic ValidationError
becomes that line.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, ParamSpec, TypeVar

import click

if TYPE_CHECKING:
    from pydantic import ValidationError

P = ParamSpec("P")
R = TypeVar("R")

SLUG_RULE = "lowercase letters, digits, '.', '_' and '-', 1 to 64 characters"


def reports_errors(function: Callable[P, R]) -> Callable[P, R]:
    """Turn the service's refusals, unreadable files, invalid values and local I/O errors into a one-line
    message (`Error: ...` on stderr) and exit status 1, without a traceback."""

    @functools.wraps(function)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return function(*args, **kwargs)
        except click.ClickException:
            raise
        except BrokenPipeError:
            raise  # the reader of our output went away (`| head`): click ends quietly
        except Exception as error:
            message = one_line(error)
            if message is None:
                raise
            raise click.ClickException(message) from error

    return wrapper


def one_line(error: Exception, hints: Mapping[str, str] | None = None) -> str | None:
    """What to tell the user about `error`, or None for a bug (which keeps its traceback)."""
    # Imported here, not at the top, so the command line starts without loading the client.
    from pydantic import ValidationError

    from workers.client import ReplaybankError
    from workers.client.pull.cache import ChecksumMismatch
    from workers.files import FormatError

    if isinstance(error, ReplaybankError):
        where = f" ({error.field})" if error.field else ""
        return f"{error.message}{where} [{error.status} {error.code}]"
    if isinstance(error, ValidationError):
        return validation_message(error, hints)
    if isinstance(error, FormatError):
        where = f" ({error.field})" if error.field else ""
        return f"{error}{where}"
    if isinstance(error, (ChecksumMismatch, OSError, ValueError)):
        return str(error)
    return None


def validation_message(error: ValidationError, hints: Mapping[str, str] | None = None) -> str:
    """A ValidationError as one line: `field: what was wrong` for each problem, `; ` between them.

    `hints` give, by field name, what a field accepts (e.g. a list param's syntax), said instead of
    pydantic's own words; a dataset or tag name that is not a slug says what a slug is.
    """
    from schemas.dataset import NAME_PATTERN

    problems: list[str] = []
    for item in error.errors(include_url=False):
        hinted = next((str(part) for part in item["loc"] if hints and str(part) in hints), None)
        if hinted is not None and hints is not None:
            problem = f"{hinted}: {hints[hinted]}"
        else:
            where = ".".join(str(part) for part in item["loc"]) or error.title
            problem = f"{where}: {_what_was_wrong(item, NAME_PATTERN)}"
        if problem not in problems:
            problems.append(problem)
    return "; ".join(problems)


def _what_was_wrong(item: Mapping[str, Any], name_pattern: str) -> str:
    if item["type"] == "string_pattern_mismatch" and (item.get("ctx") or {}).get("pattern") == name_pattern:
        return f"{item['input']!r} is not a slug: {SLUG_RULE}"
    if item["type"] == "extra_forbidden":
        return "is not a known field"
    message = str(item["msg"])
    return message[:1].lower() + message[1:]
