"""The HTTP client of replaybank, shared by users and workers.

Everything goes through `_request`, which adds the bearer token, retries transport failures of requests
that are safe to repeat, and turns error envelopes into `ReplaybankError`. Uploads stream Arrow IPC
record batches as the body; pulls fetch a version's immutable Parquet files through a local
content-addressed cache, so a newer version downloads only the files it adds.
"""

from __future__ import annotations

import functools
import json
import subprocess
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import quote

import httpx
import pyarrow as pa
import pyarrow.parquet as pq
from pydantic import BaseModel

from schemas.dataset import (
    AppendResult,
    DatasetCreate,
    DatasetPublic,
    DatasetSpec,
    FileEntry,
    QueryRequest,
    QueryResult,
    TagPublic,
    VersionFiles,
    VersionPublic,
    VersionStats,
)
from schemas.tokens import TokenCreated, TokenPublic
from schemas.transition import transition_schema
from workers import formats
from workers.cache import FileCache
from workers.decode import StreamingDecoder, footer_size, read_parquet
from workers.download import Body, BulkDownloader, PiecesBody, TransferFailed

Version = int | str
"""A version number, `latest`, or a tag."""

Progress = Callable[[int, int], None]
"""Called with (bytes done, bytes in all) as a transfer advances."""

ModelT = TypeVar("ModelT", bound=BaseModel)
ResultT = TypeVar("ResultT")

CONTENT_TYPES = {
    "arrow": "application/vnd.apache.arrow.stream",
    "parquet": "application/vnd.apache.parquet",
    "json": "application/json",
}

_IDEMPOTENT_METHODS = frozenset({"GET", "HEAD", "PUT", "DELETE"})

FETCH_THREADS = 4
"""How many files a pull downloads (and reads) at once."""

UPLOAD_PIECE = 1 << 20
"""The largest piece of a request body handed to the HTTP stack at once."""

BULK_DOWNLOAD_BYTES = 4 << 20
"""Files from this size on come down through `BulkDownloader` (smaller ones reuse httpx's pooled connections)."""

STREAMED_DECODE_BYTES = 16 << 20
"""Files from this size on are decoded while they download (smaller ones gain less than the footer request costs)."""

FOOTER_GUESS = 64 << 10
"""Bytes asked for first when fetching a Parquet footer; a larger footer takes a second request."""


class ReplaybankError(Exception):
    """The service refused a request (or could not be reached: status 0)."""

    def __init__(self, status: int, code: str, message: str, field: str | None = None) -> None:
        super().__init__(f"{message} [{status} {code}{f', field {field}' if field else ''}]")
        self.status = status
        self.code = code
        self.message = message
        self.field = field


@dataclass(frozen=True)
class PulledFiles:
    """A version's files, all in the local cache."""

    version: int
    paths: list[Path]
    total_bytes: int
    transferred_bytes: int
    """Bytes downloaded by this pull; 0 when every file was already cached."""


@dataclass(frozen=True)
class UploadedFile:
    result: AppendResult
    dataset: DatasetPublic
    created: bool
    """Whether the upload created the dataset."""
    description: str
    """What was read from the file, and anything derived or dropped on the way."""


