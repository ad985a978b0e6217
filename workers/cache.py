"""A content-addressed local cache of immutable dataset files.

Files are stored by their SHA-256, so a file shared by two versions (or two datasets) is downloaded once,
and pulling a newer version fetches only the files it adds. A download goes to `<digest>.partial` and is
renamed into place only once its checksum matches; an interrupted download resumes from the partial file.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import queue
import re
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, BinaryIO

CHUNK = 1 << 20
_DIGEST = re.compile(r"^[0-9a-f]{64}$")

RangeReader = Callable[[int], tuple[int, Iterator[bytes]]]
"""Given an offset, open the file there; returns the offset the source actually starts at and its bytes."""

WrittenObserver = Callable[[int, bytes], None]
"""Called with (file offset, chunk) after each downloaded chunk is written, in file order."""


class ChecksumMismatch(Exception):
    """A downloaded file's SHA-256 is not the one the manifest promised; nothing was kept."""


def default_cache_dir() -> Path:
    configured = os.environ.get("REPLAYBANK_CACHE_DIR")
    if configured:
        return Path(configured)
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "replaybank"


class FileCache:
    def __init__(self, root: str | Path | None = None) -> None:
        self.root = Path(root) if root is not None else default_cache_dir()

    def path(self, digest: str) -> Path:
        if not _DIGEST.match(digest):
            raise ValueError(f"not a lowercase hex SHA-256: {digest!r}")
        return self.root / "sha256" / digest[:2] / digest

    def has(self, digest: str, size: int | None = None) -> bool:
        """Whether the file is cached (and, given its size, complete)."""
        try:
            actual = self.path(digest).stat().st_size
        except FileNotFoundError:
            return False
        return size is None or actual == size

    def fetch(
        self,
        digest: str,
        size: int,
        open_at: RangeReader,
        on_bytes: Callable[[int], None] | None = None,
        on_written: WrittenObserver | None = None,
    ) -> tuple[Path, int]:
        """The cached file for `digest`, downloading what is missing; returns (path, bytes transferred).

        The download resumes from a partial file left by an earlier attempt. A lock file keeps two
        processes sharing the cache from writing the same partial file at once. `on_written` sees
        the downloaded chunks (not those already on disk) on the writer thread, before the checksum
        is known: whatever it makes of them must be dropped if this raises `ChecksumMismatch`.
        """
        final = self.path(digest)
        if self.has(digest, size):
            return final, 0
        final.parent.mkdir(parents=True, exist_ok=True)
        partial = final.with_name(digest + ".partial")
        with open(final.with_name(digest + ".lock"), "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            if self.has(digest, size):  # another process finished it while we waited
                return final, 0
            transferred = self._download(digest, size, partial, open_at, on_bytes, on_written)
            # No fsync: a process crash cannot tear a renamed file, and a file cut short by a power
            # loss fails the size check in `has` and is fetched again.
            os.replace(partial, final)
        return final, transferred

    def _download(
        self,
        digest: str,
        size: int,
        partial: Path,
        open_at: RangeReader,
        on_bytes: Callable[[int], None] | None,
        on_written: WrittenObserver | None,
    ) -> int:
        have = partial.stat().st_size if partial.exists() else 0
        if have > size:
            have = 0
        start, chunks = open_at(have)
        hasher = hashlib.sha256()
        transferred = 0
        with open(partial, "r+b" if partial.exists() else "wb") as out:
            # The source may ignore the offset asked for (no Range support) and start earlier.
            out.truncate(start)
            out.seek(0)
            while out.tell() < start:
                block = out.read(min(CHUNK, start - out.tell()))
                if not block:
                    break
                hasher.update(block)
            out.seek(start)
            with _Sink(out, hasher, start, on_written) as sink:
                for chunk in chunks:
                    sink.put(chunk)
                    transferred += len(chunk)
                    if on_bytes is not None:
                        on_bytes(len(chunk))
        if hasher.hexdigest() != digest:
            partial.unlink(missing_ok=True)
            raise ChecksumMismatch(f"file {digest[:12]}… arrived with SHA-256 {hasher.hexdigest()[:12]}…; discarded")
        return transferred


class _Sink:
    """Writes and hashes chunks on a thread of its own, so both overlap with receiving the next chunk.

    (File writes and SHA-256 of large buffers release the GIL.)
    """

    def __init__(self, out: BinaryIO, hasher: Any, offset: int, on_written: WrittenObserver | None) -> None:
        self._out = out
        self._hasher = hasher
        self._offset = offset
        self._on_written = on_written
        self._queue: queue.Queue[bytes | None] = queue.Queue(maxsize=32)
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._drain, name="replaybank-cache-writer", daemon=True)

    def __enter__(self) -> "_Sink":
        self._thread.start()
        return self

    def put(self, chunk: bytes) -> None:
        if self._error is not None:
            raise self._error
        self._queue.put(chunk)

    def _drain(self) -> None:
        while (chunk := self._queue.get()) is not None:
            if self._error is not None:
                continue  # keep draining so the producer never blocks on a full queue
            try:
                self._out.write(chunk)
                self._hasher.update(chunk)
                if self._on_written is not None:
                    self._on_written(self._offset, chunk)
                self._offset += len(chunk)
            except BaseException as error:  # handed to the producer thread, which raises it
                self._error = error

    def __exit__(self, *exc_info: object) -> None:
        self._queue.put(None)
        self._thread.join()
        if self._error is not None and exc_info[0] is None:
            raise self._error
