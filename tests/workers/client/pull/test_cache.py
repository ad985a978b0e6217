"""The content-addressed file cache: verified, atomic, resumable downloads."""

from __future__ import annotations

import errno
import hashlib
import os
from collections.abc import Iterator

import pytest

from workers.client.pull import cache as cache_module
from workers.client.pull.cache import ALIGNMENT, DIRECT_WRITE_BYTES, ChecksumMismatch, FileCache, aligned_memory
from workers.client.pull.download import PiecesBody

CONTENT = bytes(range(256)) * 4096  # 1 MiB
DIGEST = hashlib.sha256(CONTENT).hexdigest()


class Source:
    """Serves CONTENT from an offset, in small chunks, optionally breaking after some bytes."""

    def __init__(
        self, honours_range: bool = True, break_after: int | None = None, content: bytes = CONTENT, chunk: int = 65536
    ) -> None:
        self.chunk = chunk
        self.honours_range = honours_range
        self.break_after = break_after
        self.content = content
        self.offsets: list[int] = []

    def __call__(self, offset: int) -> tuple[int, PiecesBody]:
        self.offsets.append(offset)
        start = offset if self.honours_range else 0

        def chunks() -> Iterator[bytes]:
            sent = 0
            for position in range(start, len(self.content), self.chunk):
                if self.break_after is not None and sent >= self.break_after:
                    raise ConnectionResetError("connection broke")
                piece = self.content[position : position + self.chunk]
                sent += len(piece)
                yield piece

        return start, PiecesBody(chunks())


def test_fetch_downloads_once_and_verifies(tmp_path) -> None:
    cache = FileCache(tmp_path)
    source = Source()

    path, transferred = cache.fetch(DIGEST, len(CONTENT), source)
    again, transferred_again = cache.fetch(DIGEST, len(CONTENT), source)

    assert path.read_bytes() == CONTENT
    assert (transferred, transferred_again) == (len(CONTENT), 0)
    assert again == path and source.offsets == [0]
    assert not list(tmp_path.rglob("*.partial"))


@pytest.mark.parametrize("honours_range", [True, False])
def test_broken_download_resumes_from_the_partial_file(tmp_path, honours_range: bool) -> None:
    cache = FileCache(tmp_path)
    with pytest.raises(ConnectionResetError):
        cache.fetch(DIGEST, len(CONTENT), Source(break_after=300_000))
    assert not cache.has(DIGEST)

    source = Source(honours_range=honours_range)
    path, transferred = cache.fetch(DIGEST, len(CONTENT), source)

    assert path.read_bytes() == CONTENT
    assert source.offsets[0] >= 300_000
    assert transferred == (len(CONTENT) - source.offsets[0] if honours_range else len(CONTENT))


def test_checksum_mismatch_keeps_nothing(tmp_path) -> None:
    cache = FileCache(tmp_path)
    corrupted = bytearray(CONTENT)
    corrupted[1000] ^= 0xFF

    with pytest.raises(ChecksumMismatch):
        cache.fetch(DIGEST, len(CONTENT), Source(content=bytes(corrupted)))

    assert not cache.has(DIGEST)
    assert not list(tmp_path.rglob("*.partial"))


