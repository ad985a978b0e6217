"""Moments on the wire: RFC 3339 date-times that always carry their zone."""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Annotated

from pydantic import AfterValidator


def _assume_utc(moment: datetime) -> datetime:
    # Everything the service stores is UTC; SQLite hands datetimes back without their zone.
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=timezone.utc)


UtcDatetime = Annotated[datetime, AfterValidator(_assume_utc)]
"""A datetime that a naive value enters as UTC, so every one sent out has its offset (RFC 3339)."""
