"""Against a real `replaybank serve`, on its local data folder and on SeaweedFS: concurrent writers, kill -9
mid-upload, and a body stopped as it streams."""

from __future__ import annotations

import hashlib
import select
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from tests.e2e.conftest import Server, running_server

SPEC = {
    "name": "hopper",
    "observation": {"shape": [11]},
    "action": {"kind": "continuous", "shape": [3], "low": [-1, -1, -1], "high": [1, 1, 1]},
}
ARROW = "application/vnd.apache.arrow.stream"


def episodes(first_episode: int, count: int, length: int, seed: int) -> bytes:
    rng = np.random.default_rng(seed)
    n = count * length

    def vectors(size: int) -> pa.Array:
        return pa.FixedSizeListArray.from_arrays(pa.array(rng.uniform(-1, 1, n * size).astype(np.float32)), size)

    last = np.tile(np.arange(length) == length - 1, count)
    table = pa.table(
        {
            "episode_id": pa.array(first_episode + np.repeat(np.arange(count), length), pa.int64()),
            "step": pa.array(np.tile(np.arange(length), count), pa.int32()),
            "observation": vectors(11),
            "action": vectors(3),
            "reward": pa.array(rng.normal(size=n).astype(np.float32)),
            "next_observation": vectors(11),
            "terminal": pa.array(last),
            "truncated": pa.array(np.zeros(n, dtype=bool)),
        }
    )
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table)
    return sink.getvalue().to_pybytes()


@pytest.fixture(params=["local", "s3"])
def server(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[Server]:
    settings = {"REPLAYBANK_QUERY_THREADS": "1"}
    if request.param == "s3":
        seaweedfs = request.getfixturevalue("seaweedfs")
        settings.update({"REPLAYBANK_STORAGE_URL": f"s3://{seaweedfs.bucket}/{uuid.uuid4().hex}", **seaweedfs.env()})
    with running_server(tmp_path, settings) as running:
        yield running


def upload(server: Server, body: bytes, key: str | None = None, timeout: float = 60, dataset: str = "hopper") -> httpx.Response:
    headers = {**server.headers(), "Content-Type": ARROW, **({"Idempotency-Key": key} if key else {})}
    return httpx.post(f"{server.url}/v1/datasets/{dataset}/transitions", content=body, headers=headers, timeout=timeout)


def check_every_version_intact(server: Server, allowed_sizes: set[int], dataset: str = "hopper") -> list[dict]:
    """Versions are 0..k without gaps; each is whole (one upload's rows) and every file reads back."""
    # follow_redirects: on object storage a file is a 307 to a presigned URL (httpx drops the token there)
    with httpx.Client(base_url=server.url, headers=server.headers(), timeout=60, follow_redirects=True) as client:
        versions = sorted(client.get(f"/v1/datasets/{dataset}/versions", params={"limit": 1000}).json()["data"], key=lambda v: v["version"])
        assert [v["version"] for v in versions] == list(range(len(versions)))
        for previous, version in zip(versions, versions[1:]):
            assert version["added_rows"] in allowed_sizes
            assert version["rows"] == previous["rows"] + version["added_rows"]
            manifest = client.get(f"/v1/datasets/{dataset}/versions/{version['version']}/files").json()
            assert sum(entry["rows"] for entry in manifest["data"]) == version["rows"]
            newest = manifest["data"][-1]
            content = client.get(f"/v1/datasets/{dataset}/versions/{version['version']}/files/{newest['path']}").content
            assert hashlib.sha256(content).hexdigest() == newest["sha256"]
            assert pq.read_table(pa.BufferReader(content)).num_rows == newest["rows"] == version["added_rows"]
        latest = client.get(f"/v1/datasets/{dataset}/versions/latest/transitions").content
        assert pa.ipc.open_stream(latest).read_all().num_rows == versions[-1]["rows"]
    return versions


def _read_response(connection: socket.socket) -> str:
    """One whole HTTP response (headers and the Content-Length body), or what came before the close."""
    received = b""
    while True:
        head, separator, body = received.partition(b"\r\n\r\n")
        if separator:
            length = next((int(line.split(b":", 1)[1]) for line in head.split(b"\r\n") if line.lower().startswith(b"content-length:")), 0)
            if len(body) >= length:
                return received.decode(errors="replace")
        chunk = connection.recv(65536)
        if not chunk:
            return received.decode(errors="replace")
        received += chunk


def test_eight_concurrent_writers_all_land_with_linear_versions(server: Server) -> None:
    assert httpx.post(f"{server.url}/v1/datasets", json=SPEC, headers=server.headers()).status_code == 201
    bodies = [episodes(first_episode=10 * i, count=2, length=50 + i, seed=i) for i in range(8)]
    start = threading.Barrier(8)

    def write(i: int) -> httpx.Response:
        start.wait()
        return upload(server, bodies[i], key=f"writer-{i}")

    with ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(write, range(8)))
    assert all(answer.status_code == 201 for answer in answers), [a.text for a in answers]
    assert sorted(answer.json()["version"] for answer in answers) == list(range(1, 9))
    for i, answer in enumerate(answers):
        assert answer.json()["rows"] == 2 * (50 + i)
    versions = check_every_version_intact(server, {2 * (50 + i) for i in range(8)})
    assert versions[-1]["rows"] == sum(2 * (50 + i) for i in range(8)) and versions[-1]["episodes"] == 16


