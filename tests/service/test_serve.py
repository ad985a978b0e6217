"""`replaybank serve` as a user runs it: what it says at start, its JSON log lines, and an upload whose
client hangs up."""

from __future__ import annotations

import json
import socket
import time
from pathlib import Path
from typing import Any

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


def json_lines(server: Server) -> list[dict[str, Any]]:
    """The log lines that are JSON objects (all but the start-up banner), parsed."""
    return [json.loads(line) for line in server.log_path.read_text(errors="replace").splitlines() if line.startswith("{")]


def json_line(server: Server, match: dict[str, Any]) -> dict[str, Any]:
    """The first JSON log line holding every key and value of `match`, once the service has written it."""
    deadline = time.monotonic() + LOG_WAIT_S
    while True:
        for line in json_lines(server):
            if all(line.get(key) == wanted for key, wanted in match.items()):
                return line
        assert time.monotonic() < deadline, f"the service never logged {match}:\n{server.log()}"
        time.sleep(0.05)


def test_at_start_the_service_says_where_it_keeps_its_data_once_before_uvicorn(tmp_path: Path) -> None:
    with running_server(tmp_path) as server:
        lines = server.log_path.read_text().splitlines()
    banner = [index for index, line in enumerate(lines) if line.startswith("replaybank: data folder ")]
    assert len(banner) == 1, lines
    assert lines[banner[0]] == f"replaybank: data folder {server.data_dir}"
    assert lines[banner[0] + 1] == f"  catalog: sqlite:///{server.data_dir / 'catalog.sqlite'}"
    assert lines[banner[0] + 2] == "  queue: embedded (on the catalog)"
    assert lines[banner[0] + 3] == "  logs: JSON lines (REPLAYBANK_LOG_FORMAT=text for plain text)"
    uvicorn_lines = [index for index, line in enumerate(lines) if line.startswith("{") and '"logger": "uvicorn' in line]
    assert uvicorn_lines and banner[0] < uvicorn_lines[0]


def test_every_log_line_after_the_banner_is_json_and_each_request_has_one_with_its_id(tmp_path: Path) -> None:
    with running_server(tmp_path) as server:
        missing = httpx.get(f"{server.url}/v1/datasets/nope", headers={**server.headers(), "X-Request-ID": "e2e-trace-1"})
        listed = httpx.get(f"{server.url}/v1/datasets", headers=server.headers())
        access = json_line(server, {"logger": "replaybank.access", "request_id": listed.headers["X-Request-ID"]})
        refused = json_line(server, {"logger": "replaybank.access", "request_id": "e2e-trace-1"})
        lines = server.log_path.read_text().splitlines()
    assert missing.json()["error"]["request_id"] == "e2e-trace-1"
    assert (access["method"], access["route"], access["path"], access["status"]) == ("GET", "/v1/datasets", "/v1/datasets", 200)
    assert (refused["route"], refused["status"]) == ("/v1/datasets/{name}", 404)
    assert access["duration_ms"] >= 0 and access["level"] == "info" and access["time"].endswith("+00:00")
    after_banner = [line for line in lines if not line.startswith(("replaybank: ", "  "))]
    assert after_banner and all(isinstance(json.loads(line), dict) for line in after_banner), lines
    assert not any('"logger": "uvicorn.access"' in line for line in lines)  # the service's own line replaces it


def test_plain_text_logs_on_request(tmp_path: Path) -> None:
    with running_server(tmp_path, {"REPLAYBANK_LOG_FORMAT": "text"}) as server:
        answered = httpx.get(f"{server.url}/v1/datasets", headers=server.headers())
        line = log_line(server, f"(request {answered.headers['X-Request-ID']})")
    assert line.startswith("INFO:") and "GET /v1/datasets 200" in line


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

        line = json_line(server, {"logger": "replaybank.ingest", "level": "info"})

        assert "the client disconnected" in line["message"] and "dataset hopper" in line["message"]
        assert f"after {len(half)} bytes" in line["message"] and line["request_id"]
        dataset = httpx.get(f"{server.url}/v1/datasets/hopper", headers=server.headers()).json()
        assert (dataset["latest_version"], dataset["rows"]) == (0, 0)
        assert list((server.data_dir / "datasets").rglob("*.parquet")) == []  # the staged part is gone too
        log = server.log_path.read_text()
        assert "Traceback" not in log and "Exception in ASGI application" not in log and "ClientDisconnect" not in log
