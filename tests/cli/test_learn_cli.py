"""`replaybank fit` and `replaybank evaluate` as a user runs them: real processes on real files."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from schemas.splits import Split, held_out
from tests.factories import random_transitions
from workers.algos.data import Normalisation, arrays_to_arrow
from workers.files.d4rl import write_hdf5
from workers.files.parquet import write_parquet
from workers.rollouts.behaviour import PENDULUM_SPEC, pendulum_dataset

REPLAYBANK = shutil.which("replaybank", path=str(Path(sys.executable).parent)) or "replaybank"
SMALL = ["-p", "batch_size=32", "-p", "hidden_sizes=[16,16]", "--threads", "1"]


def run(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([REPLAYBANK, *args], capture_output=True, text=True, timeout=300, cwd=cwd, check=False)


@pytest.fixture(scope="module")
def data_files(tmp_path_factory) -> dict[str, Path]:
    """The same Pendulum transitions as Parquet (with its spec), D4RL-layout HDF5, and a bare D4RL NPZ."""
    folder = tmp_path_factory.mktemp("data")
    arrays = pendulum_dataset("medium", episodes=2, seed=0)
    table = arrays_to_arrow(arrays, PENDULUM_SPEC)
    write_parquet(table, folder / "pendulum.parquet", PENDULUM_SPEC)
    write_hdf5(table, folder / "pendulum.hdf5", PENDULUM_SPEC)
    np.savez(
        folder / "pendulum.npz",
        observations=arrays.observations,
        actions=arrays.actions,
        rewards=arrays.rewards,
        next_observations=arrays.next_observations,
        terminals=arrays.terminals,
        timeouts=arrays.truncateds,
    )
    return {"parquet": folder / "pendulum.parquet", "hdf5": folder / "pendulum.hdf5", "npz": folder / "pendulum.npz"}


@pytest.mark.parametrize(
    ("algorithm", "file_format", "extra"),
    [
        ("iql", "parquet", []),
        ("cql", "hdf5", ["-p", "sampled_actions=2"]),
        ("bc", "npz", ["--env", "Pendulum-v1"]),  # a bare NPZ names no environment
        ("combo", "parquet", ["-p", "max_dynamics_epochs=2", "-p", "ensemble_size=2", "-p", "elites=1",
                              "-p", "rollout_batch_size=64", "-p", "dynamics_hidden_sizes=[16]"]),
        ("awac", "hdf5", ["-p", "weighting=clipped"]),
    ],
)
def test_fit_writes_a_policy_that_evaluate_runs(algorithm, file_format, extra, data_files, tmp_path) -> None:
    out = tmp_path / "policy"
    fitted = run("fit", "--algorithm", algorithm, "--data", str(data_files[file_format]), "--steps", "20",
                 "--seed", "1", "--device", "cpu", "--out", str(out), *SMALL, *extra)
    assert fitted.returncode == 0, fitted.stderr[-3000:]

    assert {"policy.onnx", "policy.pt2", "card.json", "metrics.jsonl"} <= {p.name for p in out.iterdir()}
    summary = json.loads(fitted.stdout)
    assert summary["steps"] == 20 and summary["algorithm"] == algorithm
    assert "20/20" in fitted.stderr  # the progress bar reached the end
    card = json.loads((out / "card.json").read_text())
    assert card["algorithm"] == algorithm and card["env_id"] == "Pendulum-v1"
    assert json.loads((out / "metrics.jsonl").read_text().splitlines()[-1])["step"] == 20

    evaluated = run("evaluate", "--policy", str(out), "--episodes", "2", "--seed", "5")
    assert evaluated.returncode == 0, evaluated.stderr[-3000:]
    result = json.loads(evaluated.stdout)
    assert result["env_id"] == "Pendulum-v1" and result["episodes"] == 2 and result["seed"] == 5
    assert len(result["returns"]) == 2 and all(-2000 < r <= 0 for r in result["returns"])


def test_the_onnx_policy_runs_with_onnxruntime_alone(data_files, tmp_path) -> None:
    out = tmp_path / "policy"
    fitted = run("fit", "-a", "iql", "--data", str(data_files["parquet"]), "--steps", "10", "--out", str(out), *SMALL)
    assert fitted.returncode == 0, fitted.stderr[-3000:]

    # A fresh interpreter in an empty folder, with only onnxruntime and numpy: no project code to lean on.
    check = textwrap.dedent(
        """
        import json, sys
        import numpy as np
        import onnxruntime
        session = onnxruntime.InferenceSession(sys.argv[1], providers=["CPUExecutionProvider"])
        (given,) = session.get_inputs()
        observations = np.random.default_rng(0).uniform(-8, 8, size=(5, 3)).astype(np.float32)
        actions = session.run(None, {given.name: observations})[0]
        again = session.run(None, {given.name: observations[:1]})[0]
        ours = sorted(name for name in sys.modules if name.split(".")[0] in {"workers", "schemas", "service", "cli"})
        print(json.dumps({"shape": list(actions.shape), "dtype": str(actions.dtype), "low": float(actions.min()),
                          "high": float(actions.max()), "first": actions[0].tolist(), "alone": again[0].tolist(),
                          "project_modules": ours}))
        """
    )
    environment = {key: value for key, value in os.environ.items() if key != "PYTHONPATH"}
    finished = subprocess.run(
        [sys.executable, "-I", "-c", check, str(out / "policy.onnx")],
        capture_output=True, text=True, timeout=120, cwd=tmp_path, env=environment, check=False,
    )
    assert finished.returncode == 0, finished.stderr[-3000:]
    result = json.loads(finished.stdout)
    assert result["shape"] == [5, 1] and result["dtype"] == "float32"
    assert -2.0 <= result["low"] <= result["high"] <= 2.0
    np.testing.assert_allclose(result["alone"], result["first"], atol=1e-6)  # any batch size, same answer
    assert result["project_modules"] == []


def test_bad_input_fails_with_a_message_and_writes_nothing(data_files, tmp_path) -> None:
    unknown = run("fit", "-a", "iql", "--data", str(data_files["parquet"]), "--steps", "5", "--out",
                  str(tmp_path / "a"), "-p", "expectyle=0.7")
    assert unknown.returncode != 0 and "expectyle" in unknown.stderr
    malformed = run("fit", "-a", "iql", "--data", str(data_files["parquet"]), "--steps", "5", "--out",
                    str(tmp_path / "b"), "-p", "expectile")
    assert malformed.returncode != 0 and "key=value" in malformed.stderr
    not_data = tmp_path / "notes.parquet"
    not_data.write_text("not parquet")
    unreadable = run("fit", "-a", "bc", "--data", str(not_data), "--steps", "5", "--out", str(tmp_path / "c"))
    assert unreadable.returncode != 0 and "notes.parquet" in unreadable.stderr
    assert "Traceback" not in unknown.stderr + malformed.stderr + unreadable.stderr
    assert not any((tmp_path / name).exists() for name in ("a", "b", "c"))

    no_policy = run("evaluate", "--policy", str(tmp_path), "--env", "Pendulum-v1", "--episodes", "1")
    assert no_policy.returncode != 0 and "policy.onnx" in no_policy.stderr and "Traceback" not in no_policy.stderr


def test_a_mismatched_environment_and_a_bad_list_param_are_one_line(data_files, tmp_path) -> None:
    out = tmp_path / "policy"
    small = ["-p", "batch_size=32", "-p", "hidden_sizes=16,16", "--threads", "1"]  # a list param, comma-separated
    fitted = run("fit", "-a", "bc", "--data", str(data_files["parquet"]), "--steps", "5", "--out", str(out), *small)
    assert fitted.returncode == 0, fitted.stderr[-3000:]
    assert json.loads((out / "card.json").read_text())["params"]["hidden_sizes"] == [16, 16]

    mismatched = run("evaluate", "--policy", str(out), "--env", "CartPole-v1", "--episodes", "1")
    assert mismatched.returncode == 1
    assert mismatched.stderr.strip() == (
        "Error: the policy takes observations of shape [3], but CartPole-v1 gives observations of shape [4]"
    )
    unknown_env = run("evaluate", "--policy", str(out), "--env", "NoSuchEnv-v0", "--episodes", "1")
    assert unknown_env.returncode == 1 and "NoSuchEnv-v0" in unknown_env.stderr
    bad_list = run("fit", "-a", "bc", "--data", str(data_files["parquet"]), "--steps", "5", "--out", str(tmp_path / "x"),
                   "-p", "hidden_sizes=wide,deep")
    assert bad_list.returncode == 1
    assert bad_list.stderr.strip().endswith("hidden_sizes: expected a list of integers, e.g. -p hidden_sizes=64,64")
    for result in (mismatched, unknown_env, bad_list):
        assert "Traceback" not in result.stderr and len(result.stderr.strip().splitlines()) == 1


@pytest.mark.parametrize("budget", [(), ("--memory-budget", "1")], ids=["resident", "streamed"])
def test_fit_holds_out_episodes_and_logs_validation_metrics(tmp_path, budget) -> None:
    arrays = random_transitions(PENDULUM_SPEC, rows=400, episode_length=50)  # 8 episodes
    data = tmp_path / "logged.parquet"
    write_parquet(arrays_to_arrow(arrays, PENDULUM_SPEC), data, PENDULUM_SPEC)
    ids = np.arange(8)
    seed = next(seed for seed in range(100) if 2 <= held_out(ids, Split(validation_fraction=0.5, seed=seed)).sum() <= 6)
    held = held_out(arrays.episode_ids, Split(validation_fraction=0.5, seed=seed))
    out = tmp_path / "policy"
    fitted = run("fit", "-a", "iql", "--data", str(data), "--steps", "20", "--out", str(out), "--validation-fraction", "0.5",
                 "--split-seed", str(seed), *budget, *SMALL)
    assert fitted.returncode == 0, fitted.stderr[-3000:]
    assert json.loads(fitted.stdout)["streamed"] is bool(budget)

    expected = {"validation_fraction": 0.5, "seed": seed, "held_out_episodes": int(held.sum()) // 50, "held_out_rows": int(held.sum())}
    card = json.loads((out / "card.json").read_text())
    assert card["split"] == expected and json.loads(fitted.stdout)["split"] == expected
    assert card["rows"] == 400 - expected["held_out_rows"]
    # the normalisation is the training rows' alone
    training_mean = Normalisation.from_arrays(arrays.subset(~held)).observation_mean
    np.testing.assert_allclose(card["normalisation"]["observation_mean"], training_mean, rtol=1e-6)
    lines = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert len(lines) >= 2 and lines[-1]["step"] == 20
    for line in lines:
        for name in ("validation/td_error", "validation/log_likelihood", "validation/value_mean"):
            assert np.isfinite(line[name]), (name, line)
        assert "critic_loss" in line  # beside the training losses


def test_fit_refuses_a_split_that_holds_out_nothing(data_files, tmp_path) -> None:
    # two episodes: find a seed whose 10% holds out neither
    seed = next(seed for seed in range(100) if not held_out(np.arange(2), Split(validation_fraction=0.1, seed=seed)).any())
    refused = run("fit", "-a", "bc", "--data", str(data_files["parquet"]), "--steps", "5", "--out", str(tmp_path / "p"),
                  "--validation-fraction", "0.1", "--split-seed", str(seed))
    assert refused.returncode == 1 and "holds out no episode" in refused.stderr and "Traceback" not in refused.stderr
    assert not (tmp_path / "p").exists()
    too_many = run("fit", "-a", "bc", "--data", str(data_files["parquet"]), "--steps", "5", "--out", str(tmp_path / "q"),
                   "--validation-fraction", "0.95")
    assert too_many.returncode == 2 and "--validation-fraction" in too_many.stderr


def test_fit_over_its_memory_budget_streams_and_a_bad_budget_is_refused(data_files, tmp_path) -> None:
    out = tmp_path / "streamed"
    done = run("fit", "-a", "bc", "--data", str(data_files["parquet"]), "--steps", "20", "--out", str(out), "--memory-budget", "1KiB", *SMALL)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["streamed"] is True
    assert sorted(path.name for path in out.iterdir()) == ["card.json", "metrics.jsonl", "policy.onnx", "policy.pt2"]
    refused = run("fit", "-a", "bc", "--data", str(data_files["parquet"]), "--steps", "20", "--out", str(out), "--memory-budget", "lots")
    assert refused.returncode == 2 and "--memory-budget" in refused.stderr and "2GiB" in refused.stderr
