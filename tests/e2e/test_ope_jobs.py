"""Off-policy evaluation as a job, end to end: a real `replaybank serve` and `replaybank worker` train a
small policy on a dataset with no environment, then estimate its return by FQE on a pinned version's
held-out episodes, submitted and followed with `replaybank policies evaluate --method fqe --watch`."""

from __future__ import annotations

import numpy as np
import pytest

from schemas.dataset import DatasetSpec
from schemas.splits import Split, held_out
from tests.e2e.test_jobs import SMALL, SPEC, cli, client, pendulum_rows, queue_kind, service, service_settings, start_worker, wait_for

pytestmark = pytest.mark.slow

__all__ = ["client", "queue_kind", "service", "service_settings", "start_worker"]  # the fixtures, shared with test_jobs.py

NO_ENV = DatasetSpec(observation=SPEC.observation, action=SPEC.action, env_id=None)


def trained_without_an_environment(client, start_worker, tmp_path, algorithm: str, episodes: int, steps: int):
    """A dataset with no env_id, a worker for two jobs, and the id of the policy it trained first."""
    client.create_dataset("logged", NO_ENV)
    client.upload("logged", pendulum_rows(episodes=episodes, length=50))
    trained = client.submit_job(
        {"kind": "train", "algorithm": algorithm, "dataset": "logged", "steps": steps, "seed": 0, "params": SMALL}
    )
    worker = start_worker("--max-jobs", "2")
    policy_id = wait_for(client, trained.id, lambda job: job.status == "succeeded", 240, tmp_path).policy_id
    assert policy_id is not None
    return worker, policy_id


def test_an_fqe_job_puts_its_estimate_on_the_card_without_an_environment(service, client, start_worker, tmp_path) -> None:
    worker, policy_id = trained_without_an_environment(client, start_worker, tmp_path, "iql", episodes=8, steps=200)
    client.upload("logged", pendulum_rows(episodes=2, length=50, first_episode=100, seed=1))  # version 2, not asked for
    seed = next(seed for seed in range(100) if held_out(np.arange(8), Split(validation_fraction=0.5, seed=seed)).any())

    evaluated = cli(
        service,
        "policies", "evaluate", policy_id, "--method", "fqe", "--version", "1", "--validation-fraction", "0.5",
        "--split-seed", str(seed), "--steps", "300", "--discount", "0.9", "--watch",
        timeout=240,
    )  # fmt: skip
    assert evaluated.returncode == 0, evaluated.stderr
    assert worker.wait(timeout=60) == 0
    job_id = evaluated.stdout.splitlines()[0].strip()
    assert f"job {job_id} succeeded" in evaluated.stdout
    job = client.get_job(job_id)
    assert (job.status, job.version, job.evaluate.method if job.evaluate else None) == ("succeeded", 1, "fqe")
    assert job.step == 300 and "estimate" in job.metrics

    [entry] = client.get_policy(policy_id).card["evaluations"]
    split = {"validation_fraction": 0.5, "seed": seed}
    assert (entry["method"], entry["version"], entry["split"], entry["job_id"]) == ("fqe", 1, split, job.id)
    assert (entry["steps"], entry["discount"]) == (300, 0.9)
    assert entry["low"] <= entry["estimate"] <= entry["high"]
    held = int(held_out(np.arange(8), Split(**split)).sum())
    assert (entry["episodes"], entry["rows"]) == (held, held * 50)
    # Pendulum rewards lie in [-10, 0]: a discounted return at 0.9 lies in [-100, 0]
    assert -100.0 <= entry["estimate"] <= 0.0


def test_a_model_job_on_a_combo_version_rolls_out_in_the_stored_dynamics_model(client, start_worker, tmp_path) -> None:
    worker, policy_id = trained_without_an_environment(client, start_worker, tmp_path, "combo", episodes=4, steps=50)
    evaluating = client.submit_job(
        {"kind": "evaluate", "dataset": "logged", "evaluate": {"policy": policy_id, "method": "model", "steps": 20}}
    )
    done = wait_for(client, evaluating.id, lambda job: job.status == "succeeded", 180, tmp_path)
    assert worker.wait(timeout=60) == 0
    assert done.result["details"]["model_reused"] is True
    [entry] = client.get_policy(policy_id).card["evaluations"]
    assert (entry["method"], entry["version"], entry["split"], entry["steps"]) == ("model", 1, None, 20)
    assert entry["low"] <= entry["estimate"] <= entry["high"]
