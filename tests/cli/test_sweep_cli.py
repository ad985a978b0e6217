"""`replaybank sweep` reads its grid from the command line and names a mistake before anything is sent."""

from __future__ import annotations

import click
import pytest
from click.testing import CliRunner

from cli.main import cli
from cli.sweeps import parse_grid, parse_seeds

NOWHERE = "http://127.0.0.1:9"  # nothing listens: a command that got as far as sending would fail differently


def test_a_grid_reads_each_params_values_as_one_json_list_or_as_names() -> None:
    assert parse_grid(["expectile=0.7,0.9", "actor=gaussian,deterministic", "hidden_sizes=[64,64],[256,256]"]) == {
        "expectile": [0.7, 0.9],
        "actor": ["gaussian", "deterministic"],
        "hidden_sizes": [[64, 64], [256, 256]],
    }
    assert parse_grid(["expectile=0.7", "expectile=0.8"]) == {"expectile": [0.7, 0.8]}  # given again: more values
    with pytest.raises(click.BadParameter, match="key=values"):
        parse_grid(["expectile"])
    assert parse_seeds("0, 1,2") == [0, 1, 2]
    with pytest.raises(click.BadParameter, match="comma-separated integers"):
        parse_seeds("0,one")


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (["-p", "nope=1"], "params.nope: none of iql has a parameter 'nope'"),
        (["-p", "expectile=0.7,1.5"], "params.expectile.1: iql: Input should be less than 1"),
        (["-p", "hidden_sizes=64,64"], "hidden_sizes: each value is a list, in brackets: -p hidden_sizes=[64,64],[256,256]"),
        (["--seeds", "0,0"], "seeds.1: seed 0 is given twice"),
        (["--seeds", ",".join(map(str, range(501)))], "the grid makes 1,002 jobs"),
    ],
)
def test_a_bad_grid_is_named_before_anything_is_sent(arguments: list[str], message: str) -> None:
    result = CliRunner().invoke(cli, ["sweep", "logged", "--service", NOWHERE, "-a", "iql", *arguments])
    assert result.exit_code == 1 and message in result.output, result.output
