"""One way every list pages: a query asks for `limit + 1` rows in its own order, and `page` turns them into
`Page{data, count, next}`, where `next` is the cursor of the last row shown when more follow."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TypeVar

from schemas.dataset import Page

Row = TypeVar("Row")
Item = TypeVar("Item")


def page(
    rows: Sequence[Row], limit: int, count: int, public: Callable[[Row], Item], cursor: Callable[[Row], str]
) -> Page[Item]:
    """`rows` holds up to `limit + 1` rows after the cursor; the extra one only says that another page follows."""
    shown = rows[:limit]
    following = cursor(shown[-1]) if len(rows) > limit else None
    return Page(data=[public(row) for row in shown], count=count, next=following)
