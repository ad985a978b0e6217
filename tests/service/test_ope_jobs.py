"""Evaluate jobs without an environment ("fqe", "model") over HTTP: what submission refuses, and the card
keeping every evaluation. The worker side is driven by hand through the protocol, as in test_jobs.py."""

from __future__ import annotations

from typing import Any

import numpy as np
from fastapi.testclient import TestClient

from schemas.splits import Split, held_out
from tests.factories import upload_rows as rows
from tests.service.conftest import ADMIN, GRID, HOPPER, append
from tests.service.test_jobs import backend, claim, database_url, held, policy_tar, start, submit, upload_policy

__all__ = ["backend", "database_url", "start"]  # the fixtures, shared with test_jobs.py

HOPPER_CARD = {
    "algorithm": "iql",
    "normalisation": {},
    "observation": HOPPER["observation"],
    "action": HOPPER["action"],
}


def trained_policy(client: TestClient) -> str:
    """A policy trained on `hopper` whose card names hopper's spaces."""
    job = submit(client)
    claimed = claim(client)
    assert claimed is not None
    policy = upload_policy(client, job["id"], claimed["lease"], policy_tar(HOPPER_CARD))
    assert policy.status_code == 201, policy.text
    assert client.post(f"/v1/jobs/{job['id']}/complete", json={}, headers=held(claimed["lease"])).status_code == 200
    return policy.json()["id"]


def evaluate_job(policy: str, dataset: str = "hopper", version: int | str = "latest", **options: Any) -> dict[str, Any]:
    return {"kind": "evaluate", "dataset": dataset, "version": version, "evaluate": {"policy": policy, **options}}


def refused(client: TestClient, job: dict[str, Any], field: str) -> str:
    response = client.post("/v1/jobs", json=job, headers=ADMIN)
    assert response.status_code == 422, response.text
    assert response.json()["error"]["field"] == field, response.text
    return response.json()["error"]["message"]


def job_count(client: TestClient) -> int:
    return client.get("/v1/jobs", headers=ADMIN).json()["count"]


def test_a_policy_whose_spaces_differ_from_the_datasets_is_refused(start) -> None:
    client = start()
    policy = trained_policy(client)
    switches = {**HOPPER, "name": "switches", "env_id": None, "action": {"kind": "discrete", "n": 4}}
    assert client.post("/v1/datasets", json=switches, headers=ADMIN).status_code == 201
    assert append(client, rows(episodes=2, length=4, action_size=None), name="switches").status_code == 201
    narrow = {**HOPPER, "name": "narrow", "observation": {"shape": [5]}}  # with an env_id, so "env" gets to the check
    assert client.post("/v1/datasets", json=narrow, headers=ADMIN).status_code == 201
    before = job_count(client)
    for method in ("fqe", "env"):
        assert "shape [11]" in refused(client, evaluate_job(policy, "narrow", method=method), "evaluate.policy")
    message = refused(client, evaluate_job(policy, "switches", method="fqe"), "evaluate.policy")
    assert "continuous actions of shape [3]" in message and "discrete actions 0..3" in message
    assert job_count(client) == before and claim(client) is None


def test_an_offline_evaluation_needs_a_complete_episode_in_its_version(start) -> None:
    client = start()
    policy = trained_policy(client)
    assert client.post("/v1/datasets", json={**HOPPER, "name": "open", "env_id": None}, headers=ADMIN).status_code == 201
    assert append(client, rows(episodes=1, length=4, end="none"), name="open").status_code == 201  # version 1: open
    assert append(client, rows(episodes=1, length=3, first_step=4), name="open").status_code == 201  # 2: it ends
    before = job_count(client)
    for method in ("fqe", "model"):
        assert "no complete episode" in refused(client, evaluate_job(policy, "open", version=1, method=method), "version")
    assert job_count(client) == before
    accepted = client.post("/v1/jobs", json=evaluate_job(policy, "open", version=2, method="fqe", steps=200), headers=ADMIN)
    assert accepted.status_code == 201, accepted.text
    chosen = accepted.json()["evaluate"]
    assert (accepted.json()["version"], chosen["method"], chosen["steps"], chosen["split"]) == (2, "fqe", 200, None)


