"""A real `replaybank serve` (uvicorn) on a free loopback port, on a data directory of its own."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from cli.health import ServiceNotReady, wait_until_healthy
from tests.conftest import free_loopback_port

REPLAYBANK = str(Path(sys.executable).with_name("replaybank"))
START_TIMEOUT_S = 60


@dataclass
class Server:
    url: str
    admin_token: str
    data_dir: Path
    port: int
    env: dict[str, str]
    log_path: Path
    process: subprocess.Popen | None = field(default=None, repr=False)

    def start(self) -> None:
        log = open(self.log_path, "ab")
        self.process = subprocess.Popen(
            [REPLAYBANK, "serve", "--host", "127.0.0.1", "--port", str(self.port)],
            env=self.env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        log.close()
        try:
            wait_until_healthy(self.url, self.process, START_TIMEOUT_S)
        except ServiceNotReady as error:
            self.kill()
            raise RuntimeError(f"{error}:\n{self.log()}") from error

    def kill(self) -> None:
        """SIGKILL: no shutdown code runs, as in a crash."""
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=30)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.kill()

    def restart(self) -> None:
        self.stop()
        self.start()

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")[-5000:] if self.log_path.exists() else ""

    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.admin_token}"}


@contextmanager
def running_server(root: Path, settings: Mapping[str, str] | None = None, data_dir: Path | None = None) -> Iterator[Server]:
    """`replaybank serve` on a free loopback port with a fresh admin token, stopped on exit.

    Data goes to `data_dir` (default `root`/service-data), the log to `root`/service.log. No REPLAYBANK_
    variable leaks in from the environment, so it runs on SQLite and the embedded queue unless
    `settings` say otherwise.
    """
    port = free_loopback_port()
    admin_token = "e2e-admin-" + os.urandom(8).hex()
    data_dir = data_dir or root / "service-data"
    env = {name: value for name, value in os.environ.items() if not name.startswith("REPLAYBANK_")}
    env.update({"REPLAYBANK_DATA_DIR": str(data_dir), "REPLAYBANK_ADMIN_TOKEN": admin_token, **(settings or {})})
    running = Server(f"http://127.0.0.1:{port}", admin_token, data_dir, port, env, root / "service.log")
    running.start()
    try:
        yield running
    finally:
        running.stop()


@pytest.fixture
def server(tmp_path: Path) -> Iterator[Server]:
    with running_server(tmp_path, {"REPLAYBANK_QUERY_THREADS": "1"}) as running:
        yield running
