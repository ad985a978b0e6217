"""Argument parsing the commands share."""

from __future__ import annotations

import click
import pytest

from cli.options import MAX_VALIDATION_FRACTION, ByteSize, parse_params, parse_shape, parse_version
from schemas import splits


def test_parse_params_reads_json_values_and_falls_back_to_text() -> None:
    assert parse_params(["expectile=0.8", "hidden_sizes=[64, 64]", "actor=deterministic", "compile=true"]) == {
        "expectile": 0.8,
        "hidden_sizes": [64, 64],
        "actor": "deterministic",
        "compile": True,
    }
    with pytest.raises(ValueError, match="key=value"):
        parse_params(["expectile"])
    with pytest.raises(ValueError, match="twice"):
        parse_params(["expectile=0.8", "expectile=0.9"])


def test_shapes_and_versions_parse_as_the_commands_take_them() -> None:
    assert parse_shape("3,84,84") == parse_shape("3x84x84") == [3, 84, 84]
    assert parse_shape("") == []
    with pytest.raises(click.BadParameter, match="not a shape"):
        parse_shape("three")
    assert parse_version("12") == 12 and parse_version("latest") == "latest" and parse_version("v1") == "v1"


def test_list_params_take_comma_separated_values() -> None:
    from schemas.algorithms import ALGORITHM_PARAMS

    iql = ALGORITHM_PARAMS["iql"]
    assert parse_params(["hidden_sizes=64,64", "expectile=0.8"], iql) == {"hidden_sizes": [64, 64], "expectile": 0.8}
    assert parse_params(["hidden_sizes=32"], iql) == {"hidden_sizes": [32]}
    assert parse_params(["hidden_sizes=[16, 16]"], iql) == {"hidden_sizes": [16, 16]}
    assert parse_params(["hidden_sizes=64,64"]) == {"hidden_sizes": "64,64"}  # without the model, text stays text
    with pytest.raises(ValueError, match="unknown param 'expectyle'; the params are actor, .*expectile"):
        parse_params(["expectyle=0.7"], iql)


def test_a_validation_error_is_one_line_saying_what_is_accepted() -> None:
    from pydantic import ValidationError

    from cli.errors import validation_message
    from cli.options import param_hints
    from schemas.algorithms import ALGORITHM_PARAMS
    from schemas.dataset import DatasetCreate
    from schemas.jobs import JobCreate

    with pytest.raises(ValidationError) as bad_name:
        DatasetCreate.model_validate({"name": "Bad Name", "observation": {"shape": [3]}, "action": {"kind": "discrete", "n": 2}})
    assert validation_message(bad_name.value) == (
        "name: 'Bad Name' is not a slug: lowercase letters, digits, '.', '_' and '-', 1 to 64 characters"
    )

    job = {"kind": "train", "dataset": "d", "algorithm": "iql", "params": {"hidden_sizes": ["a", "b"], "expectile": 2}}
    with pytest.raises(ValidationError) as bad_params:
        JobCreate.model_validate(job)
    line = validation_message(bad_params.value, param_hints(ALGORITHM_PARAMS["iql"]))
    assert "\n" not in line and "https://" not in line
    assert "hidden_sizes: expected a list of integers, e.g. -p hidden_sizes=64,64" in line
    assert "params.expectile: input should be less than 1" in line


def test_the_token_comes_from_a_file_or_the_environment_and_argv_warns(tmp_path, monkeypatch) -> None:
    from click.testing import CliRunner

    from cli.options import token_option

    @click.command()
    @token_option
    def show(token: str | None) -> None:
        click.echo(f"token={token}")

    def run(*args: str):
        return CliRunner().invoke(show, list(args))

    monkeypatch.delenv("REPLAYBANK_TOKEN", raising=False)
    assert run().stdout == "token=None\n"
    monkeypatch.setenv("REPLAYBANK_TOKEN", "from-env")
    assert run().stdout == "token=from-env\n" and run().stderr == ""
    secret = tmp_path / "secret"
    secret.write_text("  from-file  \nsecond line\n")
    assert run("--token-file", str(secret)).stdout == "token=from-file\n"
    in_argv = run("--token", "from-argv")
    assert in_argv.stdout == "token=from-argv\n" and "visible" not in in_argv.stdout
    assert "--token puts the secret in the process list" in in_argv.stderr

    both = run("--token", "a", "--token-file", str(secret))
    assert both.exit_code == 2 and "not both" in both.stderr
    (tmp_path / "empty").write_text("\n")
    empty = run("--token-file", str(tmp_path / "empty"))
    assert empty.exit_code == 2 and "is empty" in empty.stderr


def test_the_split_option_allows_what_a_split_does() -> None:
    assert MAX_VALIDATION_FRACTION == splits.MAX_VALIDATION_FRACTION


def test_sizes_take_decimal_and_binary_units() -> None:
    size = ByteSize()
    assert size.convert("2GiB", None, None) == 2 << 30
    assert size.convert("512MB", None, None) == 512_000_000
    assert size.convert("1.5 kib", None, None) == 1536
    assert size.convert("1000000", None, None) == 1_000_000
    for bad in ("two gigs", "5XB", "0", "-1MB", ""):
        with pytest.raises(click.BadParameter, match="size"):
            size.convert(bad, None, None)
