"""The content-addressed file cache: verified, atomic, resumable downloads."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator

import pytest

from workers.cache import ChecksumMismatch, FileCache

CONTENT = bytes(range(256)) * 4096  # 1 MiB
DIGEST = hashlib.sha256(CONTENT).hexdigest()


class Source:
    """Serves CONTENT from an offset, in small chunks, optionally breaking after some bytes."""

    def __init__(self, honours_range: bool = True, break_after: int | None = None, content: bytes = CONTENT) -> None:
        self.honours_range = honours_range
        self.break_after = break_after
        self.content = content
        self.offsets: list[int] = []

    def __call__(self, offset: int) -> tuple[int, Iterator[bytes]]:
        self.offsets.append(offset)
        start = offset if self.honours_range else 0

        def chunks() -> Iterator[bytes]:
            sent = 0
            for position in range(start, len(self.content), 65536):
                if self.break_after is not None and sent >= self.break_after:
                    raise ConnectionResetError("connection broke")
                piece = self.content[position : position + 65536]
                sent += len(piece)
                yield piece

        return start, chunks()


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
    source = Source()
    written = []

    class FullDisk(OSError):
        pass

    import builtins

    real_open = builtins.open

    def fake_open(path, mode="r", *args, **kwargs):
        handle = real_open(path, mode, *args, **kwargs)
        if str(path).endswith(".partial"):
            original = handle.write

            def write(data):
                written.append(len(data))
                if len(written) > 3:
                    raise FullDisk("no space left on device")
                return original(data)

            handle.write = write
        return handle

    monkeypatch.setattr(builtins, "open", fake_open)
    with pytest.raises(FullDisk):
        cache.fetch(DIGEST, len(CONTENT), source)
    assert not cache.has(DIGEST)