def test_default_location_follows_the_environment(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("REPLAYBANK_CACHE_DIR", str(tmp_path / "here"))
    assert FileCache().root == tmp_path / "here"
    with pytest.raises(ValueError):
        FileCache().path("../../etc/passwd")


def test_a_cached_file_of_the_wrong_size_is_fetched_again(tmp_path) -> None:
    cache = FileCache(tmp_path)
    cache.path(DIGEST).parent.mkdir(parents=True)
    cache.path(DIGEST).write_bytes(CONTENT[:100])  # as a power loss after the rename may leave it

    assert cache.has(DIGEST) and not cache.has(DIGEST, len(CONTENT))
    path, transferred = cache.fetch(DIGEST, len(CONTENT), Source())

    assert transferred == len(CONTENT) and path.read_bytes() == CONTENT


def test_a_failing_write_stops_the_download(tmp_path, monkeypatch) -> None:
    cache = FileCache(tmp_path)
    writes = []
    real_pwrite = os.pwrite

    def pwrite(fd: int, data, offset: int) -> int:
        writes.append(offset)
        if len(writes) > 1:
            raise OSError(errno.ENOSPC, "no space left on device")
        return real_pwrite(fd, data, offset)

    monkeypatch.setattr(cache_module, "PIECE", 256 << 10)  # four pieces, so the failure comes mid-file
    monkeypatch.setattr(os, "pwrite", pwrite)
    with pytest.raises(OSError, match="no space left"):
        cache.fetch(DIGEST, len(CONTENT), Source())
    assert not cache.has(DIGEST)


LARGE = os.urandom(DIRECT_WRITE_BYTES + 3 * ALIGNMENT + 123)  # whole blocks, then a short last one
LARGE_DIGEST = hashlib.sha256(LARGE).hexdigest()


def opened_flags(monkeypatch) -> list[int]:
    flags: list[int] = []
    real_open = os.open

    def spy(path, mode, *args, **kwargs):
        if str(path).endswith(".partial"):
            flags.append(mode)
        return real_open(path, mode, *args, **kwargs)

    monkeypatch.setattr(os, "open", spy)
    return flags


def test_large_files_are_written_directly_and_small_ones_through_the_page_cache(tmp_path, monkeypatch) -> None:
    cache = FileCache(tmp_path)
    flags = opened_flags(monkeypatch)

    large, _ = cache.fetch(LARGE_DIGEST, len(LARGE), Source(content=LARGE))
    small, _ = cache.fetch(DIGEST, len(CONTENT), Source())

    assert large.read_bytes() == LARGE and small.read_bytes() == CONTENT
    direct = getattr(os, "O_DIRECT", 0)  # Linux's; elsewhere every file goes through the page cache
    assert [bool(flag & direct) for flag in flags] == [bool(direct), False]


def test_a_file_system_without_direct_io_gets_plain_writes(tmp_path, monkeypatch) -> None:
    cache = FileCache(tmp_path)
    real_open = os.open

    def no_direct(path, mode, *args, **kwargs):
        if mode & getattr(os, "O_DIRECT", 0):
            raise OSError(errno.EINVAL, "Invalid argument")
        return real_open(path, mode, *args, **kwargs)

    monkeypatch.setattr(os, "open", no_direct)
    path, transferred = cache.fetch(LARGE_DIGEST, len(LARGE), Source(content=LARGE))
    assert path.read_bytes() == LARGE and transferred == len(LARGE)


def test_a_direct_write_refused_midway_goes_on_through_the_page_cache(tmp_path, monkeypatch) -> None:
    cache = FileCache(tmp_path)
    real_pwrite = os.pwrite
    refused = []

    def refuse_direct(fd: int, data, offset: int) -> int:
        import fcntl

        if fcntl.fcntl(fd, fcntl.F_GETFL) & getattr(os, "O_DIRECT", 0):
            refused.append(offset)
            raise OSError(errno.EINVAL, "Invalid argument")
        return real_pwrite(fd, data, offset)

    monkeypatch.setattr(os, "pwrite", refuse_direct)
    path, _ = cache.fetch(LARGE_DIGEST, len(LARGE), Source(content=LARGE))
    assert path.read_bytes() == LARGE
    assert refused == ([0] if hasattr(os, "O_DIRECT") else [])


@pytest.mark.parametrize("break_after", [None, 5 * 65536 + 1000], ids=["whole", "resumed"])
def test_the_whole_file_lands_in_the_callers_memory(tmp_path, break_after) -> None:
    cache = FileCache(tmp_path)
    if break_after is not None:  # an earlier attempt left the start on disk
        with pytest.raises(ConnectionResetError):
            cache.fetch(LARGE_DIGEST, len(LARGE), Source(content=LARGE, break_after=break_after))
    memory = aligned_memory(len(LARGE))
    filled: list[int] = []

    path, transferred = cache.fetch(LARGE_DIGEST, len(LARGE), Source(content=LARGE), into=memory, on_filled=filled.append)

    assert bytes(memory) == LARGE and path.read_bytes() == LARGE
    assert filled == sorted(filled) and filled[-1] == len(LARGE)
    if break_after is not None:
        # The source sends whole 64 KiB chunks: the broken attempt received six, and kept them all.
        assert len(LARGE) - transferred == 6 * 65536


def test_a_resume_from_mid_block_asks_again_from_the_blocks_start(tmp_path) -> None:
    cache = FileCache(tmp_path)
    with pytest.raises(ConnectionResetError):
        cache.fetch(LARGE_DIGEST, len(LARGE), Source(content=LARGE, break_after=50_000, chunk=10_000))
    source = Source(content=LARGE)

    path, transferred = cache.fetch(LARGE_DIGEST, len(LARGE), source)

    # 50,000 bytes arrived; direct writes go on from a block boundary, so the last partial block comes again.
    assert source.offsets == [50_000 - 50_000 % ALIGNMENT]
    assert path.read_bytes() == LARGE and transferred == len(LARGE) - source.offsets[0]


def test_memory_too_small_for_the_file_is_refused(tmp_path) -> None:
    with pytest.raises(ValueError, match="cannot hold"):
        FileCache(tmp_path).fetch(DIGEST, len(CONTENT), Source(), into=aligned_memory(100))


def test_aligned_memory_starts_on_a_block_boundary() -> None:
    import ctypes

    for size in (1, ALIGNMENT, 5 << 20):
        memory = aligned_memory(size)
        assert len(memory) == size and not memory.readonly
        assert ctypes.addressof(ctypes.c_char.from_buffer(memory)) % ALIGNMENT == 0
