"""A content-addressed local cache of immutable dataset files.

Files are stored by their SHA-256, so a file shared by two versions (or two datasets) is downloaded once,
and pulling a newer version fetches only the files it adds. A download goes to `<digest>.partial` and is
renamed into place only once its checksum matches; an interrupted download resumes from the partial file.

Bodies are read straight into memory the download keeps (the caller's, when it wants the whole file
there to decode it), and large files are written from that memory with direct I/O where the file
system takes it: the bytes are in memory already, and a second copy of a file just read whole in the
page cache only crowds out other pages. On a 2-core VM, writing a 92 MB file through the page cache
took 0.2-0.4 CPU-seconds against 0.01 s direct.
"""

from __future__ import annotations

import errno
import fcntl
import hashlib
import os
import queue
import re
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pyarrow as pa

from workers.client.pull.download import Body

ALIGNMENT = 4096
"""Direct I/O wants memory addresses, file offsets and lengths in whole blocks; 4 KiB suits all common devices."""

PIECE = 4 << 20
"""Bytes received into memory, and written, at a time."""

DIRECT_WRITE_BYTES = 4 << 20
"""Files from this size on are written with direct I/O (smaller ones may well be read again soon)."""

RING_PIECES = 4
"""Pieces of memory a download that is not kept whole cycles through (receive one while others are written)."""

_DIGEST = re.compile(r"^[0-9a-f]{64}$")

RangeReader = Callable[[int], tuple[int, Body]]
"""Given an offset, open the file there; returns the offset the source actually starts at and its body."""

Filled = Callable[[int], None]
"""Called with `end` each time bytes [0, end) of the file are in the caller's memory."""


class ChecksumMismatch(Exception):
    """A downloaded file's SHA-256 is not the one the manifest promised; nothing was kept."""


def default_cache_dir() -> Path:
    configured = os.environ.get("REPLAYBANK_CACHE_DIR")
    if configured:
        return Path(configured)
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "replaybank"


def aligned_memory(size: int) -> memoryview:
    """Writable, uninitialised memory of `size` bytes starting on an ALIGNMENT boundary."""
    raw = pa.allocate_buffer(size + ALIGNMENT)
    skip = -raw.address % ALIGNMENT
    return memoryview(raw).cast("B")[skip : skip + size]


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
        into: memoryview | None = None,
        on_filled: Filled | None = None,
    ) -> tuple[Path, int]:
        """The cached file for `digest`, downloading what is missing; returns (path, bytes transferred).

        The download resumes from a partial file left by an earlier attempt. A lock file keeps two
        processes sharing the cache from writing the same partial file at once. Given `into` (at least
        `size` bytes), the whole file lands there too, what an earlier attempt left on disk included,
        and `on_filled` follows it, before the checksum is known: whatever the caller makes of those
        bytes must be dropped if this raises `ChecksumMismatch`. When the file is cached already,
        or another process finishes it first, nothing lands in `into`.
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
            memory = _WholeFile(into, size) if into is not None else _Ring(size)
            transferred = _download(digest, size, partial, open_at, memory, on_bytes, on_filled)
            # No fsync: a process crash cannot tear a renamed file, and a file cut short by a power
            # loss fails the size check in `has` and is fetched again.
            os.replace(partial, final)
        return final, transferred


def _download(
    digest: str,
    size: int,
    partial: Path,
    open_at: RangeReader,
    memory: _WholeFile | _Ring,
    on_bytes: Callable[[int], None] | None,
    on_filled: Filled | None,
) -> int:
    direct = size >= DIRECT_WRITE_BYTES
    have = min(partial.stat().st_size, size) if partial.exists() else 0
    start, body = open_at(have - have % ALIGNMENT if direct else have)  # direct writes go on at a block boundary
    hasher = hashlib.sha256()
    transferred = 0
    try:
        # The source may ignore the offset asked for (no Range support) and start earlier.
        with _PartialFile(partial, start, direct) as out, _Writer(out, hasher, memory) as writer:
            offset = 0
            with open(partial, "rb") as kept:  # what an earlier attempt left: read back for the checksum
                while offset < start:
                    piece = memory.take(offset)
                    count = kept.readinto(piece[: min(len(piece), start - offset)])
                    if not count:
                        memory.give_back(piece)
                        break
                    writer.put(offset, piece, count, write=False)
                    offset += count
                    if on_filled is not None:
                        on_filled(offset)
            while offset < size:
                piece = memory.take(offset)
                wanted = min(len(piece), size - offset)
                count = 0
                try:
                    while count < wanted and (received := body.readinto(piece[count:wanted])):
                        count += received
                finally:
                    # Even when the connection broke, what did arrive is kept for the next attempt.
                    if count:
                        writer.put(offset, piece, count, write=True)
                    else:
                        memory.give_back(piece)
                offset += count
                transferred += count
                if on_filled is not None and count:
                    on_filled(offset)
                if on_bytes is not None and count:
                    on_bytes(count)
                if count < wanted:  # the body ended early: the checksum below says so
                    break
    finally:
        body.close()
    if hasher.hexdigest() != digest:
        partial.unlink(missing_ok=True)
        raise ChecksumMismatch(f"file {digest[:12]}… arrived with SHA-256 {hasher.hexdigest()[:12]}…; discarded")
    return transferred


class _WholeFile:
    """The caller's memory for the whole file: each piece is the next stretch of it."""

    def __init__(self, memory: memoryview, size: int) -> None:
        if len(memory) < size:
            raise ValueError(f"memory of {len(memory)} bytes cannot hold a file of {size}")
        self._memory = memory

    def take(self, offset: int) -> memoryview:
        return self._memory[offset : offset + PIECE]

    def give_back(self, piece: memoryview) -> None:
        pass


