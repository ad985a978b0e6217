"""SQL over one pinned dataset version: the only place DuckDB is used.

Each query gets a fresh in-memory DuckDB with file and network access disabled, the version registered as
the view `transitions`, and the configuration locked before the user's SQL runs. One read-only SELECT per
request, a row cap, a time limit (an interrupt from a timer), and bounded threads and memory.
"""

from __future__ import annotations

import math
import threading
from decimal import Decimal
from dataclasses import dataclass
from typing import Any

import duckdb
import pyarrow as pa
import pyarrow.dataset as pads

from service.errors import ApiError
from service.settings import Settings

VIEW = "transitions"
MAX_SQL_LENGTH = 100_000


@dataclass(frozen=True)
class QueryResult:
    table: pa.Table
    truncated: bool
    """More rows matched than the cap allows; `table` holds the first ones."""
    total_rows: int | None
    """How many rows matched: counted within the time limit when truncated; None if the count ran out of time."""


def check_statement(sql: str) -> str:
    """The SQL of exactly one SELECT, or a 422 naming the problem."""
    if len(sql) > MAX_SQL_LENGTH:
        raise ApiError(422, "invalid_sql", f"the query is longer than {MAX_SQL_LENGTH} characters", "sql")
    try:
        statements = duckdb.extract_statements(sql)
    except duckdb.Error as error:
        raise ApiError(422, "invalid_sql", f"the query does not parse: {error}", "sql") from None
    if len(statements) != 1:
        raise ApiError(422, "invalid_sql", f"send exactly one statement, not {len(statements)}", "sql")
    statement = statements[0]
    if statement.type != duckdb.StatementType.SELECT:
        raise ApiError(422, "invalid_sql", f"only SELECT is allowed, not {statement.type.name}", "sql")
    return statement.query


class QueryRunner:
    def __init__(self, settings: Settings) -> None:
        self.max_rows = settings.query_max_rows
        self.timeout = settings.query_timeout_seconds
        self.threads = settings.query_threads
        self.memory_limit = settings.query_memory_limit

    def run(self, sql: str, rows: pads.Dataset, max_rows: int | None = None) -> QueryResult:
        query = check_statement(sql)
        cap = min(max_rows or self.max_rows, self.max_rows)
        connection = duckdb.connect(
            config={
                "enable_external_access": False,
                "autoinstall_known_extensions": False,
                "autoload_known_extensions": False,
                "threads": self.threads,
                "memory_limit": self.memory_limit,
            }
        )
        timer = threading.Timer(self.timeout, connection.interrupt)
        try:
            connection.register(VIEW, rows)
            connection.execute("SET lock_configuration = true")
            timer.start()
            try:
                table = connection.sql(query).limit(cap + 1).to_arrow_table()
            except duckdb.InterruptException:
                raise ApiError(422, "query_timeout", f"the query ran longer than {self.timeout:g} s and was stopped", "sql") from None
            except duckdb.Error as error:
                raise ApiError(422, "invalid_sql", _first_line(str(error)), "sql") from None
            truncated = table.num_rows > cap
            total_rows = _count(connection, query) if truncated else table.num_rows
        finally:
            timer.cancel()
            connection.close()
        return QueryResult(
            table=_integers_as_int64(table.slice(0, cap) if truncated else table), truncated=truncated, total_rows=total_rows
        )


def _count(connection: duckdb.DuckDBPyConnection, query: str) -> int | None:
    """How many rows `query` gives, or None when the time limit's interrupt stops the count first."""
    try:
        [(counted,)] = connection.sql(query).count("*").fetchall()
    except duckdb.InterruptException:
        return None
    return int(counted)


def _integers_as_int64(table: pa.Table) -> pa.Table:
    """DuckDB's HUGEINT (from `sum` of integers, `count_if`) reaches Arrow as decimal128(38, 0); give it back as
    the int64 it is whenever every value fits (the safe cast refuses otherwise, and the column stays a decimal)."""
    for index, field in enumerate(table.schema):
        if pa.types.is_decimal(field.type) and field.type.scale == 0:
            try:
                column = table.column(index).cast(pa.int64())
            except pa.ArrowInvalid:
                continue
            table = table.set_column(index, field.with_type(pa.int64()), column)
    return table


def _first_line(message: str) -> str:
    return message.strip().splitlines()[0] if message.strip() else "the query failed"


def json_rows(table: pa.Table) -> list[list[Any]]:
    """Rows as JSON-ready lists: integral decimals become ints, other decimals floats, blobs hex, NaN and
    infinities (which JSON lacks) null."""
    columns = [_finite(column.to_pylist()) for column in table.columns]
    return [list(row) for row in zip(*columns)] if columns else []


def _finite(values: list[Any]) -> list[Any]:
    return [_clean(value) for value in values]


def _clean(value: Any) -> Any:
    if isinstance(value, Decimal):
        # A decimal of scale 0 (HUGEINT too large for int64, say) has a non-negative exponent.
        value = int(value) if value.is_finite() and value.as_tuple().exponent >= 0 else float(value)
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, bytes):
        return value.hex()
    if isinstance(value, list):
        return [_clean(item) for item in value]
    if isinstance(value, dict):
        return {key: _clean(item) for key, item in value.items()}
    return value