class ReplaybankClient:
    def __init__(
        self,
        url: str,
        token: str | None = None,
        *,
        timeout: float = 300.0,
        retries: int = 3,
        cache: FileCache | str | Path | None = None,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self._http = httpx.Client(
            base_url=url.rstrip("/"),
            headers=headers,
            timeout=httpx.Timeout(timeout, connect=min(timeout, 10.0)),
            transport=transport,
        )
        self.retries = retries
        self.cache = cache if isinstance(cache, FileCache) else FileCache(cache)
        # Large files come down through http.client (see workers/download.py), unless a transport was
        # injected or a proxy applies, which only httpx knows how to use.
        self._bulk: BulkDownloader | None = None
        if transport is None and BulkDownloader.usable_for(url):
            ssl_context = httpx.create_ssl_context() if url.startswith("https:") else None
            self._bulk = BulkDownloader(url, headers, timeout, ssl_context)

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> "ReplaybankClient":
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # --- the core -------------------------------------------------------------------------------------

    def _request(
        self,
        method: str,
        path: str,
        *,
        retry: bool | None = None,
        stream: bool = False,
        **kwargs: Any,
    ) -> httpx.Response:
        """Send one request; retries transport failures when `retry` (default: for idempotent methods).

        A streamed response is returned open: the caller reads and closes it.
        """
        retry = method in _IDEMPOTENT_METHODS if retry is None else retry
        attempts = self.retries + 1 if retry else 1
        for attempt in range(attempts):
            try:
                request = self._http.build_request(method, path, **kwargs)
                response = self._http.send(request, stream=stream)
                break
            except httpx.TransportError as error:
                if attempt + 1 >= attempts:
                    raise ReplaybankError(
                        0, "unreachable", f"{method} {self._http.base_url}{path} failed: {error or type(error).__name__}"
                    ) from error
                time.sleep(min(0.25 * 2**attempt, 4.0))
        if response.status_code >= 400:
            if stream:
                response.read()
                response.close()
            raise _error_from(response)
        return response

    def _json(self, method: str, path: str, **kwargs: Any) -> Any:
        return self._request(method, path, **kwargs).json()

    def _model(self, model: type[ModelT], method: str, path: str, **kwargs: Any) -> ModelT:
        return model.model_validate(self._json(method, path, **kwargs))

    def _paginate(self, model: type[ModelT], path: str, params: dict[str, Any] | None = None, limit: int = 100) -> list[ModelT]:
        """Every item of a paged list (`{data, count, next}`), following the cursors."""
        items: list[ModelT] = []
        query = {**(params or {}), "limit": limit}
        while True:
            page = self._json("GET", path, params=query)
            items.extend(model.model_validate(item) for item in page["data"])
            if not page.get("next"):
                return items
            query["cursor"] = page["next"]

    # --- service ----------------------------------------------------------------------------------------

    def health(self) -> dict[str, Any]:
        return self._json("GET", "/healthz")

    # --- datasets ---------------------------------------------------------------------------------------

    def create_dataset(self, name: str, spec: DatasetSpec, *, metadata: dict[str, Any] | None = None) -> DatasetPublic:
        body = DatasetCreate(
            name=name, observation=spec.observation, action=spec.action, env_id=spec.env_id, metadata=metadata or {}
        )
        return self._model(DatasetPublic, "POST", "/v1/datasets", json=body.model_dump(mode="json"))

    def list_datasets(self, *, page_size: int = 100) -> list[DatasetPublic]:
        return self._paginate(DatasetPublic, "/v1/datasets", limit=page_size)

    def get_dataset(self, name: str) -> DatasetPublic:
        return self._model(DatasetPublic, "GET", _dataset(name))

    def delete_dataset(self, name: str) -> None:
        self._request("DELETE", _dataset(name))

    # --- uploads ----------------------------------------------------------------------------------------

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
        headers = {"Content-Type": content_type, "Idempotency-Key": key}
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
            f"{_dataset(name)}/transitions",
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
        idempotency_key: str | None = None,
        on_progress: Progress | None = None,
    ) -> UploadedFile:
        """Read a transition file (see `workers.formats`) and append it as one version.

        With `create`, a dataset that does not exist yet is created with the spec inferred from the file.
        Episode ids the file does not state are numbered after the dataset's last episode, so files
        appended one after another never share an episode.
        """
        raw = formats.read_file(path, format)
        created = False
        if create:
            try:
                self.get_dataset(name)
            except ReplaybankError as error:
                if error.status != 404:
                    raise
                spec = formats.infer_spec(raw, env_id=env_id, action_low=action_low, action_high=action_high)
                self.create_dataset(name, spec)
                created = True
        dataset = self.get_dataset(name)
        first_episode_id = 0
        if raw.episode_ids_derived and dataset.rows:
            first_episode_id = self.next_episode_id(name)
        table = formats.to_upload_table(raw, dataset, first_episode_id)
        result = self.upload(name, table, idempotency_key=idempotency_key, on_progress=on_progress)
        return UploadedFile(result=result, dataset=dataset, created=created, description=formats.describe(raw))

    def next_episode_id(self, name: str, version: Version = "latest") -> int:
        """One more than the largest episode id in a version (0 when it is empty)."""
        table = self.query(name, "SELECT coalesce(max(episode_id) + 1, 0) AS next FROM transitions", version, format="arrow")
        return int(table.column("next")[0].as_py())

    # --- versions ---------------------------------------------------------------------------------------

    def versions(self, name: str, *, page_size: int = 100) -> list[VersionPublic]:
        return self._paginate(VersionPublic, f"{_dataset(name)}/versions", limit=page_size)

    def version_stats(self, name: str, version: Version = "latest") -> VersionStats:
        return self._model(VersionStats, "GET", _version(name, version))

    def tag(self, name: str, tag: str, version: Version) -> TagPublic:
        return self._model(TagPublic, "PUT", f"{_dataset(name)}/tags/{quote(tag, safe='')}", json={"version": version})

    def delete_tag(self, name: str, tag: str) -> None:
        self._request("DELETE", f"{_dataset(name)}/tags/{quote(tag, safe='')}")

    # --- pulls ------------------------------------------------------------------------------------------

    def files(self, name: str, version: Version = "latest") -> VersionFiles:
        """The manifest of a version's immutable Parquet files (path, size, sha256, rows each)."""
        return self._model(VersionFiles, "GET", f"{_version(name, version)}/files")

    def pull_files(self, name: str, version: Version = "latest", *, on_progress: Progress | None = None) -> PulledFiles:
        """Bring every file of a version into the cache, downloading only those not there yet."""
        manifest = self.files(name, version)
        missing = [entry for entry in manifest.data if not self.cache.has(entry.sha256, entry.size)]

        def fetch(entry: FileEntry, advanced: Callable[[int], None]) -> None:
            self._fetch_file(name, manifest.version, entry, advanced)

        _, transferred = self._for_each_file(missing, missing, on_progress, fetch)
        return PulledFiles(
            version=manifest.version,
            paths=[self.cache.path(entry.sha256) for entry in manifest.data],
            total_bytes=sum(entry.size for entry in manifest.data),
            transferred_bytes=transferred,
        )

    def pull(self, name: str, version: Version = "latest", *, on_progress: Progress | None = None) -> pa.Table:
        """A whole version as one Arrow table in the dataset's schema, through the local file cache.

        A large file that is not cached yet is decoded row group by row group while it downloads, so
        reading overlaps the transfer; its rows are returned only once the file's checksum matches.
        """
        return self._pull(name, version, on_progress)[0]

    def _pull(self, name: str, version: Version, on_progress: Progress | None) -> tuple[pa.Table, PulledFiles]:
        schema = transition_schema(self.get_dataset(name))
        manifest = self.files(name, version)
        missing = [entry for entry in manifest.data if not self.cache.has(entry.sha256, entry.size)]

        def table_of(entry: FileEntry, advanced: Callable[[int], None]) -> pa.Table:
            if entry.size >= STREAMED_DECODE_BYTES and not self.cache.has(entry.sha256, entry.size):
                return self._fetch_decoding(name, manifest.version, entry, schema.names, advanced)
            self._fetch_file(name, manifest.version, entry, advanced)
            return read_parquet(self.cache.path(entry.sha256), schema.names)

        tables, transferred = self._for_each_file(manifest.data, missing, on_progress, table_of)
        if not tables:
            table = schema.empty_table()
        else:
            table = tables[0] if len(tables) == 1 else pa.concat_tables(tables, promote_options="permissive")
            # Delta Lake stores fixed-size lists as plain lists; the cast restores them.
            table = table.cast(schema)
        pulled = PulledFiles(
            version=manifest.version,
            paths=[self.cache.path(entry.sha256) for entry in manifest.data],
            total_bytes=sum(entry.size for entry in manifest.data),
            transferred_bytes=transferred,
        )
        return table, pulled

    def _for_each_file(
        self,
        entries: list[FileEntry],
        missing: list[FileEntry],
        on_progress: Progress | None,
        work: Callable[[FileEntry, Callable[[int], None]], ResultT],
    ) -> tuple[list[ResultT], int]:
        """`work(entry, advanced)` for each entry, several at once; returns the results and bytes downloaded.

        `advanced(count)` reports downloaded bytes to `on_progress`, out of the size of `missing`.
        """
        to_fetch = sum(entry.size for entry in missing)
        done = 0
        counting = threading.Lock()

        def advanced(count: int) -> None:
            nonlocal done
            with counting:
                done += count
                if on_progress is not None:
                    on_progress(done, to_fetch)

        if len(entries) <= 1:
            results = [work(entry, advanced) for entry in entries]
        else:
            # Several connections at once hide each one's latency and per-file costs, and decoding
            # releases the GIL; a few are enough.
            with ThreadPoolExecutor(min(FETCH_THREADS, len(entries)), thread_name_prefix="replaybank-pull") as pool:
                futures = [pool.submit(work, entry, advanced) for entry in entries]
                try:
                    results = [future.result() for future in futures]
                finally:
                    for future in futures:
                        future.cancel()
        if on_progress is not None:
            on_progress(done, to_fetch)
        return results, done

    def _file_url(self, name: str, version: int, entry: FileEntry) -> str:
        return f"{_version(name, version)}/files/{quote(entry.path, safe='')}"

    def _fetch_file(
        self,
        name: str,
        version: int,
        entry: FileEntry,
        advanced: Callable[[int], None],
        decoder: StreamingDecoder | None = None,
    ) -> None:
        """Download one file into the cache (and `decoder`'s memory), resuming with HTTP Range after a broken connection."""
        url = self._file_url(name, version, entry)

        def open_at(offset: int) -> tuple[int, Body]:
            headers = {"Range": f"bytes={offset}-"} if offset else {}
            if self._bulk is not None and entry.size >= BULK_DOWNLOAD_BYTES:
                opened = self._bulk.get(url, headers)
                if opened.status >= 400:
                    raise _error_from(httpx.Response(opened.status, headers=opened.headers, content=opened.body.read()))
                return (offset if opened.status == 206 else 0), opened.body
            response = self._request("GET", url, headers=headers, stream=True)
            start = offset if response.status_code == 206 else 0
            return start, PiecesBody(response.iter_bytes(), response.close)

        streaming = decoder is not None and decoder.memory is not None
        for attempt in range(self.retries + 1):
            try:
                if streaming:
                    self.cache.fetch(entry.sha256, entry.size, open_at, advanced, decoder.memory, decoder.filled)
                else:
                    self.cache.fetch(entry.sha256, entry.size, open_at, advanced)
                return
            except (httpx.TransportError, TransferFailed) as error:
                # What arrived stays in the partial file; the next attempt asks for the rest. The
                # decoder may still be reading what the first attempt put in its memory, so later
                # attempts leave that memory alone and the decoder reads the cached file instead.
                if streaming:
                    decoder.abandon()
                    streaming = False
                if attempt >= self.retries:
                    raise ReplaybankError(
                        0, "unreachable", f"downloading {entry.path} failed: {error or type(error).__name__}"
                    ) from error
                time.sleep(min(0.25 * 2**attempt, 4.0))

    def _fetch_decoding(
        self, name: str, version: int, entry: FileEntry, columns: list[str], advanced: Callable[[int], None]
    ) -> pa.Table:
        """Download one Parquet file into the cache and return its rows, decoded while it arrives."""
        tail = self._file_tail(self._file_url(name, version, entry), entry.size)
        with StreamingDecoder(tail, entry.size, columns) as decoder:
            self._fetch_file(name, version, entry, advanced, decoder)
            return decoder.table(self.cache.path(entry.sha256))

    def _file_tail(self, url: str, size: int) -> bytes:
        """The end of a Parquet file holding its whole footer (two suffix Range requests at most)."""
        tail = self._request("GET", url, headers={"Range": f"bytes=-{min(FOOTER_GUESS, size)}"}).content
        needed = footer_size(tail)
        if needed is not None and len(tail) < needed <= size:
            tail = self._request("GET", url, headers={"Range": f"bytes=-{needed}"}).content
        return tail

    def pull_to_file(
        self, name: str, version: Version, out: str | Path, *, on_progress: Progress | None = None
    ) -> PulledFiles:
        """Pull a version (through the cache) and write it as Parquet or D4RL-layout HDF5, by `out`'s suffix."""
        formats.output_format(out)  # refuse an unknown suffix before downloading anything
        dataset = self.get_dataset(name)
        spec = DatasetSpec(observation=dataset.observation, action=dataset.action, env_id=dataset.env_id)
        table, pulled = self._pull(name, version, on_progress)
        formats.write_file(table, out, spec)
        return pulled

    def pull_stream(self, name: str, version: Version = "latest") -> pa.Table:
        """A whole version as one Arrow IPC stream, bypassing the cache."""
        response = self._request(
            "GET", f"{_version(name, version)}/transitions", headers={"Accept": CONTENT_TYPES["arrow"]}
        )
        return pa.ipc.open_stream(pa.py_buffer(response.content)).read_all()

    # --- queries ----------------------------------------------------------------------------------------

    def query(
        self, name: str, sql: str, version: Version = "latest", *, format: str = "json", max_rows: int | None = None
    ) -> QueryResult | pa.Table:
        """Run one read-only SELECT over the view `transitions` of a version.

        `format="json"` returns a `QueryResult` (columns, rows, truncated); `"arrow"` a `pa.Table`.
        """
        if format not in ("json", "arrow"):
            raise ValueError("format must be 'json' or 'arrow'")
        body = QueryRequest(sql=sql, version=version, max_rows=max_rows).model_dump(mode="json", exclude_none=True)
        response = self._request("POST", f"{_dataset(name)}/query", json=body, headers={"Accept": CONTENT_TYPES[format]})
        if format == "arrow":
            return pa.ipc.open_stream(pa.py_buffer(response.content)).read_all()
        return QueryResult.model_validate_json(response.content)

    # --- tokens -----------------------------------------------------------------------------------------

    def create_token(self, name: str, scopes: list[str]) -> TokenCreated:
        return self._model(TokenCreated, "POST", "/v1/tokens", json={"name": name, "scopes": scopes})

    def list_tokens(self) -> list[TokenPublic]:
        return self._paginate(TokenPublic, "/v1/tokens")

    def revoke_token(self, token_id: str) -> None:
        self._request("DELETE", f"/v1/tokens/{quote(token_id, safe='')}")


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


def _error_from(response: httpx.Response) -> ReplaybankError:
    try:
        error = response.json()["error"]
        return ReplaybankError(response.status_code, error["code"], error["message"], error.get("field"))
    except (ValueError, KeyError, TypeError):
        text = response.text.strip()[:500] or response.reason_phrase
        return ReplaybankError(response.status_code, "http_error", text)


class ServiceNotReady(Exception):
    """A service being started did not come up: its process ended, or /healthz never answered."""


def wait_until_healthy(url: str, process: subprocess.Popen | None = None, timeout: float = 60.0) -> None:
    """Poll `url`/healthz until it answers 200, for callers that have just started `replaybank serve`.

    Raises `ServiceNotReady` when `process` exits first or `timeout` seconds pass.
    """
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise ServiceNotReady(f"the service exited with status {process.returncode}")
        try:
            if httpx.get(f"{url.rstrip('/')}/healthz", timeout=1).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    raise ServiceNotReady(f"the service did not answer {url}/healthz within {timeout:g} s")


def _dataset(name: str) -> str:
    return f"/v1/datasets/{quote(name, safe='')}"


def _version(name: str, version: Version) -> str:
    return f"{_dataset(name)}/versions/{quote(str(version), safe='')}"


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
