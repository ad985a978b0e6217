"""Presentation: aligned tables, byte progress bars, and short summaries of specs and numbers."""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

import click

if TYPE_CHECKING:
    from schemas.dataset import DatasetSpec


def print_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> None:
    """Columns padded to their widest cell; `(none)` for no rows."""
    if not rows:
        click.echo("(none)")
        return
    widths = [max(len(str(cell)) for cell in column) for column in zip(header, *rows)]
    for line in [header, *rows]:
        click.echo("  ".join(str(cell).ljust(width) for cell, width in zip(line, widths)).rstrip())


PROGRESS_VARIABLE = "REPLAYBANK_PROGRESS"
"""`plain`: progress as one parseable line per step on stderr (`DESCRIPTION: DONE of TOTAL bytes`), for scripts."""


@contextmanager
def progress_bar(description: str) -> Iterator[Callable[[int, int], None]]:
    """A byte-counting tqdm bar, on stderr, fed by a client's (done, total) progress callback; plain lines
    instead when REPLAYBANK_PROGRESS=plain."""
    if os.environ.get(PROGRESS_VARIABLE) == "plain":

        def report(done: int, total: int) -> None:
            click.echo(f"{description}: {done} of {total} bytes", err=True)

        yield report
        return

    from tqdm import tqdm

    with tqdm(total=0, unit="B", unit_scale=True, unit_divisor=1024, desc=description, file=sys.stderr, leave=False, delay=0.5) as bar:

        def update(done: int, total: int) -> None:
            if total != bar.total:
                bar.total = total
                bar.refresh()
            bar.update(done - bar.n)

        yield update


def spec_summary(dataset: DatasetSpec) -> str:
    from schemas.dataset import DiscreteActionSpec

    observation = "x".join(map(str, dataset.observation.shape))
    if isinstance(dataset.action, DiscreteActionSpec):
        return f"obs {observation}, discrete {dataset.action.n}"
    action = dataset.action
    bounds = f"[{min(action.low):g}, {max(action.high):g}]"
    return f"obs {observation}, action {'x'.join(map(str, action.shape))} in {bounds}"


def number(value: float | None) -> str:
    return "-" if value is None else f"{value:.4g}"


def cell(value: Any) -> str:
    if isinstance(value, float):
        return number(value)
    if isinstance(value, list):
        return "[" + ", ".join(cell(v) for v in value) + "]"
    return str(value)
