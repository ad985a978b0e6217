"""A real `replaybank serve` (uvicorn) on a free loopback port, on a data directory of its own."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
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

    def start(self, timeout: float = START_TIMEOUT_S) -> None:
        log = open(self.log_path, "ab")
        self.process = subprocess.Popen(
            [REPLAYBANK, "serve", "--host", "127.0.0.1", "--port", str(self.port)],
            env=self.env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        log.close()
        try:
            wait_until_healthy(self.url, self.process, timeout)
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


def new_server(root: Path, settings: Mapping[str, str] | None = None, data_dir: Path | None = None, name: str = "service") -> Server:
    """A `replaybank serve` not yet started, on a free loopback port, with a fresh admin token unless
    `settings` name REPLAYBANK_ADMIN_TOKEN.

    Data goes to `data_dir` (default `root`/`name`-data), the log to `root`/`name`.log. No REPLAYBANK_
    variable leaks in from the environment, so it runs on SQLite and the embedded queue unless
    `settings` say otherwise.
    """
    port = free_loopback_port()
    data_dir = data_dir or root / f"{name}-data"
    env = {key: value for key, value in os.environ.items() if not key.startswith("REPLAYBANK_")}
    env.update({"REPLAYBANK_DATA_DIR": str(data_dir), "REPLAYBANK_ADMIN_TOKEN": "e2e-admin-" + os.urandom(8).hex(), **(settings or {})})
    return Server(f"http://127.0.0.1:{port}", env["REPLAYBANK_ADMIN_TOKEN"], data_dir, port, env, root / f"{name}.log")


@contextmanager
def running_server(root: Path, settings: Mapping[str, str] | None = None, data_dir: Path | None = None) -> Iterator[Server]:
    """`new_server`, started, and stopped on exit."""
    running = new_server(root, settings, data_dir)
    running.start()
    try:
        yield running
    finally:
        running.stop()


@contextmanager
def running_replicas(root: Path, count: int, settings: Mapping[str, str]) -> Iterator[list[Server]]:
    """`count` servers on `settings` (one storage URL, catalog and Redis make them one deployment) with one
    admin token, each on a data folder and log of its own (`replica-1`...), started at once, stopped on exit."""
    shared = {"REPLAYBANK_ADMIN_TOKEN": "e2e-admin-" + os.urandom(8).hex(), **settings}
    replicas = [new_server(root, shared, name=f"replica-{i}") for i in range(1, count + 1)]
    try:
        with ThreadPoolExecutor(count) as pool:  # `count` imports at once on a shared machine take a while
            list(pool.map(lambda replica: replica.start(count * START_TIMEOUT_S), replicas))
        yield replicas
    finally:
        for replica in replicas:
            replica.stop()


@pytest.fixture
def server(tmp_path: Path) -> Iterator[Server]:
    with running_server(tmp_path, {"REPLAYBANK_QUERY_THREADS": "1"}) as running:
        yield running
