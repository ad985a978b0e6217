"""Upload bodies to Arrow tables: Arrow IPC stream, Parquet, or JSON `{"rows": [...]}`.

JSON is parsed by Arrow's own reader against a schema built from the dataset's spec (fast, no Python
objects per value), a few megabytes of rows at a time while the body streams in; only when that fails
is the body parsed again whole, and then with the standard library, to name the field at fault.
"""

from __future__ import annotations

import json
import re
import threading
from collections import deque
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

import anyio
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.json as pajson
import pyarrow.parquet as pq

from schemas.dataset import ContinuousActionSpec, DatasetSpec
from schemas.http import ARROW_STREAM, JSON, PARQUET
from schemas.transition import CLIENT_COLUMNS
from service.errors import ApiError

UPLOAD_TYPES = (ARROW_STREAM, PARQUET, JSON)


def media_type(content_type: str | None) -> str:
    """The bare media type of a Content-Type header; 415 unless it is one we read."""
    kind = (content_type or "").split(";", 1)[0].strip().lower()
    if kind not in UPLOAD_TYPES:
        shown = kind or "none"
        raise ApiError(415, "unsupported_media_type", f"Content-Type {shown} is not accepted; use one of {', '.join(UPLOAD_TYPES)}", "Content-Type")
    return kind


def parse(body: bytes, kind: str, spec: DatasetSpec) -> pa.Table:
    if not body:
        raise ApiError(422, "invalid_body", "the body is empty", "body")
    if kind == ARROW_STREAM:
        return _arrow_stream(body)
    if kind == PARQUET:
        return _parquet(body)
    return _json(body, spec)


def _arrow_stream(body: bytes) -> pa.Table:
    try:
        return pa.ipc.open_stream(pa.py_buffer(body)).read_all()
    except (pa.ArrowException, OSError, ValueError) as error:
        raise ApiError(422, "invalid_body", f"not a readable Arrow IPC stream: {error}", "body") from None


def _parquet(body: bytes) -> pa.Table:
    try:
        return pq.read_table(pa.BufferReader(body))
    except (pa.ArrowException, OSError, ValueError) as error:
        raise ApiError(422, "invalid_body", f"not a readable Parquet file: {error}", "body") from None


def _json_row_type(spec: DatasetSpec) -> pa.StructType:
    vector = pa.list_(pa.float32())
    action = vector if isinstance(spec.action, ContinuousActionSpec) else pa.int64()
    return pa.struct(
        [
            ("episode_id", pa.int64()),
            ("step", pa.int64()),
            ("observation", vector),
            ("action", action),
            ("reward", pa.float32()),
            ("next_observation", vector),
            ("terminal", pa.bool_()),
            ("truncated", pa.bool_()),
            ("source", pa.string()),
        ]
    )


def _json(body: bytes | bytearray, spec: DatasetSpec) -> pa.Table:
    """The body as one JSON document, in any layout; a body Arrow refuses is explained."""
    try:
        parsed = _read_json(body, _json_body_schema(spec))
    except (pa.ArrowException, ValueError) as error:
        raise _explain_json(body, str(error)) from None
    if parsed.num_rows != 1:
        raise ApiError(422, "invalid_body", 'the body must be one JSON object {"rows": [...]}', "body")
    rows = parsed.column("rows").combine_chunks()
    if rows.null_count:
        raise ApiError(422, "invalid_body", 'the body needs a "rows" list', "rows")
    return _default_source(_row_columns(rows))


def _default_source(rows: pa.Table) -> pa.Table:
    """A JSON row without `source` is 'logged'."""
    index = rows.schema.get_field_index("source")
    return rows.set_column(index, "source", pc.fill_null(rows.column("source"), "logged"))


def arrow_parts(source: Any) -> Iterator[pa.Table]:
    """The record batches of an Arrow IPC stream read from a blocking file, as they arrive."""
    try:
        reader = pa.ipc.open_stream(source)
        while True:
            try:
                batch = reader.read_next_batch()
            except StopIteration:
                break
            yield pa.Table.from_batches([batch])
    except (pa.ArrowException, OSError, ValueError) as error:
        raise ApiError(422, "invalid_body", f"not a readable Arrow IPC stream: {error}", "body") from None
    if source.read(1):
        raise ApiError(422, "invalid_body", "bytes follow the end of the Arrow IPC stream", "body")


class NotRowLines(Exception):
    """A JSON body the streaming path cannot take; the whole-body path parses it (and explains any error)."""


