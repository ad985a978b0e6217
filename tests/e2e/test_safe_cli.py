"""Safe defaults of the command line, against `replaybank serve`: uploads named by their content, errors in
one line, tokens kept out of argv, cut tables that say so, downloads that leave nothing behind, tags and
dataset edits that keep a dataset's story."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import h5py
import pyarrow as pa
import pytest

from tests.e2e.conftest import Server, running_server
from tests.factories import d4rl_npz
from workers import files
from workers.client import ReplaybankClient

REPLAYBANK = str(Path(sys.executable).with_name("replaybank"))
QUERY_CAP = 5
SLUG_LINE = "name: 'Bad Name' is not a slug: lowercase letters, digits, '.', '_' and '-', 1 to 64 characters"

Run = Callable[..., subprocess.CompletedProcess[str]]


@pytest.fixture(scope="module")
def server(tmp_path_factory) -> Iterator[Server]:
    with running_server(tmp_path_factory.mktemp("safe-cli"), {"REPLAYBANK_QUERY_MAX_ROWS": str(QUERY_CAP)}) as running:
        yield running


@pytest.fixture
def replaybank(server: Server, tmp_path: Path) -> Run:
    env = {name: value for name, value in os.environ.items() if not name.startswith("REPLAYBANK_")}
    env.update({"REPLAYBANK_URL": server.url, "REPLAYBANK_CACHE_DIR": str(tmp_path / "cache")})

    def run(*args: str, token: str | None = server.admin_token, expect_ok: bool = True) -> subprocess.CompletedProcess[str]:
        extra = {"REPLAYBANK_TOKEN": token} if token else {}
        result = subprocess.run([REPLAYBANK, *args], env={**env, **extra}, capture_output=True, text=True, timeout=180)
        if expect_ok:
            assert result.returncode == 0, f"replaybank {' '.join(args)} failed:\n{result.stdout}\n{result.stderr}"
        return result

    return run


def test_the_same_file_uploaded_twice_adds_one_version_unless_a_copy_is_asked_for(server: Server, replaybank: Run, tmp_path: Path) -> None:
    path = d4rl_npz(tmp_path / "logs.npz", episodes=4, seed=0)

    assert "twice version 1: 40 rows appended" in replaybank("upload", "twice", str(path), "--create").stdout
    again = replaybank("upload", "twice", str(path))
    assert f"{path} already uploaded as version 1 of twice (40 rows)" in again.stdout
    with ReplaybankClient(server.url, server.admin_token) as client:
        assert client.get_dataset("twice").latest_version == 1

    copied = replaybank("upload", "twice", str(path), "--allow-duplicate")
    assert "twice version 2: 40 rows appended" in copied.stdout
    assert "warning: 4 of its episodes already exist in twice with the same rows" in copied.stderr
    with ReplaybankClient(server.url, server.admin_token) as client:
        assert client.get_dataset("twice").rows == 80


def test_foreseeable_mistakes_are_one_line_naming_the_field(replaybank: Run, tmp_path: Path) -> None:
    bad_name = replaybank("datasets", "create", "Bad Name", "--observation-shape", "3", "--discrete", "2", expect_ok=False)
    assert bad_name.returncode == 1 and bad_name.stderr.strip() == f"Error: {SLUG_LINE}"

    replaybank("datasets", "create", "mistakes", "--observation-shape", "3", "--discrete", "2")
    bad_list = replaybank("train", "mistakes", "-a", "iql", "-p", "hidden_sizes=a,b", expect_ok=False)
    assert bad_list.returncode == 1
    assert bad_list.stderr.strip() == "Error: hidden_sizes: expected a list of integers, e.g. -p hidden_sizes=64,64"
    missing = replaybank("upload", "mistakes", str(tmp_path / "missing.npz"), expect_ok=False)
    assert missing.returncode == 1 and missing.stderr.strip() == f"Error: no such file: {tmp_path / 'missing.npz'} (file)"
    bad_metadata = replaybank("datasets", "create", "other", "--observation-shape", "3", "--discrete", "2", "--metadata", "{oops", expect_ok=False)
    assert bad_metadata.returncode == 2 and "--metadata" in bad_metadata.stderr and "not JSON" in bad_metadata.stderr
    for result in (bad_name, bad_list, missing, bad_metadata):
        assert "Traceback" not in result.stderr and "pydantic" not in result.stderr


def test_tokens_come_from_a_file_or_the_environment_and_argv_warns(server: Server, replaybank: Run, tmp_path: Path) -> None:
    token_file = tmp_path / "token"
    token_file.write_text(f"{server.admin_token}\nthe rest is ignored\n")

    from_file = replaybank("datasets", "--token-file", str(token_file), token=None)
    assert "warning" not in from_file.stderr
    from_environment = replaybank("datasets")
    assert from_environment.stdout == from_file.stdout and "warning" not in from_environment.stderr
    in_argv = replaybank("datasets", "--token", server.admin_token, token=None)
    assert in_argv.stdout == from_file.stdout
    assert "--token puts the secret in the process list" in in_argv.stderr

    nothing = replaybank("datasets", token=None, expect_ok=False)
    assert nothing.returncode == 1 and "401" in nothing.stderr
    absent = replaybank("datasets", "--token-file", str(tmp_path / "absent"), token=None, expect_ok=False)
    assert absent.returncode == 2 and "--token-file" in absent.stderr and "Traceback" not in absent.stderr


def test_a_cut_table_says_so_with_the_total(replaybank: Run, tmp_path: Path) -> None:
    replaybank("upload", "cut", str(d4rl_npz(tmp_path / "rows.npz", episodes=4, seed=1)), "--create")

    cut = replaybank("query", "cut", "SELECT step FROM transitions")
    assert len(cut.stdout.splitlines()) == 1 + QUERY_CAP
    assert cut.stderr.strip() == f"showing the first {QUERY_CAP} rows of 40"
    whole = replaybank("query", "cut", "SELECT count(*) AS n FROM transitions")
    assert "showing" not in whole.stderr


def test_a_failed_download_leaves_nothing_behind(replaybank: Run, tmp_path: Path) -> None:
    out = tmp_path / "policy"
    unknown = replaybank("download", "no-such-policy", "--out", str(out), expect_ok=False)
    assert unknown.returncode == 1 and "404" in unknown.stderr
    assert not out.exists()

    existing = tmp_path / "existing"
    existing.mkdir()
    (existing / "policy.onnx").write_bytes(b"the old policy")
    replaybank("download", "no-such-policy", "--out", str(existing), expect_ok=False)
    assert sorted(p.name for p in existing.iterdir()) == ["policy.onnx"]
    assert (existing / "policy.onnx").read_bytes() == b"the old policy"

    pulled = tmp_path / "pulled.parquet"
    replaybank("pull", "no-such-dataset", "--out", str(pulled), expect_ok=False)
    assert list(tmp_path.glob("*pulled*")) == []


def test_tags_are_listed_moved_and_deleted(replaybank: Run, tmp_path: Path) -> None:
    replaybank("upload", "tagged", str(d4rl_npz(tmp_path / "a.npz", episodes=1, seed=2)), "--create")
    replaybank("upload", "tagged", str(d4rl_npz(tmp_path / "b.npz", episodes=1, seed=3)))

    assert replaybank("tag", "tagged", "best", "1").stdout.strip() == "tagged:best -> version 1"
    assert replaybank("tag", "tagged", "best", "2").stdout.strip() == "tagged:best -> version 2 (moved from version 1)"
    assert replaybank("tags", "tagged").stdout.splitlines()[1].split() == ["best", "2"]
    assert replaybank("tag", "tagged", "best", "--delete").stdout.strip() == "deleted tag tagged:best"
    assert replaybank("tags", "tagged").stdout.strip() == "(none)"
    neither = replaybank("tag", "tagged", "best", expect_ok=False)
    assert neither.returncode == 2 and "VERSION" in neither.stderr


def test_datasets_edit_changes_the_card_metadata_and_environment(replaybank: Run, tmp_path: Path) -> None:
    replaybank("datasets", "create", "edited", "--observation-shape", "3", "--action-shape", "1", "--action-low", "-2", "--action-high", "2")
    card = tmp_path / "card.md"
    card.write_text("# Pendulum swings\n\nLogged by a scripted controller.\n")

    replaybank("datasets", "edit", "edited", "--description-file", str(card), "--metadata", '{"robot": "arm-2"}', "--env-id", "Pendulum-v1")
    shown = json.loads(replaybank("datasets", "show", "edited").stdout)
    assert shown["description"] == card.read_text()
    assert shown["metadata"] == {"robot": "arm-2"} and shown["env_id"] == "Pendulum-v1"
    assert shown["observation"]["shape"] == [3]

    replaybank("datasets", "edit", "edited", "--no-env-id")
    shown = json.loads(replaybank("datasets", "show", "edited").stdout)
    assert shown["env_id"] is None and shown["description"] == card.read_text()
    nothing = replaybank("datasets", "edit", "edited", expect_ok=False)
    assert nothing.returncode == 2 and "nothing to change" in nothing.stderr


def test_an_hdf5_pull_keeps_each_rows_source(server: Server, replaybank: Run, tmp_path: Path) -> None:
    raw = files.read_file(d4rl_npz(tmp_path / "mixed.npz", episodes=2, seed=4))
    with ReplaybankClient(server.url, server.admin_token) as client:
        client.create_dataset("sourced", files.infer_spec(raw))
        table = files.to_upload_table(raw, files.infer_spec(raw))
        sources = pa.array(["logged"] * 10 + ["policy:p-1"] * 10, pa.string())
        client.upload("sourced", table.set_column(table.schema.get_field_index("source"), "source", sources))

    out = tmp_path / "pulled.hdf5"
    replaybank("pull", "sourced", "--out", str(out))
    with h5py.File(out) as file:  # a string dataset any HDF5 reader sees
        assert [value.decode() for value in file["sources"][()]] == sources.to_pylist()
    assert files.read_file(out).sources.to_pylist() == sources.to_pylist()
