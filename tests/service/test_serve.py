"""`replaybank serve` as a user runs it: what it says at start, and an upload whose client hangs up."""

from __future__ import annotations

import socket
import time
from pathlib import Path

import httpx

from tests.e2e.conftest import Server, running_server
from tests.factories import upload_rows as rows
from tests.service.conftest import HOPPER, arrow_body

LOG_WAIT_S = 30


def log_line(server: Server, text: str) -> str:
    """The first line of the service's log holding `text`, once the service has written it."""
    deadline = time.monotonic() + LOG_WAIT_S
    while True:
        for line in server.log_path.read_text(errors="replace").splitlines():
            if text in line:
                return line
        assert time.monotonic() < deadline, f"the service never logged {text!r}:\n{server.log()}"
        time.sleep(0.05)


def test_at_start_the_service_says_where_it_keeps_its_data_once_before_uvicorn(tmp_path: Path) -> None:
    with running_server(tmp_path) as server:
        lines = server.log_path.read_text().splitlines()
    banner = [index for index, line in enumerate(lines) if line.startswith("replaybank: data folder ")]
    assert len(banner) == 1, lines
    assert lines[banner[0]] == f"replaybank: data folder {server.data_dir}"
    assert lines[banner[0] + 1] == f"  catalog: sqlite:///{server.data_dir / 'catalog.sqlite'}"
    assert lines[banner[0] + 2] == "  queue: embedded (on the catalog)"
    uvicorn_lines = [index for index, line in enumerate(lines) if line.startswith("INFO:")]
    assert uvicorn_lines and banner[0] < uvicorn_lines[0]


def test_a_client_that_hangs_up_mid_body_commits_nothing_and_is_logged_as_an_ordinary_event(tmp_path: Path) -> None:
    with running_server(tmp_path) as server:
        created = httpx.post(f"{server.url}/v1/datasets", json=HOPPER, headers=server.headers())
        assert created.status_code == 201, created.text
        body = arrow_body(rows(episodes=20, length=100))
        half = body[: len(body) // 2]
        request = (
            f"POST /v1/datasets/hopper/transitions HTTP/1.1\r\nHost: 127.0.0.1:{server.port}\r\n"
            f"Authorization: Bearer {server.admin_token}\r\nContent-Type: application/vnd.apache.arrow.stream\r\n"
            f"Content-Length: {len(body)}\r\n\r\n"
        ).encode()
        with socket.create_connection(("127.0.0.1", server.port)) as connection:
            connection.sendall(request + half)

        line = log_line(server, "the client disconnected")

        assert line.startswith("INFO:") and "dataset hopper" in line and f"after {len(half)} bytes" in line
        dataset = httpx.get(f"{server.url}/v1/datasets/hopper", headers=server.headers()).json()
        assert (dataset["latest_version"], dataset["rows"]) == (0, 0)
        assert list((server.data_dir / "datasets").rglob("*.parquet")) == []  # the staged part is gone too
        log = server.log_path.read_text()
        assert "Traceback" not in log and "Exception in ASGI application" not in log and "ClientDisconnect" not in log
