"""The data tour from the command line, against `replaybank serve`: upload a D4RL file, see versions and
statistics, query, pull back as Parquet and HDF5, and pull a grown version incrementally."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import h5py
import numpy as np
import pyarrow as pa
import pytest

from schemas.transition import CLIENT_COLUMNS
from tests.e2e.conftest import Server, running_server
from workers import files
from workers.client import ReplaybankClient

OBS_DIM, ACTION_DIM = 11, 3
EPISODE_LENGTH = 100
REPLAYBANK = str(Path(sys.executable).with_name("replaybank"))


def write_d4rl(path: Path, episodes: int, seed: int) -> dict[str, np.ndarray]:
    """A D4RL-layout file without next_observations: alternate episodes end in a terminal and a timeout."""
    rng = np.random.default_rng(seed)
    n = episodes * EPISODE_LENGTH
    ends = np.arange(n) % EPISODE_LENGTH == EPISODE_LENGTH - 1
    terminal_episode = (np.arange(n) // EPISODE_LENGTH) % 2 == 0
    arrays = {
        "observations": rng.normal(size=(n, OBS_DIM)).astype(np.float32),
        "actions": rng.uniform(-1, 1, size=(n, ACTION_DIM)).astype(np.float32),
        "rewards": rng.normal(1.0, 0.5, size=n).astype(np.float32),
        "terminals": ends & terminal_episode,
        "timeouts": ends & ~terminal_episode,
    }
    with h5py.File(path, "w") as file:
        for key, value in arrays.items():
            file[key] = value
    return arrays


@pytest.fixture(scope="module")
def server(tmp_path_factory) -> Iterator[Server]:
    with running_server(tmp_path_factory.mktemp("cli-e2e")) as running:
        yield running


@pytest.fixture
def replaybank(server, tmp_path):
    env = {
        **os.environ,
        "REPLAYBANK_URL": server.url,
        "REPLAYBANK_TOKEN": server.admin_token,
        "REPLAYBANK_CACHE_DIR": str(tmp_path / "cache"),
    }

    def run(*args: str, expect_ok: bool = True) -> subprocess.CompletedProcess[str]:
        result = subprocess.run([REPLAYBANK, *args], env=env, capture_output=True, text=True, timeout=120)
        if expect_ok:
            assert result.returncode == 0, f"replaybank {' '.join(args)} failed:\n{result.stdout}\n{result.stderr}"
        return result

    return run


def comparable(table: pa.Table) -> pa.Table:
    """Rows without what the service adds (batch_id) or a file may not keep (source), in a fixed order."""
    keep = [name for name in CLIENT_COLUMNS if name in table.column_names]
    return table.select(keep).sort_by([("episode_id", "ascending"), ("step", "ascending")])


def test_upload_versions_query_pull_and_incremental_pull(server, replaybank, tmp_path) -> None:
    first_file = tmp_path / "hopper.hdf5"
    write_d4rl(first_file, episodes=50, seed=0)
    expected = files.read_file(first_file)  # what D4RL users expect: timeout rows dropped
    expected_rows = len(expected)
    assert expected_rows == 50 * EPISODE_LENGTH - 25

    uploaded = replaybank("upload", "hopper", str(first_file), "--create", "--env-id", "Hopper-v5")
    assert "created dataset hopper: obs 11, action 3 in [-1, 1]" in uploaded.stdout
    assert f"version 1: {expected_rows} rows appended" in uploaded.stdout

    listed = replaybank("versions", "hopper").stdout
    assert re.search(rf"^1\s+{expected_rows}\s+{expected_rows}\s+50\s", listed, re.MULTILINE), listed

    stats = json.loads(replaybank("versions", "hopper", "--version", "1", "--json").stdout)
    assert stats["rows"] == expected_rows and stats["episodes"] == 50
    np.testing.assert_allclose(stats["observation"]["mean"], expected.observations.mean(axis=0), rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(stats["action"]["max"], expected.actions.max(axis=0), rtol=1e-6)
    assert stats["episode_length"]["max"] == EPISODE_LENGTH
    readable = replaybank("stats", "hopper").stdout
    assert "observation per dimension" in readable and f"rows {expected_rows}" in readable

    answer = json.loads(
        replaybank(
            "query", "hopper", "SELECT count(*) AS n, count(*) FILTER (WHERE terminal) AS ends FROM transitions", "--format", "json"
        ).stdout
    )
    assert answer["rows"] == [[expected_rows, 25]] and [c["name"] for c in answer["columns"]] == ["n", "ends"]
    # The file states no episode ids: they are made up from its content, episode k at base + k.
    base = files.derived_episode_base(files.content_digest(first_file, expected))
    table_output = replaybank("query", "hopper", "SELECT episode_id, count(*) AS n FROM transitions GROUP BY 1 ORDER BY 1 LIMIT 2").stdout
    assert re.search(rf"^{base}\s+100$", table_output, re.MULTILINE), table_output
    assert re.search(rf"^{base + 1}\s+99$", table_output, re.MULTILINE), table_output

    spec = files.infer_spec(expected)
    for suffix in (".parquet", ".hdf5"):
        out = tmp_path / f"pulled{suffix}"
        replaybank("pull", "hopper", "--out", str(out))
        pulled = files.to_upload_table(files.read_file(out), spec)
        assert comparable(pulled).equals(comparable(files.to_upload_table(expected, spec, base)))
    with h5py.File(tmp_path / "pulled.hdf5") as file:  # the D4RL layout, readable without replaybank
        assert file["observations"].shape == file["next_observations"].shape == (expected_rows, OBS_DIM)
        assert file["actions"].shape == (expected_rows, ACTION_DIM)
        assert int(file["terminals"][()].sum()) == 25 and int(file["timeouts"][()].sum()) == 25

    replaybank("tag", "hopper", "first", "1")

    # One percent more rows: a second file whose episodes follow the first's.
    second_file = tmp_path / "more.hdf5"
    write_d4rl(second_file, episodes=1, seed=1)
    grown = replaybank("upload", "hopper", str(second_file)).stdout
    assert "version 2: 100 rows appended" in grown  # the episode ends in a terminal: nothing dropped

    with ReplaybankClient(server.url, server.admin_token) as client:
        first_files = {entry.sha256 for entry in client.files("hopper", "first").data}
        second_manifest = client.files("hopper", 2).data
    new_bytes = sum(entry.size for entry in second_manifest if entry.sha256 not in first_files)
    total_bytes = sum(entry.size for entry in second_manifest)
    assert 0 < new_bytes < total_bytes * 0.1

    pulled = replaybank("pull", "hopper", "--version", "2", "--out", str(tmp_path / "v2.parquet")).stdout
    assert f"{new_bytes} of {total_bytes} bytes downloaded" in pulled
    version_two = files.read_file(tmp_path / "v2.parquet")
    assert len(version_two) == expected_rows + 100
    second_base = files.derived_episode_base(files.content_digest(second_file, files.read_file(second_file)))
    assert set(version_two.episode_ids.tolist()) == {base + k for k in range(50)} | {second_base}  # ids of its own

    again = replaybank("pull", "hopper", "--version", "first", "--out", str(tmp_path / "v1.parquet")).stdout
    assert "0 of " in again and len(files.read_file(tmp_path / "v1.parquet")) == expected_rows


def test_errors_print_the_message_and_exit_non_zero(server, replaybank, tmp_path) -> None:
    missing = replaybank("pull", "nope", "--out", str(tmp_path / "x.parquet"), expect_ok=False)
    assert missing.returncode != 0
    assert "Error:" in missing.stderr and "404" in missing.stderr
    assert "Traceback" not in missing.stderr

    unauthorised = replaybank("datasets", "--token", "wrong-token", expect_ok=False)
    assert unauthorised.returncode != 0 and "401" in unauthorised.stderr


def test_output_whose_reader_goes_away_ends_quietly(server) -> None:
    """As in `replaybank datasets | head -1`: nothing to report when the reader stops reading."""
    process = subprocess.Popen(
        [REPLAYBANK, "datasets"],
        env={**os.environ, "REPLAYBANK_URL": server.url, "REPLAYBANK_TOKEN": server.admin_token},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    process.stdout.close()  # before the command writes a byte
    _, stderr = process.communicate(timeout=60)
    assert b"Error" not in stderr and b"Traceback" not in stderr, stderr.decode()


def test_datasets_tokens_and_arrow_query_from_the_command_line(server, replaybank, tmp_path) -> None:
    created = replaybank(
        "datasets", "create", "pendulum", "--observation-shape", "3", "--action-shape", "1",
        "--action-low", "-2", "--action-high", "2", "--env-id", "Pendulum-v1",
    )
    assert "created dataset pendulum: obs 3, action 1" in created.stdout
    assert re.search(r"^pendulum\s+0\s+0\s+0\s", replaybank("datasets").stdout, re.MULTILINE)
    assert json.loads(replaybank("datasets", "show", "pendulum").stdout)["action"]["low"] == [-2.0]

    secret = replaybank("token", "create", "reader", "--scope", "read").stdout.strip()
    as_reader = replaybank("datasets", "--token", secret)
    assert "pendulum" in as_reader.stdout
    path = tmp_path / "rows.npz"
    n = 10
    np.savez(
        path,
        observations=np.zeros((n, 3), np.float32),
        actions=np.ones((n, 1), np.float32),
        rewards=np.arange(n, dtype=np.float32),
        terminals=np.arange(n) == n - 1,
        timeouts=np.zeros(n, bool),
    )
    refused = replaybank("upload", "pendulum", str(path), "--token", secret, expect_ok=False)
    assert refused.returncode != 0 and "403" in refused.stderr

    assert "version 1: 10 rows appended" in replaybank("upload", "pendulum", str(path)).stdout
    arrow = subprocess.run(
        [REPLAYBANK, "query", "pendulum", "SELECT step, reward FROM transitions ORDER BY step", "--format", "arrow"],
        env={**os.environ, "REPLAYBANK_URL": server.url, "REPLAYBANK_TOKEN": secret},
        capture_output=True,
        timeout=60,
        check=True,
    ).stdout
    table = pa.ipc.open_stream(arrow).read_all()
    assert table.column("reward").to_pylist() == list(range(n))

    replaybank("datasets", "delete", "pendulum", "--yes")
    assert "pendulum" not in replaybank("datasets").stdout