def test_a_split_holding_out_no_complete_episode_is_refused(start) -> None:
    client = start()  # hopper version 1: complete episodes 0 and 1
    policy = trained_policy(client)
    episodes = np.array([0, 1])
    empty = next(seed for seed in range(1000) if not held_out(episodes, Split(validation_fraction=0.1, seed=seed)).any())
    some = next(seed for seed in range(1000) if held_out(episodes, Split(validation_fraction=0.5, seed=seed)).any())
    before = job_count(client)
    split = {"validation_fraction": 0.1, "seed": empty}
    assert "holds out none" in refused(client, evaluate_job(policy, method="fqe", split=split), "evaluate.split")
    assert job_count(client) == before
    held_split = {"validation_fraction": 0.5, "seed": some}
    accepted = client.post("/v1/jobs", json=evaluate_job(policy, method="model", split=held_split), headers=ADMIN)
    assert accepted.status_code == 201 and accepted.json()["evaluate"]["split"] == held_split


def test_bad_offline_options_are_refused_naming_the_field(start) -> None:
    client = start()
    policy = trained_policy(client)
    assert client.post("/v1/datasets", json={**GRID, "name": "cells"}, headers=ADMIN).status_code == 201
    assert append(client, rows(episodes=2, length=4, observation_size=4, action_size=None), name="cells").status_code == 201
    grid_card = {"algorithm": "iql", "normalisation": {}, "observation": GRID["observation"], "action": GRID["action"]}
    job = submit(client, dataset="cells")
    claimed = claim(client)
    assert claimed is not None
    grid_policy = upload_policy(client, job["id"], claimed["lease"], policy_tar(grid_card)).json()["id"]
    before = job_count(client)
    assert "continuous" in refused(client, evaluate_job(grid_policy, "cells", method="model"), "evaluate.method")
    refused(client, evaluate_job(policy, method="env", steps=100), "evaluate")
    refused(client, evaluate_job(policy, method="fqe", steps=10_000_000), "evaluate.steps")
    refused(client, evaluate_job(policy, method="fqe", discount=1.0), "evaluate.discount")
    refused(client, evaluate_job(policy, method="fqe", split={"validation_fraction": 0.95}), "evaluate.split.validation_fraction")
    assert job_count(client) == before


def finish(client: TestClient, job: dict[str, Any], *results: dict[str, Any]) -> list[Any]:
    """Claim the job and try to complete it with each result in turn: the answers."""
    claimed = claim(client)
    assert claimed is not None and claimed["job"]["id"] == job["id"]
    url, lease = f"/v1/jobs/{job['id']}/complete", held(claimed["lease"])
    return [client.post(url, json={"result": result}, headers=lease) for result in results]


def estimate(method: str, value: float, split: dict[str, Any] | None = None) -> dict[str, Any]:
    return {
        "method": method,
        "estimate": value,
        "low": value - 1.0,
        "high": value + 1.0,
        "discount": 0.99,
        "episodes": 2,
        "rows": 10,
        "split": split,
        "steps": 200,
    }


def test_the_card_keeps_every_evaluation_with_its_version_split_and_method(start) -> None:
    client = start()
    policy = trained_policy(client)
    env_job = client.post("/v1/jobs", json=evaluate_job(policy, episodes=2), headers=ADMIN).json()
    assert finish(client, env_job, {"returns": [10.0, 20.0], "lengths": [5, 5]})[0].status_code == 200
    fqe_job = client.post("/v1/jobs", json=evaluate_job(policy, version=1, method="fqe", steps=200), headers=ADMIN).json()
    env_shaped, done = finish(client, fqe_job, {"returns": [1.0]}, estimate("fqe", 5.0))
    assert env_shaped.status_code == 422 and env_shaped.json()["error"]["field"].startswith("result.")
    assert done.status_code == 200

    assert append(client, rows(episodes=2, length=5, first_episode=10)).status_code == 201
    split = {"validation_fraction": 0.9, "seed": 0}
    model_job = client.post("/v1/jobs", json=evaluate_job(policy, version=2, method="model", split=split), headers=ADMIN).json()
    [done] = finish(client, model_job, estimate("model", 7.0, split))
    assert done.status_code == 200 and done.json()["result"]["estimate"] == 7.0

    evaluations = client.get(f"/v1/policies/{policy}", headers=ADMIN).json()["card"]["evaluations"]
    seen = [(entry["job_id"], entry["method"], entry["version"], entry.get("split")) for entry in evaluations]
    assert seen == [(env_job["id"], "env", 1, None), (fqe_job["id"], "fqe", 1, None), (model_job["id"], "model", 2, split)]
    assert evaluations[0]["mean"] == 15.0
    assert [(entry["low"], entry["estimate"], entry["high"]) for entry in evaluations[1:]] == [(4.0, 5.0, 6.0), (6.0, 7.0, 8.0)]
