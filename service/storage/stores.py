"""Where the bytes live: a local folder (the default) or an S3 bucket under a prefix, behind one interface.

Keys are '/'-separated paths under the store's root, such as `datasets/<id>/part-….parquet`. Both stores
read and stream writes through pyarrow's filesystem API; they differ in what makes a write durable (the
local folder fsyncs and renames, an S3 object appears whole when its upload completes), in how delta-rs
names a table (a path, or an `s3://` URL with storage options), and in renames, which S3 lacks.
"""

from __future__ import annotations

import hashlib
import io
import hmac
import os
import shutil
import uuid
from abc import ABC, abstractmethod
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit

import pyarrow as pa
import pyarrow.fs as pafs

S3_OPTION_NAMES = ("AWS_ENDPOINT_URL", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_REGION", "AWS_ALLOW_HTTP")


@dataclass(frozen=True)
class StoredFile:
    key: str
    size: int


class StoredFileWriter:
    """One file written in parts; it appears under its key only once `close` returns."""

    def __init__(self, stream: Any, finish: Any, abandon: Any) -> None:
        self._stream = stream
        self._finish = finish
        self._abandon = abandon

    def write(self, data: Any) -> int:
        return self._stream.write(data)

    def close(self) -> None:
        self._finish()

    def abort(self) -> None:
        self._abandon()


class Store(ABC):
    """The operations the dataset and artifact storage need; `LocalStore` and `S3Store` implement them."""

    filesystem: pafs.FileSystem
    storage_options: dict[str, str] | None
    """What delta-rs needs to open a table here (None for a local path)."""
    location: str
    """The root, for messages and the start-up banner."""
    renames: bool
    """Whether a folder can be moved at once (only the local folder can)."""
    shared: bool
    """Whether other processes may write here at the same time: object storage can be reached from any
    machine, while a local data folder is locked to one service."""

    @abstractmethod
    def fs_path(self, key: str) -> str:
        """The key's path in `filesystem`."""

    @abstractmethod
    def table_uri(self, key: str) -> str:
        """The key as delta-rs opens it."""

    @abstractmethod
    def writer(self, key: str) -> StoredFileWriter:
        """A file to stream the bytes of `key` into; it appears whole on `close`, never on `abort`."""

    @abstractmethod
    def put_file(self, key: str, staged: Path) -> None:
        """Move a finished local file under `key`, replacing what was there; `staged` is gone afterwards."""

    @abstractmethod
    def put_bytes(self, key: str, data: bytes) -> None:
        """Replace the object at `key` with `data`, atomically (a reader sees the old bytes or the new)."""

    def local_path(self, key: str) -> Path | None:
        """The file on this machine's disk, when the store is a local folder."""
        return None

    def download_url(self, key: str, media_type: str, filename: str | None = None) -> str | None:
        """A short-lived URL that lets anyone holding it GET the object, when the store hands those out."""
        return None

    def open_input(self, key: str) -> pa.NativeFile:
        return self.filesystem.open_input_file(self.fs_path(key))

    def get_bytes(self, key: str) -> bytes | None:
        try:
            with self.open_input(key) as file:
                return file.read()
        except FileNotFoundError:
            return None

    def size(self, key: str) -> int | None:
        info = self.filesystem.get_file_info(self.fs_path(key))
        return info.size if info.type == pafs.FileType.File else None

    def exists(self, key: str) -> bool:
        return self.size(key) is not None

    def children(self, prefix: str) -> list[str]:
        """The names directly under `prefix` (files and folders), sorted; none when it does not exist."""
        selector = pafs.FileSelector(self.fs_path(prefix), allow_not_found=True, recursive=False)
        return sorted(info.base_name for info in self.filesystem.get_file_info(selector))

    def modified_times(self, prefix: str) -> dict[str, datetime]:
        """When each file directly under `prefix` was last written, by name."""
        selector = pafs.FileSelector(self.fs_path(prefix), allow_not_found=True, recursive=False)
        return {
            info.base_name: _aware(info.mtime)
            for info in self.filesystem.get_file_info(selector)
            if info.type == pafs.FileType.File and info.mtime is not None
        }

    def files(self, prefix: str) -> list[str]:
        """The keys of every file under `prefix`, at any depth, sorted."""
        selector = pafs.FileSelector(self.fs_path(prefix), allow_not_found=True, recursive=True)
        root = self.fs_path("")
        return sorted(
            info.path[len(root) :].lstrip("/") for info in self.filesystem.get_file_info(selector) if info.type == pafs.FileType.File
        )

    def delete(self, key: str) -> None:
        try:
            self.filesystem.delete_file(self.fs_path(key))
        except FileNotFoundError:
            pass

    def delete_tree(self, prefix: str) -> None:
        """Everything under `prefix`; nothing when there is nothing."""
        try:
            self.filesystem.delete_dir(self.fs_path(prefix))
        except FileNotFoundError:
            pass

    @abstractmethod
    def move_tree(self, source: str, target: str) -> None:
        """Rename a folder at once; callers check `renames` first."""

    def ping(self) -> None:
        """Raise when the store does not answer."""
        self.filesystem.get_file_info(self.fs_path(""))


class LocalStore(Store):
    renames = True
    shared = False
    storage_options = None

    def __init__(self, root: Path) -> None:
        self.root = root
        self.root.mkdir(parents=True, exist_ok=True)
        self.filesystem = pafs.LocalFileSystem()
        self.location = str(root)

    def fs_path(self, key: str) -> str:
        return str(self.root / key) if key else str(self.root)

    def table_uri(self, key: str) -> str:
        return self.fs_path(key)

    def local_path(self, key: str) -> Path:
        return self.root / key

    def writer(self, key: str) -> StoredFileWriter:
        target = self.local_path(key)
        target.parent.mkdir(parents=True, exist_ok=True)
        raw = open(target, "wb")

        def finish() -> None:
            raw.flush()
            os.fsync(raw.fileno())
            raw.close()

        def abandon() -> None:
            raw.close()
            target.unlink(missing_ok=True)

        return StoredFileWriter(raw, finish, abandon)

    def put_file(self, key: str, staged: Path) -> None:
        target = self.local_path(key)
        target.parent.mkdir(parents=True, exist_ok=True)
        os.replace(staged, target)

    def put_bytes(self, key: str, data: bytes) -> None:
        """A temporary file beside the target, fsync, rename, and fsync of the folder."""
        target = self.local_path(key)
        target.parent.mkdir(parents=True, exist_ok=True)
        temporary = target.parent / f".{target.name}.{uuid.uuid4().hex}"
        try:
            with open(temporary, "wb") as file:
                file.write(data)
                file.flush()
                os.fsync(file.fileno())
            os.replace(temporary, target)
        finally:
            temporary.unlink(missing_ok=True)
        directory = os.open(target.parent, os.O_RDONLY)
        try:
            os.fsync(directory)
        finally:
            os.close(directory)

    def delete_tree(self, prefix: str) -> None:
        shutil.rmtree(self.local_path(prefix), ignore_errors=True)

    def ping(self) -> None:
        if not self.root.is_dir():
            raise FileNotFoundError(f"the data folder {self.root} is gone")

    def move_tree(self, source: str, target: str) -> None:
        if self.local_path(source).exists():
            self.local_path(target).parent.mkdir(parents=True, exist_ok=True)
            os.replace(self.local_path(source), self.local_path(target))


class S3Store(Store):
    """A bucket and prefix of S3-compatible object storage; credentials and endpoint from the AWS_* settings."""

    renames = False
    shared = True

    def move_tree(self, source: str, target: str) -> None:
        # S3 has no rename: a copy of every object would be neither atomic nor quick, so callers that see
        # `renames` False hide a tree behind a marker object instead (`DatasetStorage.move_to_trash`).
        raise io.UnsupportedOperation(f"{self.location} cannot rename {source} to {target}: object storage has no rename")

    def __init__(self, url: str, options: dict[str, str], presign_seconds: int | None = None) -> None:
        """`presign_seconds`: how long a download URL stays valid; None hands out none (bytes go through the service)."""
        self.presign_seconds = presign_seconds
        parts = urlsplit(url)
        if parts.scheme != "s3" or not parts.netloc:
            raise ValueError(f"not an s3://bucket/prefix URL: {url!r}")
        self.bucket = parts.netloc
        self.prefix = parts.path.strip("/")
        self.location = f"s3://{self.bucket}/{self.prefix}".rstrip("/")
        self.storage_options = {name: value for name, value in options.items() if value}
        endpoint = self.storage_options.get("AWS_ENDPOINT_URL")
        allow_http = self.storage_options.get("AWS_ALLOW_HTTP", "").lower() in ("1", "true", "yes")
        self.filesystem = pafs.S3FileSystem(
            access_key=self.storage_options.get("AWS_ACCESS_KEY_ID"),
            secret_key=self.storage_options.get("AWS_SECRET_ACCESS_KEY"),
            region=self.storage_options.get("AWS_REGION") or "us-east-1",
            endpoint_override=endpoint,
            scheme="http" if allow_http and endpoint and endpoint.startswith("http://") else "https",
            allow_bucket_creation=False,
            allow_bucket_deletion=False,
        )

    def key_path(self, key: str) -> str:
        """The object key in the bucket."""
        return "/".join(part for part in (self.prefix, key) if part)

    def fs_path(self, key: str) -> str:
        return f"{self.bucket}/{self.key_path(key)}".rstrip("/")

    def table_uri(self, key: str) -> str:
        return f"s3://{self.fs_path(key)}"

    def writer(self, key: str) -> StoredFileWriter:
        stream = self.filesystem.open_output_stream(self.fs_path(key))

        def abandon() -> None:
            # an unfinished multipart upload cannot be cancelled through pyarrow: finish it, then delete it
            try:
                stream.close()
            finally:
                self.delete(key)

        return StoredFileWriter(stream, stream.close, abandon)

    def put_file(self, key: str, staged: Path) -> None:
        try:
            pafs.copy_files(str(staged), self.fs_path(key), source_filesystem=pafs.LocalFileSystem(), destination_filesystem=self.filesystem)
        finally:
            staged.unlink(missing_ok=True)

    def put_bytes(self, key: str, data: bytes) -> None:
        with self.filesystem.open_output_stream(self.fs_path(key)) as stream:
            stream.write(data)

    def download_url(self, key: str, media_type: str, filename: str | None = None, now: datetime | None = None) -> str | None:
        """A presigned GET (AWS Signature Version 4 in the query, path-style addressing), valid for
        `presign_seconds`; the answer carries `media_type` and, given a filename, names it for saving."""
        access_key, secret_key = self.storage_options.get("AWS_ACCESS_KEY_ID"), self.storage_options.get("AWS_SECRET_ACCESS_KEY")
        if self.presign_seconds is None or not access_key or not secret_key:
            return None
        region = self.storage_options.get("AWS_REGION") or "us-east-1"
        endpoint = (self.storage_options.get("AWS_ENDPOINT_URL") or f"https://s3.{region}.amazonaws.com").rstrip("/")
        moment = (now or datetime.now(timezone.utc)).strftime("%Y%m%dT%H%M%SZ")
        scope = f"{moment[:8]}/{region}/s3/aws4_request"
        path = quote(f"/{self.bucket}/{self.key_path(key)}", safe="/-_.~")
        parameters = {
            "X-Amz-Algorithm": "AWS4-HMAC-SHA256",
            "X-Amz-Credential": f"{access_key}/{scope}",
            "X-Amz-Date": moment,
            "X-Amz-Expires": str(self.presign_seconds),
            "X-Amz-SignedHeaders": "host",
            "response-content-type": media_type,
        }
        if filename is not None:
            parameters["response-content-disposition"] = f'attachment; filename="{filename}"'
        query = "&".join(f"{quote(name, safe='-_.~')}={quote(value, safe='-_.~')}" for name, value in sorted(parameters.items()))
        host = urlsplit(endpoint).netloc
        canonical = "\n".join(["GET", path, query, f"host:{host}\n", "host", "UNSIGNED-PAYLOAD"])
        to_sign = "\n".join(["AWS4-HMAC-SHA256", moment, scope, hashlib.sha256(canonical.encode()).hexdigest()])
        signing_key = f"AWS4{secret_key}".encode()
        for part in (moment[:8], region, "s3", "aws4_request"):
            signing_key = hmac.new(signing_key, part.encode(), hashlib.sha256).digest()
        signature = hmac.new(signing_key, to_sign.encode(), hashlib.sha256).hexdigest()
        return f"{endpoint}{path}?{query}&X-Amz-Signature={signature}"

    def ping(self) -> None:
        info = self.filesystem.get_file_info(self.bucket)
        if info.type == pafs.FileType.NotFound:
            raise FileNotFoundError(f"bucket {self.bucket} does not exist")


def _aware(moment: datetime) -> datetime:
    return moment if moment.tzinfo else moment.replace(tzinfo=timezone.utc)


def open_store(storage_url: str | None, data_dir: Path, s3_options: dict[str, str], presign_seconds: int | None = None) -> Store:
    """The S3 store `storage_url` names, or the local data folder when there is none."""
    if storage_url is None:
        return LocalStore(data_dir)
    return S3Store(storage_url, s3_options, presign_seconds)