def test_kill_9_during_uploads_then_restart_keeps_every_committed_version(server: Server) -> None:
    assert httpx.post(f"{server.url}/v1/datasets", json=SPEC, headers=server.headers()).status_code == 201
    for i in range(2):
        assert upload(server, episodes(first_episode=i, count=1, length=100, seed=i)).status_code == 201
    acknowledged: list[int] = []
    sizes = {100}
    stop = threading.Event()

    def quick_writer() -> None:
        i = 0
        while not stop.is_set():
            i += 1
            try:
                answer = upload(server, episodes(first_episode=1000 + i, count=1, length=300, seed=i), timeout=10)
            except httpx.HTTPError:
                return
            if answer.status_code == 201:
                acknowledged.append(answer.json()["version"])

    def slow_writer() -> None:
        body = episodes(first_episode=5000, count=40, length=500, seed=99)

        def trickle():
            for start in range(0, len(body), 64 * 1024):
                time.sleep(0.01)
                yield body[start : start + 64 * 1024]

        try:
            upload(server, trickle(), timeout=30)  # type: ignore[arg-type]
        except httpx.HTTPError:
            pass

    sizes.update({300, 40 * 500})
    threads = [threading.Thread(target=quick_writer), threading.Thread(target=slow_writer)]
    for thread in threads:
        thread.start()
    deadline = time.monotonic() + 20
    while len(acknowledged) < 3 and time.monotonic() < deadline:
        time.sleep(0.05)
    server.kill()
    stop.set()
    for thread in threads:
        thread.join(timeout=30)
    assert len(acknowledged) >= 3

    server.start()
    versions = check_every_version_intact(server, sizes)
    assert versions[-1]["version"] >= max(acknowledged)
    assert upload(server, episodes(first_episode=9000, count=1, length=100, seed=7)).json()["version"] == versions[-1]["version"] + 1


def test_an_oversized_streamed_body_is_stopped_before_it_is_all_sent(server: Server) -> None:
    server.env["REPLAYBANK_MAX_UPLOAD_BYTES"] = str(256 * 1024)
    server.restart()
    assert httpx.post(f"{server.url}/v1/datasets", json=SPEC, headers=server.headers()).status_code == 201
    chunk, total_chunks = b"x" * 65536, 400  # 25 MiB offered, chunked (no Content-Length)
    sent = 0
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as connection:
        connection.sendall(
            (
                "POST /v1/datasets/hopper/transitions HTTP/1.1\r\nHost: localhost\r\n"
                f"Authorization: Bearer {server.admin_token}\r\nContent-Type: {ARROW}\r\n"
                "Transfer-Encoding: chunked\r\n\r\n"
            ).encode()
        )
        try:
            for _ in range(total_chunks):
                if select.select([connection], [], [], 0)[0]:
                    break  # the service has answered
                connection.sendall(f"{len(chunk):x}\r\n".encode() + chunk + b"\r\n")
                sent += 1
        except OSError:
            pass  # the service closed the connection on us: it stopped reading
        reply = _read_response(connection)
    assert reply.startswith("HTTP/1.1 413"), reply[:200]
    assert '"payload_too_large"' in reply
    assert sent < total_chunks // 2
