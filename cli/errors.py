"""`reports_errors`: every failure a user can cause or fix becomes one line and a non-zero exit."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import ParamSpec, TypeVar

import click

P = ParamSpec("P")
R = TypeVar("R")


def reports_errors(function: Callable[P, R]) -> Callable[P, R]:
    """Turn the service's refusals, unreadable files and local I/O errors into a one-line message
    (`Error: ...` on stderr) and exit status 1, without a traceback."""

    @functools.wraps(function)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return function(*args, **kwargs)
        except click.ClickException:
            raise
        except BrokenPipeError:
            raise  # the reader of our output went away (`| head`): click ends quietly
        except Exception as error:
            message = _one_line(error)
            if message is None:
                raise
            raise click.ClickException(message) from error

    return wrapper


def _one_line(error: Exception) -> str | None:
    """What to tell the user about `error`, or None for a bug (which keeps its traceback)."""
    # Imported here, not at the top, so the command line starts without loading the client.
    from workers.client import ReplaybankError
    from workers.client.pull.cache import ChecksumMismatch
    from workers.files import FormatError

    if isinstance(error, ReplaybankError):
        where = f" ({error.field})" if error.field else ""
        return f"{error.message}{where} [{error.status} {error.code}]"
    if isinstance(error, FormatError):
        where = f" ({error.field})" if error.field else ""
        return f"{error}{where}"
    if isinstance(error, (ChecksumMismatch, OSError, ValueError)):
        return str(error)
    return None
