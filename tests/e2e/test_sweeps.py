"""Sweeps end to end: a real `replaybank serve` and `replaybank worker` train a tiny grid, estimate each policy by
FQE on the held-out episodes, and (on Pendulum) run it in the environment; `replaybank sweep --watch` follows
it and prints the leaderboard, `replaybank leaderboard` shows it again."""

from __future__ import annotations

import json
import time

import numpy as np
import pytest

from schemas.splits import Split, held_out
from schemas.sweeps import SweepDetail
from tests.e2e.test_jobs import cli, client, pendulum_rows, queue_kind, service, service_settings, start_worker
from tests.e2e.test_ope_jobs import NO_ENV
from workers.client import ReplaybankClient

pytestmark = pytest.mark.slow

__all__ = ["client", "queue_kind", "service", "service_settings", "start_worker"]  # the fixtures, shared with test_jobs.py


def split_seed(episodes: int, fraction: float) -> int:
    """A seed whose split holds out some of episodes 0..episodes-1, and not all."""
    return next(seed for seed in range(100) if 0 < held_out(np.arange(episodes), Split(validation_fraction=fraction, seed=seed)).sum() < episodes)


def finished(client: ReplaybankClient, sweep_id: str, timeout: float) -> SweepDetail:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = client.get_sweep(sweep_id)
        if found.status != "running":
            return found
        time.sleep(0.5)
    raise AssertionError(f"sweep {sweep_id} still running after {timeout} s: {found.model_dump_json()}")


def test_sweep_watch_and_leaderboard_without_an_environment(service, client, start_worker, tmp_path) -> None:
    client.create_dataset("logged", NO_ENV)
    client.upload("logged", pendulum_rows(episodes=8, length=50))
    seed = split_seed(8, 0.5)
    worker = start_worker("--max-jobs", "4")  # two train jobs, two estimates
    swept = cli(
        service,
        "sweep", "logged", "--algorithm", "iql", "--algorithm", "bc", "-p", "hidden_sizes=[32,32]", "-p", "batch_size=64",
        "--steps", "200", "--validation-fraction", "0.5", "--split-seed", str(seed), "--ope-steps", "200",
        "--discount", "0.9", "--watch",
        timeout=300,
    )  # fmt: skip
    assert swept.returncode == 0, swept.stderr
    assert worker.wait(timeout=60) == 0
    sweep_id = swept.stdout.splitlines()[0].strip()
    assert f"sweep {sweep_id} finished: train 2/2 done, evaluations 2/2 done" in swept.stderr

    found = client.get_sweep(sweep_id)
    assert (found.status, found.version, found.train.succeeded, found.evaluations.succeeded) == ("finished", 1, 2, 2)
    entries = found.leaderboard.entries
    assert [entry.rank for entry in entries] == [1, 2] and {entry.algorithm for entry in entries} == {"iql", "bc"}
    assert entries[0].estimate is not None and entries[1].estimate is not None and entries[0].estimate >= entries[1].estimate
    for entry in entries:
        assert entry.policy_id is not None and entry.policy_id in swept.stdout  # the table --watch printed
        assert entry.low is not None and entry.high is not None and entry.low <= entry.estimate <= entry.high  # type: ignore[operator]
        # Pendulum rewards lie in [-10, 0]: a discounted return at 0.9 lies in [-100, 0]
        assert -100.0 <= entry.estimate <= 0.0  # type: ignore[operator]
        assert entry.env_return is None and entry.params == {"hidden_sizes": [32, 32], "batch_size": 64}
        [evaluation] = client.get_policy(entry.policy_id).card["evaluations"]
        split = {"validation_fraction": 0.5, "seed": seed}
        assert (evaluation["method"], evaluation["version"], evaluation["split"], evaluation["steps"]) == ("fqe", 1, split, 200)
        assert evaluation["estimate"] == entry.estimate and evaluation["job_id"] == entry.ope_job
        assert client.get_job(entry.train_job).split is not None
    assert (found.leaderboard.compared, found.leaderboard.spearman, found.leaderboard.regret_at_1) == (0, None, None)

    table = cli(service, "leaderboard", sweep_id)
    assert table.returncode == 0, table.stderr
    lines = table.stdout.splitlines()
    assert lines[0].split()[:4] == ["rank", "policy", "algorithm", "params"] and "fqe estimate [low, high]" in lines[0]
    assert lines[1].split()[:2] == ["1", entries[0].policy_id] and lines[2].split()[:2] == ["2", entries[1].policy_id]
    as_json = cli(service, "leaderboard", sweep_id, "--json")
    assert as_json.returncode == 0 and json.loads(as_json.stdout)["leaderboard"]["entries"][0]["policy_id"] == entries[0].policy_id
    listed = cli(service, "sweeps")
    assert sweep_id in listed.stdout and "finished" in listed.stdout
    too_late = cli(service, "sweeps", "cancel", sweep_id)
    assert too_late.returncode == 1 and f"sweep {sweep_id} already finished [409 conflict]" in too_late.stderr


def test_a_sweep_on_pendulum_compares_its_estimates_with_environment_returns(client, start_worker) -> None:
    seed = split_seed(4, 0.5)  # the fixture's pendulum dataset: 4 episodes of 100 steps
    submitted = client.submit_sweep(
        {
            "dataset": "pendulum",
            "algorithms": ["iql"],
            "params": {"hidden_sizes": [[32, 32]], "batch_size": [64], "expectile": [0.7, 0.9]},
            "steps": 200,
            "split": {"validation_fraction": 0.5, "seed": seed},
            "ope_steps": 100,
            "eval_episodes": 2,
        }
    )
    assert submitted.train.total == 2
    worker = start_worker("--max-jobs", "6")  # the worker measures no return while training (--eval-episodes 0)
    found = finished(client, submitted.id, timeout=300)
    assert worker.wait(timeout=60) == 0
    assert (found.status, found.train.succeeded, found.evaluations.succeeded, found.evaluations.total) == ("finished", 2, 4, 4)
    board = found.leaderboard
    for entry in board.entries:
        assert entry.estimate is not None and entry.env_return is not None
        # 200 steps of Pendulum, each rewarded within [-16.3, 0]
        assert -16.3 * 200 <= entry.env_return <= 0.0
        methods = sorted(evaluation["method"] for evaluation in client.get_policy(entry.policy_id or "").card["evaluations"])
        assert methods == ["env", "fqe"]
    assert board.compared == 2
    assert board.spearman in (-1.0, 1.0)  # two policies: the orders agree or they do not
    expected_regret = 0.0 if board.spearman == 1.0 else 1.0
    assert board.regret_at_1 == pytest.approx(expected_regret)