# JSON whitespace only (not Python's wider \s), so the head is stripped exactly where a JSON parser would.
_JSON_HEAD = re.compile(rb'[ \t\r\n]*\{[ \t\r\n]*"rows"[ \t\r\n]*:[ \t\r\n]*\[')
_ROWS_OPEN, _ROWS_CLOSE = b'{"rows":[', b"]}"
_ROW_END = b"},"
JSON_READ_BYTES = 1 << 20
JSON_DOCUMENT_BYTES = 4 * JSON_READ_BYTES
JSON_PARSE_AHEAD = 2
"""Documents parsed at once on threads of their own (Arrow's parser releases the GIL) while the caller
checks and writes the rows before them: on a busy machine that takes the parse off the critical path."""


class JsonRowLines:
    """A `{"rows": [...]}` body, read from a blocking file, handed on as a series of small documents
    `{"rows":[...]}` of whole rows, each parsed by itself while the rest of the body is still arriving.

    A document is cut after the last `},` of about JSON_DOCUMENT_BYTES read: where that `}` ends a row,
    the document holds exactly the rows before it. Anywhere else (inside a string, or a nested object) it
    leaves a string or object open, so that document fails to parse and the whole body goes to the careful
    path: a wrong cut can only fail, never change rows. The last document ends with the body's own `]}`,
    so anything after the rows (another key, a second document) fails there too. Everything read is kept
    for that careful path.
    """

    def __init__(self, source: Any) -> None:
        self.source = source
        self.raw: list[bytes] = []

    def documents(self) -> Iterator[bytes]:
        """The body's rows as documents `{"rows":[...]}`, in order; NotRowLines unless it opens with `{"rows": [`."""
        pending = bytearray()
        started = False
        while True:
            chunk = self.source.read(JSON_READ_BYTES)
            if chunk:
                self.raw.append(chunk)
                pending += chunk
            if not started:
                # The head may arrive in pieces: wait for enough of it, unless the body ends first.
                if chunk and len(pending) < 4096:
                    continue
                head = _JSON_HEAD.match(pending)
                if head is None:
                    raise NotRowLines
                del pending[: head.end()]
                started = True
            if not chunk:
                yield b"".join((_ROWS_OPEN, pending))
                return
            if len(pending) < JSON_DOCUMENT_BYTES:
                continue
            cut = pending.rfind(_ROW_END)
            if cut < 0:
                continue
            yield b"".join((_ROWS_OPEN, memoryview(pending)[: cut + 1], _ROWS_CLOSE))
            del pending[: cut + len(_ROW_END)]

    def whole_body(self) -> bytes:
        """Everything the body holds: what was read so far and the rest."""
        while chunk := self.source.read(JSON_READ_BYTES):
            self.raw.append(chunk)
        return b"".join(self.raw)


def json_parts(lines: JsonRowLines, spec: DatasetSpec) -> Iterator[pa.Table]:
    """Rows of a `{"rows": [...]}` body as they arrive, one document of whole rows at a time, in order."""
    schema = _json_body_schema(spec)
    with ThreadPoolExecutor(max_workers=JSON_PARSE_AHEAD, thread_name_prefix="replaybank-json") as parser:
        parsing: deque[Future[pa.Table]] = deque()
        for document in lines.documents():
            parsing.append(parser.submit(_read_json, document, schema))
            if len(parsing) > JSON_PARSE_AHEAD:
                yield _parsed_part(parsing.popleft())
        while parsing:
            yield _parsed_part(parsing.popleft())


def _parsed_part(parsing: Future[pa.Table]) -> pa.Table:
    try:
        parsed = parsing.result()
    except (pa.ArrowException, ValueError) as error:
        raise NotRowLines from error
    if parsed.num_rows != 1:
        raise NotRowLines
    return _default_source(_row_columns(parsed.column("rows").combine_chunks()))


def _json_body_schema(spec: DatasetSpec) -> pa.Schema:
    return pa.schema([("rows", pa.list_(_json_row_type(spec)))])


_OBJECT_START = re.compile(rb"\s*\{")


def _read_json(document: bytes | bytearray, schema: pa.Schema) -> pa.Table:
    """One JSON document (any layout) parsed by Arrow against the spec: no Python object per value."""
    if _OBJECT_START.match(document) is None:
        # Arrow's reader crashes the process on a top-level `null` (pyarrow 26); only an object can hold rows.
        raise ValueError("the document is not a JSON object")
    return pajson.read_json(
        pa.BufferReader(document),
        read_options=pajson.ReadOptions(block_size=len(document) + 1, use_threads=False),
        parse_options=pajson.ParseOptions(explicit_schema=schema, newlines_in_values=True, unexpected_field_behavior="error"),
    )


