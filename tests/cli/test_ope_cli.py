"""`replaybank ope` as a user runs it: a policy folder `fit` wrote, a local file, no environment."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.cli.test_learn_cli import SMALL, run
from workers.algos.data import arrays_to_arrow
from workers.files.parquet import write_parquet
from workers.rollouts.behaviour import CARTPOLE_SPEC, PENDULUM_SPEC, cartpole_dataset, pendulum_dataset


@pytest.fixture(scope="module")
def pendulum_policy(tmp_path_factory) -> tuple[Path, Path]:
    """Pendulum data with six whole episodes, and a BC policy `replaybank fit` trained on it."""
    folder = tmp_path_factory.mktemp("ope")
    data = folder / "pendulum.parquet"
    write_parquet(arrays_to_arrow(pendulum_dataset("medium", episodes=6, seed=0), PENDULUM_SPEC), data, PENDULUM_SPEC)
    fitted = run("fit", "--algorithm", "bc", "--data", str(data), "--steps", "200", "--out", str(folder / "policy"), *SMALL)
    assert fitted.returncode == 0, fitted.stderr
    return folder / "policy", data


@pytest.mark.parametrize("method", ["fqe", "model"])
def test_ope_prints_one_json_estimate_with_its_interval(method, pendulum_policy) -> None:
    policy, data = pendulum_policy
    steps = "300" if method == "fqe" else "50"
    result = run("ope", "--policy", str(policy), "--data", str(data), "--method", method, "--steps", steps,
                 "--validation-fraction", "0.5", "--discount", "0.9")  # fmt: skip
    assert result.returncode == 0, result.stderr
    answer = json.loads(result.stdout)  # stdout holds the answer alone; progress went to stderr
    assert answer["method"] == method and answer["discount"] == 0.9
    assert answer["low"] <= answer["estimate"] <= answer["high"]
    assert 1 <= answer["episodes"] < 6, "only the held-out episodes are evaluated"
    assert answer["split"] == {"validation_fraction": 0.5, "seed": 0}
    # Pendulum rewards lie in [-16.3, 0]: a discounted return at 0.9 lies in [-163, 0]
    assert -163.0 <= answer["estimate"] <= 0.0


def test_a_policy_for_other_spaces_is_one_line_naming_the_observation(pendulum_policy, tmp_path) -> None:
    policy, _ = pendulum_policy
    cartpole = tmp_path / "cartpole.parquet"
    write_parquet(arrays_to_arrow(cartpole_dataset(episodes=2, seed=0), CARTPOLE_SPEC), cartpole, CARTPOLE_SPEC)
    result = run("ope", "--policy", str(policy), "--data", str(cartpole), "--steps", "10")
    assert result.returncode == 1 and result.stdout == ""
    [line] = result.stderr.strip().splitlines()
    assert line.startswith("Error: observation:") and "Traceback" not in result.stderr
