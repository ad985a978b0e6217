"""Ctrl-C during `replaybank upload`, against a real service: the CLI says what happened, and re-running
the same command never makes a second copy.

A small TCP proxy stands between the CLI and the service so the test decides where the upload stops:
it holds back the service's answer (the whole body was sent; the service commits) or stops reading the
body part-way (not all of it was sent; the service commits nothing).
"""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from tests.e2e.conftest import Server, running_server
from workers.client import ReplaybankClient

REPLAYBANK = str(Path(sys.executable).with_name("replaybank"))
ROWS = 200_000
"""About 26 MB of Arrow body: far more than the loopback socket buffers hold, so a held body stalls."""
PROGRESS = re.compile(r"^upload \S+: (\d+) of (\d+) bytes$")
LARGE_REQUEST = 1 << 20
"""More request bytes than the small calls before an upload send: after these, the upload's body is flowing."""
SETTLE_S = 60


class HoldingProxy:
    """Forwards one TCP connection at a time to the service; once the client has sent `LARGE_REQUEST` bytes,
    it holds back the service's answer (`hold="answer"`) or stops reading the client (`hold="body"`)."""

    def __init__(self, upstream_port: int, hold: str) -> None:
        self.upstream_port = upstream_port
        self.hold = hold
        self.holding = threading.Event()
        self.closed = threading.Event()
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = self._listener.getsockname()[1]
        self._sockets: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while not self.closed.is_set():
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            upstream = socket.create_connection(("127.0.0.1", self.upstream_port))
            self._sockets += [client, upstream]
            sent = [0]
            threading.Thread(target=self._requests, args=(client, upstream, sent), daemon=True).start()
            threading.Thread(target=self._answers, args=(upstream, client, sent), daemon=True).start()

    def _requests(self, client: socket.socket, upstream: socket.socket, sent: list[int]) -> None:
        while data := self._receive(client):
            if not self._send(upstream, data):
                return
            sent[0] += len(data)
            if self.hold == "body" and sent[0] >= LARGE_REQUEST:
                self.holding.set()
                self.closed.wait()
                return

    def _answers(self, upstream: socket.socket, client: socket.socket, sent: list[int]) -> None:
        while data := self._receive(upstream):
            if self.hold == "answer" and sent[0] >= LARGE_REQUEST:
                self.holding.set()
                self.closed.wait()
                return
            if not self._send(client, data):
                return

    @staticmethod
    def _send(connection: socket.socket, data: bytes) -> bool:
        """Pass bytes on; False once `close` cut the connection."""
        try:
            connection.sendall(data)
        except OSError:
            return False
        return True

    @staticmethod
    def _receive(connection: socket.socket) -> bytes:
        try:
            return connection.recv(1 << 16)
        except OSError:
            return b""

    def close(self) -> None:
        self.closed.set()
        self._listener.close()
        for connection in self._sockets:
            # shutdown, not only close: another thread may be blocked reading it, which keeps the socket open
            try:
                connection.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            connection.close()


@pytest.fixture(scope="module")
def server(tmp_path_factory) -> Iterator[Server]:
    with running_server(tmp_path_factory.mktemp("interrupts")) as running:
        yield running


def large_file(path: Path) -> Path:
    rng = np.random.default_rng(0)
    ends = np.arange(ROWS) % 1000 == 999
    np.savez(
        path,
        observations=rng.normal(size=(ROWS, 11)).astype(np.float32),
        actions=rng.uniform(-1, 1, size=(ROWS, 3)).astype(np.float32),
        rewards=rng.normal(size=ROWS).astype(np.float32),
        terminals=ends,
        timeouts=np.zeros(ROWS, bool),
    )
    return path


def start_upload(url: str, token: str, dataset: str, path: Path) -> subprocess.Popen[str]:
    env = {**os.environ, "REPLAYBANK_URL": url, "REPLAYBANK_TOKEN": token, "REPLAYBANK_PROGRESS": "plain"}
    return subprocess.Popen(
        [REPLAYBANK, "upload", dataset, str(path), "--create"], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )


def wait_for_progress(process: subprocess.Popen[str], whole: bool) -> None:
    """Read the CLI's progress lines until the whole body was sent (`whole`) or some of it was."""
    assert process.stderr is not None
    for line in process.stderr:
        found = PROGRESS.match(line.strip())
        if found and (not whole or int(found[1]) == int(found[2])):
            return
    raise AssertionError(f"the upload ended before it reported progress: {process.wait()}")


def interrupt(process: subprocess.Popen[str]) -> tuple[int, str]:
    process.send_signal(signal.SIGINT)
    _, rest = process.communicate(timeout=60)
    return process.returncode, rest


def data_files(server: Server) -> set[Path]:
    return set((server.data_dir / "datasets").glob("*/*.parquet"))


def versions_after_settling(server: Server, dataset: str, expected: int) -> int:
    """The dataset's latest version once it reaches `expected`, or what it holds after SETTLE_S."""
    deadline = time.monotonic() + SETTLE_S
    with ReplaybankClient(server.url, server.admin_token) as client:
        while True:
            latest = client.get_dataset(dataset).latest_version
            if latest >= expected or time.monotonic() > deadline:
                return latest
            time.sleep(0.2)


def test_an_interrupt_after_the_whole_body_was_sent_says_a_rerun_is_safe(server: Server, tmp_path: Path) -> None:
    path = large_file(tmp_path / "large.npz")
    proxy = HoldingProxy(server.port, hold="answer")
    try:
        process = start_upload(f"http://127.0.0.1:{proxy.port}", server.admin_token, "committed", path)
        wait_for_progress(process, whole=True)
        assert proxy.holding.wait(60)
        status, said = interrupt(process)
        # the service got every byte: it commits although nobody waits for its answer
        assert versions_after_settling(server, "committed", 1) == 1
    finally:
        proxy.close()

    assert status == 130, said
    assert "the service may have committed it" in said and "Re-running the same command is safe" in said, said
    assert "Aborted!" not in said and "Traceback" not in said

    env = {**os.environ, "REPLAYBANK_URL": server.url, "REPLAYBANK_TOKEN": server.admin_token}
    again = subprocess.run([REPLAYBANK, "upload", "committed", str(path), "--create"], env=env, capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, again.stderr
    assert "already uploaded as version 1" in again.stdout
    with ReplaybankClient(server.url, server.admin_token) as client:
        assert sorted(v.version for v in client.versions("committed")) == [0, 1]


def test_an_interrupt_before_the_whole_body_was_sent_says_nothing_was_added(server: Server, tmp_path: Path) -> None:
    path = large_file(tmp_path / "large.npz")
    files_before = data_files(server)
    proxy = HoldingProxy(server.port, hold="body")
    try:
        process = start_upload(f"http://127.0.0.1:{proxy.port}", server.admin_token, "partial", path)
        assert proxy.holding.wait(120)
        wait_for_progress(process, whole=False)
        status, said = interrupt(process)
    finally:
        proxy.close()  # the service sees the client hang up part-way through the body

    assert status == 130, said
    assert "interrupted before the whole upload was sent: nothing was added to partial" in said, said
    assert "Aborted!" not in said and "Traceback" not in said
    with ReplaybankClient(server.url, server.admin_token) as client:
        assert client.get_dataset("partial").rows == 0
    # The service saw the hang-up as such: one line, and the upload's staged file gone with it.
    deadline = time.monotonic() + SETTLE_S
    while "dataset partial: the client disconnected after" not in server.log() and time.monotonic() < deadline:
        time.sleep(0.2)
    assert "dataset partial: the client disconnected after" in server.log(), server.log()
    assert data_files(server) == files_before, "a staged file was left behind"