def _row_columns(rows: pa.ListArray) -> pa.Table:
    values: pa.StructArray = rows.values
    names = values.type.names
    return pa.Table.from_arrays([values.field(name) for name in names], names=names)


def _explain_json(body: bytes, arrow_message: str) -> ApiError:
    """Find what is wrong with a JSON body Arrow refused, with the standard library (the slow path)."""
    try:
        document = json.loads(body)
    except (ValueError, UnicodeDecodeError) as error:
        return ApiError(422, "invalid_body", f"malformed JSON: {error}", "body")
    if not isinstance(document, dict) or set(document) != {"rows"} or not isinstance(document["rows"], list):
        return ApiError(422, "invalid_body", 'the body must be one JSON object {"rows": [...]}', "body")
    allowed = set(CLIENT_COLUMNS) | {"source"}
    for index, row in enumerate(document["rows"]):
        if not isinstance(row, dict):
            return ApiError(422, "invalid_body", f"rows[{index}] is not an object", "rows")
        unknown = sorted(set(row) - allowed)
        if unknown:
            return ApiError(422, "invalid_column", f"rows[{index}] has unknown field {unknown[0]!r}", unknown[0])
        for name, value in row.items():
            problem = _json_type_problem(name, value)
            if problem:
                return ApiError(422, "invalid_column", f"rows[{index}].{name}: {problem}", name)
    return ApiError(422, "invalid_body", f"the rows do not fit the dataset: {arrow_message}", "rows")


def _json_type_problem(name: str, value: Any) -> str | None:
    def number(item: Any) -> bool:
        return isinstance(item, (int, float)) and not isinstance(item, bool)

    if name in {"episode_id", "step"} and not (isinstance(value, int) and not isinstance(value, bool)):
        return "expected an integer"
    if name in {"terminal", "truncated"} and not isinstance(value, bool):
        return "expected true or false"
    if name == "reward" and not number(value):
        return "expected a number"
    if name in {"observation", "next_observation"} and not (isinstance(value, list) and all(number(item) for item in value)):
        return "expected a list of numbers"
    if name == "action" and not (number(value) or (isinstance(value, list) and all(number(item) for item in value))):
        return "expected a list of numbers (continuous) or an integer (discrete)"
    if name == "source" and not isinstance(value, str):
        return "expected a string"
    return None


class BodyPipe:
    """Carries a request body from the event loop to a reader thread, as a blocking file Arrow can read.

    At most `max_buffered` bytes wait at a time, so a slow reader slows the upload instead of filling memory.
    A reader that gives up calls `abandon`: the rest of the body is then dropped as it arrives.
    """

    closed = False

    def __init__(self, max_buffered: int = 32 << 20) -> None:
        self._chunks: deque[memoryview] = deque()
        self._buffered = 0
        self._max_buffered = max_buffered
        self._changed = threading.Condition()
        self._ended = False
        self._failed = False
        self._abandoned = False

    # the event loop's side

    async def put(self, chunk: bytes) -> None:
        if not chunk or self._abandoned:
            return
        if self._buffered >= self._max_buffered:
            await anyio.to_thread.run_sync(self._wait_for_room)
        with self._changed:
            if not self._abandoned:
                self._chunks.append(memoryview(chunk))
                self._buffered += len(chunk)
                self._changed.notify_all()

    def _wait_for_room(self) -> None:
        with self._changed:
            self._changed.wait_for(lambda: self._buffered < self._max_buffered or self._abandoned)

    def end(self) -> None:
        with self._changed:
            self._ended = True
            self._changed.notify_all()

    def fail(self) -> None:
        """The body broke off (client gone, size limit): the reader's next read raises."""
        with self._changed:
            self._ended = self._failed = True
            self._changed.notify_all()

    # the reader thread's side

    def read(self, size: int = -1) -> bytes:
        pieces: list[memoryview] = []
        wanted = size if size >= 0 else float("inf")
        with self._changed:
            while wanted > 0:
                if not self._chunks:
                    if self._failed:
                        raise OSError("the request body broke off")
                    if self._ended:
                        break
                    self._changed.wait()
                    continue
                chunk = self._chunks[0]
                if len(chunk) <= wanted:
                    self._chunks.popleft()
                    taken = chunk
                else:
                    taken, self._chunks[0] = chunk[: int(wanted)], chunk[int(wanted) :]
                pieces.append(taken)
                wanted -= len(taken)
                self._buffered -= len(taken)
            self._changed.notify_all()
        return b"".join(pieces)

    def abandon(self) -> None:
        with self._changed:
            self._abandoned = True
            self._chunks.clear()
            self._buffered = 0
            self._changed.notify_all()

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return False
