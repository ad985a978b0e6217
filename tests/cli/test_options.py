"""Argument parsing the commands share."""

from __future__ import annotations

import click
import pytest

from cli.options import parse_params, parse_shape, parse_version


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
