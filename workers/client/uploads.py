"""Uploads: rows appended to a dataset as one new version, and the body encoders behind them.

The body streams as Arrow IPC record batches (or Parquet/JSON) in pieces small enough for the HTTP
stack to send without copying much, and is made afresh for each attempt, so a retry resends it whole.
A file's upload is named by the dataset and the file's content (`file_upload_key`), so sending it again
adds nothing.
"""

from __future__ import annotations

import functools
import json
import uuid
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from schemas.dataset import AppendResult, DatasetPublic
from schemas.http import IDEMPOTENCY_KEY_HEADER
from workers import files
from workers.client.datasets import Datasets
from workers.client.http import CONTENT_TYPES, Progress, ReplaybankError, dataset_path

UPLOAD_PIECE = 1 << 20
"""The largest piece of a request body handed to the HTTP stack at once."""


@dataclass(frozen=True)
class UploadedFile:
    result: AppendResult
    dataset: DatasetPublic
    created: bool
    """Whether the upload created the dataset."""
    description: str
    """What was read from the file, and anything derived or dropped on the way."""


class Uploads(Datasets):
    def upload(
        self,
        name: str,
        rows: pa.Table | Iterable[pa.RecordBatch],
        *,
        content_type: str = "arrow",
        idempotency_key: str | None = None,
        on_progress: Progress | None = None,
        batch_rows: int = 65_536,
    ) -> AppendResult:
        """Append rows as one new version; returns `{version, rows}`.

        The body streams as Arrow IPC record batches (or Parquet/JSON with `content_type`). A transport
        failure is retried with the same idempotency key (a fresh one per call unless given), so a retry
        whose first attempt did land adds nothing twice. A one-shot iterator of batches cannot be resent,
        so it gets a single attempt.
        """
        if content_type not in CONTENT_TYPES:
            raise ValueError(f"content_type must be one of {sorted(CONTENT_TYPES)}")
        if isinstance(rows, pa.Table):
            batches: Iterable[pa.RecordBatch] = rows.to_batches(max_chunksize=batch_rows)
        else:
            batches = rows
        repeatable = not isinstance(batches, Iterator)
        body: bytes | Callable[[], Iterable[bytes]]
        if content_type == "arrow":
            batches = list(batches) if repeatable else batches
            total = _arrow_stream_size(batches) if repeatable else 0
            body = functools.partial(_arrow_stream, batches)
        else:
            table = pa.Table.from_batches(list(batches))
            body = _parquet_bytes(table) if content_type == "parquet" else _json_bytes(table)
            total = len(body)
            repeatable = True
        return self.upload_body(
            name,
            body,
            content_type=CONTENT_TYPES[content_type],
            idempotency_key=idempotency_key,
            total=total,
            on_progress=on_progress,
            retry=repeatable,
        )

    def upload_body(
        self,
        name: str,
        body: bytes | Callable[[], Iterable[bytes]],
        *,
        content_type: str,
        idempotency_key: str | None = None,
        total: int = 0,
        on_progress: Progress | None = None,
        retry: bool = True,
    ) -> AppendResult:
        """Append an already encoded body: bytes, or a function yielding it afresh for each attempt."""
        key = idempotency_key or uuid.uuid4().hex
        headers = {"Content-Type": content_type, IDEMPOTENCY_KEY_HEADER: key}
        if isinstance(body, bytes):
            total = total or len(body)
            # A known length lets the service refuse an oversized body before reading it.
            headers["Content-Length"] = str(len(body))
        chunks: Callable[[], Iterable[bytes]] = (lambda: [body]) if isinstance(body, bytes) else body

        def counted() -> Iterator[memoryview]:
            sent = 0
            for chunk in chunks():
                for piece in _pieces(chunk):
                    yield piece
                    sent += len(piece)
                    if on_progress is not None:
                        on_progress(sent, max(total, sent))
            if on_progress is not None:
                on_progress(sent, sent)

        return self._model(
            AppendResult,
            "POST",
            f"{dataset_path(name)}/transitions",
            content=_Regenerable(counted),
            headers=headers,
            retry=retry,
        )

    def upload_file(
        self,
        name: str,
        path: str | Path,
        *,
        format: str | None = None,
        create: bool = False,
        env_id: str | None = None,
        action_low: list[float] | None = None,
        action_high: list[float] | None = None,
        allow_duplicate: bool = False,
        on_progress: Progress | None = None,
    ) -> UploadedFile:
        """Read a transition file (see `workers.files`) and append it as one version.

        The upload is named by the dataset and the file's content, so sending the same file again
        answers the version it made (`result.replayed`) and adds nothing; episode ids the file does not
        state are made up from its content too. `allow_duplicate` adds a copy all the same, under a fresh
        key and with fresh episode ids. With `create`, a dataset that does not exist yet is created with
        the spec inferred from the file.
        """
        raw = files.read_file(path, format)
        files.check_derived_episodes(raw)
        digest = files.content_digest(path, raw)
        salt = uuid.uuid4().hex if allow_duplicate else ""
        created = False
        if create:
            try:
                self.get_dataset(name)
            except ReplaybankError as error:
                if error.status != 404:
                    raise
                spec = files.infer_spec(raw, env_id=env_id, action_low=action_low, action_high=action_high)
                self.create_dataset(name, spec)
                created = True
        dataset = self.get_dataset(name)
        table = files.to_upload_table(raw, dataset, files.derived_episode_base(digest, salt))
        key = file_upload_key(name, digest, salt)
        result = self.upload(name, table, idempotency_key=key, on_progress=on_progress)
        return UploadedFile(result=result, dataset=dataset, created=created, description=files.describe(raw))


