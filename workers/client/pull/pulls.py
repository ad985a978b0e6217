"""The pull path: a version's immutable Parquet files, fetched through the local cache, as one Arrow table.

Only the files the cache lacks are downloaded, several at once; a broken download resumes with HTTP
Range; a large file is decoded while it arrives (see `decode`) and its rows handed out only once its
checksum matches (see `cache`). Large files come down through `download.BulkDownloader` rather than
httpx, which costs several times the CPU per byte.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import httpx
import pyarrow as pa

from schemas.dataset import DatasetSpec, FileEntry, VersionFiles
from schemas.transition import transition_schema
from workers.client.datasets import Datasets
from workers.client.http import CONTENT_TYPES, Progress, ReplaybankError, Version, backoff, error_from, segment, version_path
from workers.client.pull.cache import FileCache
from workers.client.pull.decode import StreamingDecoder, footer_size, read_parquet
from workers.client.pull.download import Body, BulkDownloader, PiecesBody, TransferFailed
from workers.files import output_format, write_file

ResultT = TypeVar("ResultT")

FETCH_THREADS = 4
"""How many files a pull downloads (and reads) at once."""

BULK_DOWNLOAD_BYTES = 4 << 20
"""Files from this size on come down through `BulkDownloader` (smaller ones reuse httpx's pooled connections)."""

STREAMED_DECODE_BYTES = 16 << 20
"""Files from this size on are decoded while they download (smaller ones gain less than the footer request costs)."""

FOOTER_GUESS = 64 << 10
"""Bytes asked for first when fetching a Parquet footer; a larger footer takes a second request."""


@dataclass(frozen=True)
class PulledFiles:
    """A version's files, all in the local cache."""

    version: int
    paths: list[Path]
    total_bytes: int
    transferred_bytes: int
    """Bytes downloaded by this pull; 0 when every file was already cached."""


class Pulls(Datasets):
    def __init__(self, url: str, token: str | None = None, *, cache: FileCache | str | Path | None = None, **http: Any) -> None:
        """`cache`: a `FileCache` or its folder (default REPLAYBANK_CACHE_DIR or ~/.cache/replaybank);
        `http`: `timeout`, `retries` and `transport`, as `ClientCore` takes them."""
        super().__init__(url, token, **http)
        self.cache = cache if isinstance(cache, FileCache) else FileCache(cache)
        # Large files come down through http.client (see download.py), unless a transport was injected
        # or a proxy applies, which only httpx knows how to use.
        self._bulk: BulkDownloader | None = None
        if not self._transport_injected and BulkDownloader.usable_for(self.url):
            ssl_context = httpx.create_ssl_context() if self.url.startswith("https:") else None
            self._bulk = BulkDownloader(self.url, self._auth, self.timeout, ssl_context)

    def files(self, name: str, version: Version = "latest") -> VersionFiles:
        """The manifest of a version's immutable Parquet files (path, size, sha256, rows each)."""
        return self._model(VersionFiles, "GET", f"{version_path(name, version)}/files")

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
        return f"{version_path(name, version)}/files/{segment(entry.path)}"

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
                    raise error_from(httpx.Response(opened.status, headers=opened.headers, content=opened.body.read()))
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
                time.sleep(backoff(attempt))

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
        """Pull a version (through the cache) and write it as Parquet or D4RL-layout HDF5, by `out`'s suffix.

        The file is written beside `out` and moved there once complete, so a failure leaves no partial file.
        """
        output_format(out)  # refuse an unknown suffix before downloading anything
        dataset = self.get_dataset(name)
        spec = DatasetSpec(observation=dataset.observation, action=dataset.action, env_id=dataset.env_id)
        table, pulled = self._pull(name, version, on_progress)
        target = Path(out)
        partial = target.with_name(f".{target.name}.part{target.suffix}")
        try:
            write_file(table, partial, spec)
            partial.replace(target)
        finally:
            partial.unlink(missing_ok=True)
        return pulled

    def pull_stream(self, name: str, version: Version = "latest") -> pa.Table:
        """A whole version as one Arrow IPC stream, bypassing the cache."""
        response = self._request(
            "GET", f"{version_path(name, version)}/transitions", headers={"Accept": CONTENT_TYPES["arrow"]}
        )
        return pa.ipc.open_stream(pa.py_buffer(response.content)).read_all()