class _Ring:
    """A few pieces of memory, each taken for the next stretch of the file and given back once written."""

    def __init__(self, size: int) -> None:
        piece = min(PIECE, max(size, 1))
        self._free: queue.Queue[memoryview] = queue.Queue()
        for _ in range(min(RING_PIECES, -(-max(size, 1) // piece))):
            self._free.put(aligned_memory(piece))

    def take(self, offset: int) -> memoryview:
        return self._free.get()

    def give_back(self, piece: memoryview) -> None:
        self._free.put(piece)


class _PartialFile:
    """The partial download, written at explicit offsets, directly while the pieces allow it."""

    def __init__(self, path: Path, keep: int, direct: bool) -> None:
        flags = os.O_WRONLY | os.O_CREAT | getattr(os, "O_CLOEXEC", 0)
        self._direct = False
        if direct and hasattr(os, "O_DIRECT"):
            try:
                self._fd = os.open(path, flags | os.O_DIRECT, 0o644)
                self._direct = True
            except OSError as error:  # a file system without direct I/O (tmpfs on older kernels, some FUSE)
                if error.errno != errno.EINVAL:
                    raise
        if not self._direct:
            self._fd = os.open(path, flags, 0o644)
        os.ftruncate(self._fd, keep)

    def __enter__(self) -> _PartialFile:
        return self

    def __exit__(self, *exc_info: object) -> None:
        os.close(self._fd)

    def write(self, offset: int, data: memoryview) -> None:
        if self._direct:
            whole = len(data) - len(data) % ALIGNMENT
            try:
                if offset % ALIGNMENT == 0 and whole:
                    self._write_all(offset, data[:whole])
                    offset, data = offset + whole, data[whole:]
            except OSError as error:  # the file system or this memory refuses direct I/O after all
                if error.errno != errno.EINVAL:
                    raise
            if data:  # the file's last, short block, or unaligned memory: through the page cache
                fcntl.fcntl(self._fd, fcntl.F_SETFL, fcntl.fcntl(self._fd, fcntl.F_GETFL) & ~os.O_DIRECT)
                self._direct = False
        self._write_all(offset, data)

    def _write_all(self, offset: int, data: memoryview) -> None:
        while data:
            written = os.pwrite(self._fd, data, offset)
            offset, data = offset + written, data[written:]


class _Writer:
    """Hashes, and writes, pieces in file order on a thread of its own, overlapping the next receive.

    (SHA-256 of large buffers and file writes release the GIL.)
    """

    def __init__(self, out: _PartialFile, hasher: Any, memory: _WholeFile | _Ring) -> None:
        self._out = out
        self._hasher = hasher
        self._memory = memory
        self._queue: queue.Queue[tuple[int, memoryview, int, bool] | None] = queue.Queue()
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._drain, name="replaybank-cache-writer", daemon=True)

    def __enter__(self) -> _Writer:
        self._thread.start()
        return self

    def put(self, offset: int, piece: memoryview, count: int, write: bool) -> None:
        """Hash `piece[:count]` (and write it at `offset`), then give `piece` back to the memory it came from."""
        if self._error is not None:
            self._memory.give_back(piece)
            raise self._error
        self._queue.put((offset, piece, count, write))

    def _drain(self) -> None:
        while (item := self._queue.get()) is not None:
            offset, piece, count, write = item
            if self._error is None:  # after an error, keep draining so every piece goes back
                try:
                    self._hasher.update(piece[:count])
                    if write:
                        self._out.write(offset, piece[:count])
                except BaseException as error:  # handed to the receiving thread, which raises it
                    self._error = error
            self._memory.give_back(piece)

    def __exit__(self, *exc_info: object) -> None:
        self._queue.put(None)
        self._thread.join()
        if self._error is not None and exc_info[0] is None:
            raise self._error
