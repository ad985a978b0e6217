"""A real `replaybank serve` (uvicorn) on a free loopback port, on a data directory of its own."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest

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
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"the service exited with {self.process.returncode}:\n{self.log()}")
            try:
                if httpx.get(f"{self.url}/healthz", timeout=1).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.1)
        self.kill()
        raise RuntimeError(f"the service did not answer /healthz within {START_TIMEOUT_S} s:\n{self.log()}")

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


@pytest.fixture
def server(tmp_path: Path, free_port: int) -> Iterator[Server]:
    data_dir = tmp_path / "service-data"
    admin_token = "e2e-admin-token-" + os.urandom(8).hex()
    env = {
        **os.environ,
        "REPLAYBANK_DATA_DIR": str(data_dir),
        "REPLAYBANK_ADMIN_TOKEN": admin_token,
        "REPLAYBANK_QUERY_THREADS": "1",
    }
    for name in ("REPLAYBANK_DATABASE_URL", "REPLAYBANK_REDIS_URL"):
        env.pop(name, None)
    running = Server(
        url=f"http://127.0.0.1:{free_port}",
        admin_token=admin_token,
        data_dir=data_dir,
        port=free_port,
        env=env,
        log_path=tmp_path / "service.log",
    )
    running.start()
    try:
        yield running
    finally:
        running.stop()