def file_upload_key(name: str, digest: str, salt: str = "") -> str:
    """The Idempotency-Key of a file's upload to dataset `name`: the same file gets the same key."""
    return f"file:{name}:{digest}" + (f":{salt}" if salt else "")


def _pieces(data: bytes) -> Iterator[memoryview]:
    """`data` in slices of at most `UPLOAD_PIECE` bytes, without copying it.

    httpcore copies whatever is left of a buffer after each partial socket send, which makes one large
    chunk cost time quadratic in its size; small pieces keep each of those copies small.
    """
    view = memoryview(data)
    for start in range(0, len(view), UPLOAD_PIECE):
        yield view[start : start + UPLOAD_PIECE]


class _Regenerable:
    """A request body that can be iterated again on retry (httpx iterates the content once per send)."""

    def __init__(self, make: Callable[[], Iterator[memoryview]]) -> None:
        self._make = make

    def __iter__(self) -> Iterator[memoryview]:
        return self._make()


class _ByteSink:
    """The file-like target of an Arrow IPC writer; hands what was written out in pieces."""

    def __init__(self) -> None:
        self.pieces: list[bytes] = []
        self.closed = False

    def write(self, data: Any) -> int:
        piece = bytes(data)
        self.pieces.append(piece)
        return len(piece)

    def flush(self) -> None:
        pass

    def close(self) -> None:
        self.closed = True

    def take(self) -> bytes:
        data = b"".join(self.pieces)
        self.pieces.clear()
        return data


def _arrow_stream(batches: Iterable[pa.RecordBatch]) -> Iterator[bytes]:
    """An Arrow IPC stream, one record batch at a time, so the body never sits whole in memory."""
    sink = _ByteSink()
    writer = None
    for batch in batches:
        if writer is None:
            writer = pa.ipc.new_stream(sink, batch.schema)
        writer.write_batch(batch)
        yield sink.take()
    if writer is not None:
        writer.close()
        yield sink.take()


def _arrow_stream_size(batches: list[pa.RecordBatch]) -> int:
    if not batches:
        return 0
    return batches[0].schema.serialize().size + sum(pa.ipc.get_record_batch_size(b) for b in batches) + 8


def _parquet_bytes(table: pa.Table) -> bytes:
    sink = pa.BufferOutputStream()
    pq.write_table(table, sink)
    return sink.getvalue().to_pybytes()


def _json_bytes(table: pa.Table) -> bytes:
    return json.dumps({"rows": table.to_pylist()}).encode()
