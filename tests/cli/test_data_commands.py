"""The data commands' own behaviour, without a service: wiring, file errors, unreachable services."""

from __future__ import annotations

import numpy as np
from click.testing import CliRunner

from cli.main import cli


def run(*args: str):
    return CliRunner().invoke(cli, list(args), catch_exceptions=False)


def test_every_data_command_is_registered() -> None:
    result = run("--help")

    assert result.exit_code == 0
    for command in ("serve", "token", "datasets", "upload", "versions", "stats", "tag", "pull", "query"):
        assert f"  {command}" in result.output


def test_a_file_missing_a_d4rl_array_is_refused_before_anything_is_sent(tmp_path) -> None:
    path = tmp_path / "bad.npz"
    np.savez(path, observations=np.zeros((3, 2), np.float32), actions=np.zeros((3, 1), np.float32), rewards=np.zeros(3))

    # The URL points nowhere: the file is checked before any request.
    result = run("upload", "ds", str(path), "--service", "http://127.0.0.1:9", "--token", "t")

    assert result.exit_code == 1
    assert "terminals" in result.output and "D4RL" in result.output
    assert "Traceback" not in result.output


def test_an_unreachable_service_is_one_line_and_a_non_zero_exit() -> None:
    result = run("versions", "ds", "--service", "http://127.0.0.1:9", "--token", "t")

    assert result.exit_code == 1
    assert "Error:" in result.output and "127.0.0.1:9" in result.output
    assert "Traceback" not in result.output


def test_an_invalid_dataset_spec_is_explained_before_anything_is_sent() -> None:
    result = run(
        "datasets", "--service", "http://127.0.0.1:9", "create", "ds",
        "--observation-shape", "4", "--action-shape", "2", "--action-low", "1", "--action-high", "-1",
    )

    assert result.exit_code == 1
    assert "low must be below its high" in result.output


def test_pull_refuses_an_unknown_output_format_before_downloading() -> None:
    result = run("pull", "ds", "--out", "rows.csv", "--service", "http://127.0.0.1:9", "--token", "t")

    assert result.exit_code == 1
    assert "can write .parquet or .hdf5 files, not rows.csv" in result.output
