"""Sweeps over HTTP: the grid a sweep submits, what it refuses, the evaluations that follow each trained policy,
the leaderboard over what they found, and cancelling. The worker side is driven by hand through the protocol,
as in test_jobs.py, on SQLite with the embedded queue and on PostgreSQL with Redis."""

from __future__ import annotations

from typing import Any

import anyio
import numpy as np
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import delete

from schemas.splits import Split, held_out
from service.catalog.sweeps import SweepJobRow
from tests.factories import upload_rows as rows
from tests.service.conftest import ADMIN, GRID, HOPPER, append
from tests.service.test_jobs import backend, claim, database_url, held, policy_tar, start, upload_policy
from tests.service.test_ope_jobs import estimate

__all__ = ["backend", "database_url", "start"]  # the fixtures, shared with test_jobs.py

EPISODES = 10
LOGGED = {**HOPPER, "name": "logged", "env_id": None}
SPLIT = {"validation_fraction": 0.3, "seed": next(s for s in range(100) if 0 < held_out(np.arange(EPISODES), Split(validation_fraction=0.3, seed=s)).sum() < EPISODES)}


def with_datasets(client: TestClient) -> TestClient:
    """`logged` (no environment) and `hopper` (Hopper-v5) with ten complete episodes each."""
    assert client.post("/v1/datasets", json=LOGGED, headers=ADMIN).status_code == 201
    for name in ("logged", "hopper"):
        assert append(client, rows(episodes=EPISODES, length=5, first_episode=100), name=name).status_code == 201
    return client


def sweep_body(**fields: Any) -> dict[str, Any]:
    return {"dataset": "logged", "algorithms": ["iql"], "steps": 100, "split": SPLIT, **fields}


def submit_sweep(client: TestClient, **fields: Any) -> dict[str, Any]:
    response = client.post("/v1/sweeps", json=sweep_body(**fields), headers=ADMIN)
    assert response.status_code == 201, response.text
    return response.json()


def sweep(client: TestClient, sweep_id: str) -> dict[str, Any]:
    response = client.get(f"/v1/sweeps/{sweep_id}", headers=ADMIN)
    assert response.status_code == 200, response.text
    return response.json()


def job(client: TestClient, job_id: str) -> dict[str, Any]:
    return client.get(f"/v1/jobs/{job_id}", headers=ADMIN).json()


def train_next(client: TestClient, evaluations: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    """Claim the next job, a train job, and finish it as a worker would: upload its policy (with `evaluations`
    on its card, as training's own environment evaluation writes them), then complete it."""
    claimed = claim(client)
    assert claimed is not None and claimed["job"]["kind"] == "train", claimed
    found, lease = claimed["job"], claimed["lease"]
    card = {"algorithm": found["algorithm"], "normalisation": {}, "evaluations": evaluations or []}
    assert upload_policy(client, found["id"], lease, policy_tar(card)).status_code == 201
    done = client.post(f"/v1/jobs/{found['id']}/complete", json={}, headers=held(lease))
    assert done.status_code == 200, done.text
    return done.json()


def claim_evaluation(client: TestClient) -> dict[str, Any]:
    claimed = claim(client)
    assert claimed is not None and claimed["job"]["kind"] == "evaluate"
    return claimed


def finish(client: TestClient, claimed: dict[str, Any], result: dict[str, Any]) -> None:
    url = f"/v1/jobs/{claimed['job']['id']}/complete"
    answer = client.post(url, json={"result": result}, headers=held(claimed["lease"]))
    assert answer.status_code == 200, answer.text


def test_the_grid_crosses_each_algorithms_own_params_with_the_seeds(start) -> None:
    client = with_datasets(start())
    submitted = submit_sweep(client, algorithms=["iql", "cql"], params={"expectile": [0.7, 0.9]}, seeds=[0, 1])
    assert (submitted["status"], submitted["version"], submitted["requested_version"]) == ("running", 1, "latest")
    assert submitted["train"] == {"total": 6, "queued": 6, "running": 0, "succeeded": 0, "failed": 0, "cancelled": 0}
    assert submitted["evaluations"]["total"] == 0 and submitted["evaluate_jobs"] == []
    jobs = [job(client, job_id) for job_id in submitted["train_jobs"]]
    grid = sorted((item["algorithm"], item["params"].get("expectile"), item["seed"]) for item in jobs)
    assert grid == [("cql", None, 0), ("cql", None, 1), ("iql", 0.7, 0), ("iql", 0.7, 1), ("iql", 0.9, 0), ("iql", 0.9, 1)]
    assert {(item["kind"], item["version"], item["steps"], item["dataset"]) for item in jobs} == {("train", 1, 100, "logged")}
    assert all(item["split"] == SPLIT for item in jobs)
    assert append(client, rows(episodes=1, length=5, first_episode=500), name="logged").status_code == 201
    shown = sweep(client, submitted["id"])
    assert shown["version"] == 1, "pinned at submission"
    board = shown["leaderboard"]
    assert len(board["entries"]) == 6 and all(entry["rank"] is None and entry["policy_id"] is None for entry in board["entries"])
    assert {(entry["algorithm"], tuple(entry["params"].items())) for entry in board["entries"]} == {
        ("iql", (("expectile", 0.7),)), ("iql", (("expectile", 0.9),)), ("cql", ()),
    }  # fmt: skip
    listed = client.get("/v1/sweeps", headers=ADMIN).json()
    assert listed["count"] == 1 and listed["data"][0]["id"] == submitted["id"]


def test_sweeps_page_newest_first(start) -> None:
    client = with_datasets(start())
    first, second = submit_sweep(client)["id"], submit_sweep(client, seeds=[3])["id"]
    page = client.get("/v1/sweeps", params={"limit": 1}, headers=ADMIN).json()
    assert ([item["id"] for item in page["data"]], page["count"], page["next"]) == ([second], 2, second)
    rest = client.get("/v1/sweeps", params={"limit": 1, "cursor": page["next"]}, headers=ADMIN).json()
    assert [item["id"] for item in rest["data"]] == [first] and rest["next"] is None
    assert client.get("/v1/sweeps", params={"dataset": "hopper"}, headers=ADMIN).json()["count"] == 0


def test_bad_sweeps_are_refused_naming_the_field_and_nothing_is_written(start) -> None:
    client = with_datasets(start())
    assert client.post("/v1/datasets", json={**GRID, "name": "cells"}, headers=ADMIN).status_code == 201
    cells = rows(episodes=EPISODES, length=4, observation_size=4, action_size=None, first_episode=100)
    assert append(client, cells, name="cells").status_code == 201
    assert client.post("/v1/datasets", json={**LOGGED, "name": "open"}, headers=ADMIN).status_code == 201
    assert append(client, rows(episodes=2, length=4, end="none"), name="open").status_code == 201
    no_held_out = next(s for s in range(1000) if not held_out(np.arange(100, 110), Split(validation_fraction=0.05, seed=s)).any())
    bad = [
        ({"params": {"conservative_weight": [1.0]}}, 422, "params.conservative_weight"),  # iql has none
        ({"params": {"expectile": [0.7, 1.5]}}, 422, "params.expectile.1"),
        ({"params": {"expectile": [0.7, 0.7]}}, 422, "params.expectile.1"),
        ({"params": {"hidden_sizes": [[64], [0]]}}, 422, "params.hidden_sizes.1.0"),
        ({"params": {"expectile": []}}, 422, "params.expectile"),
        ({"algorithms": ["iql", "ppo"]}, 422, "algorithms.1"),
        ({"algorithms": []}, 422, "algorithms"),
        ({"seeds": [0, 0]}, 422, "seeds.1"),
        ({"steps": 0}, 422, "steps"),
        ({"discount": 1.0}, 422, "discount"),
        ({"split": {"validation_fraction": 0.95}}, 422, "split.validation_fraction"),
        ({"split": {"validation_fraction": 0.05, "seed": no_held_out}}, 422, "split"),
        ({"surprise": 1}, 422, "surprise"),
        ({"dataset": "nope"}, 404, "dataset"),
        ({"version": 9}, 404, "version"),
        ({"dataset": "open", "split": {"validation_fraction": 0.0}}, 422, "version"),  # no complete episode
        ({"dataset": "cells", "method": "model"}, 422, "method"),  # the dynamics model needs continuous actions
        # more than 1,000 jobs: 501 train jobs and their estimates on the schema's count ...
        ({"seeds": list(range(501))}, 422, "seeds"),
        ({"algorithms": ["iql", "cql"], "params": {"actor_lr": [1e-4, 3e-4]}, "seeds": list(range(251))}, 422, "seeds"),
        # ... and, where there is an environment, 334 with their estimates and environment evaluations
        ({"dataset": "hopper", "seeds": list(range(334))}, 422, "seeds"),
    ]
    for fields, status, field in bad:
        response = client.post("/v1/sweeps", json=sweep_body(**fields), headers=ADMIN)
        assert response.status_code == status, (fields, response.text)
        assert response.json()["error"]["field"] == field, (fields, response.text)
    assert "1,002 jobs" in client.post("/v1/sweeps", json=sweep_body(dataset="hopper", seeds=list(range(334))), headers=ADMIN).text
    assert client.get("/v1/sweeps", headers=ADMIN).json()["count"] == 0
    assert client.get("/v1/jobs", headers=ADMIN).json()["count"] == 0 and claim(client) is None


def test_each_trained_policy_gets_one_estimate_and_the_leaderboard_ranks_them(start) -> None:
    client = with_datasets(start())
    submitted = submit_sweep(client, params={"expectile": [0.6, 0.7, 0.8]}, ope_steps=300, discount=0.9)
    trained = [train_next(client) for _ in range(3)]
    shown = sweep(client, submitted["id"])
    assert shown["status"] == "running" and shown["train"]["succeeded"] == 3
    assert shown["evaluations"]["total"] == 3 == shown["evaluations"]["queued"]
    estimates = {job(client, job_id)["evaluate"]["policy"]: job(client, job_id) for job_id in shown["evaluate_jobs"]}
    assert set(estimates) == {item["policy_id"] for item in trained}, "one estimate per policy"
    for policy_id, evaluating in estimates.items():
        assert evaluating["evaluate"] == {
            "policy": policy_id, "method": "fqe", "episodes": 10, "split": SPLIT, "steps": 300, "discount": 0.9,
        }  # fmt: skip
        assert evaluating["version"] == 1
    anyio.run(client.app.state.services.sweeps.catch_up)  # idempotent: it finds nothing more to submit
    assert sweep(client, submitted["id"])["evaluations"]["total"] == 3

    value_of = {trained[0]["policy_id"]: 3.0, trained[1]["policy_id"]: 1.0, trained[2]["policy_id"]: 2.0}
    for _ in range(3):
        claimed = claim_evaluation(client)
        finish(client, claimed, estimate("fqe", value_of[claimed["job"]["evaluate"]["policy"]], SPLIT))
    shown = sweep(client, submitted["id"])
    assert shown["status"] == "finished" and shown["evaluations"]["succeeded"] == 3
    board = shown["leaderboard"]
    assert [(entry["policy_id"], entry["rank"], entry["estimate"]) for entry in board["entries"]] == [
        (trained[0]["policy_id"], 1, 3.0), (trained[2]["policy_id"], 2, 2.0), (trained[1]["policy_id"], 3, 1.0),
    ]  # fmt: skip
    top = board["entries"][0]
    assert (top["low"], top["high"], top["env_return"], top["ope_status"]) == (2.0, 4.0, None, "succeeded")
    assert top["params"] == {"expectile": job(client, top["train_job"])["params"]["expectile"]}
    assert (board["compared"], board["spearman"], board["regret_at_1"]) == (0, None, None)
    refused = client.post(f"/v1/sweeps/{submitted['id']}/cancel", headers=ADMIN)
    assert refused.status_code == 409 and "finished" in refused.json()["error"]["message"]


def test_environment_returns_join_the_leaderboard_with_spearman_and_regret(start) -> None:
    client = with_datasets(start())
    submitted = submit_sweep(client, dataset="hopper", params={"expectile": [0.6, 0.7, 0.8]}, eval_episodes=4)
    assert submitted["train"]["total"] == 3
    # the first policy's training measured its return already: no environment evaluation is submitted for it
    measured = train_next(client, evaluations=[{"returns": [20.0, 20.0], "mean": 20.0, "std": 0.0, "episodes": 2}])
    others = [train_next(client), train_next(client)]
    shown = sweep(client, submitted["id"])
    kinds = sorted(
        (job(client, job_id)["evaluate"]["method"], job(client, job_id)["evaluate"]["policy"]) for job_id in shown["evaluate_jobs"]
    )
    assert kinds == sorted(
        [("fqe", measured["policy_id"])] + [(method, item["policy_id"]) for item in others for method in ("env", "fqe")]
    )
    env_jobs = [job(client, job_id) for job_id in shown["evaluate_jobs"] if job(client, job_id)["evaluate"]["method"] == "env"]
    assert {item["evaluate"]["episodes"] for item in env_jobs} == {4}
    returns = {others[0]["policy_id"]: 30.0, others[1]["policy_id"]: 10.0}
    estimates = {measured["policy_id"]: 3.0, others[0]["policy_id"]: 1.0, others[1]["policy_id"]: 2.0}
    for _ in range(5):
        claimed = claim_evaluation(client)
        policy = claimed["job"]["evaluate"]["policy"]
        if claimed["job"]["evaluate"]["method"] == "env":
            finish(client, claimed, {"returns": [returns[policy] - 1, returns[policy] + 1]})
        else:
            finish(client, claimed, estimate("fqe", estimates[policy], SPLIT))
    shown = sweep(client, submitted["id"])
    assert shown["status"] == "finished" and shown["evaluations"] == {
        "total": 5, "queued": 0, "running": 0, "succeeded": 5, "failed": 0, "cancelled": 0,
    }  # fmt: skip
    board = shown["leaderboard"]
    assert [(entry["estimate"], entry["env_return"]) for entry in board["entries"]] == [(3.0, 20.0), (2.0, 10.0), (1.0, 30.0)]
    # estimate ranks (3, 2, 1) against return ranks (2, 1, 3): 1 - 6 * (1 + 1 + 4) / (3 * 8) = -0.5;
    # the top estimate returns 20 where the best returns 30 and the worst 10: regret (30 - 20) / 20
    assert (board["compared"], board["spearman"], board["regret_at_1"]) == (3, pytest.approx(-0.5), pytest.approx(0.5))


def test_cancel_cancels_every_unfinished_job_and_no_evaluation_follows(start) -> None:
    client = with_datasets(start())
    submitted = submit_sweep(client, seeds=[0, 1, 2])
    finished = train_next(client)  # its estimate is queued now
    running = claim(client)
    assert running is not None
    cancelled = client.post(f"/v1/sweeps/{submitted['id']}/cancel", headers=ADMIN)
    assert cancelled.status_code == 200, cancelled.text
    shown = cancelled.json()
    assert shown["status"] == "cancelled" and shown["cancelled_at"] is not None
    assert shown["train"] == {"total": 3, "queued": 0, "running": 0, "succeeded": 1, "failed": 0, "cancelled": 2}
    assert shown["evaluations"]["cancelled"] == 1 == shown["evaluations"]["total"]
    assert job(client, finished["id"])["status"] == "succeeded"
    beat = client.post(f"/v1/jobs/{running['job']['id']}/heartbeat", json={"progress": 0.5}, headers=held(running["lease"]))
    assert beat.json()["cancelled"] is True
    assert claim(client) is None
    again = client.post(f"/v1/sweeps/{submitted['id']}/cancel", headers=ADMIN)
    assert again.status_code == 409 and "cancelled" in again.json()["error"]["message"]
    assert client.post("/v1/sweeps/nope/cancel", headers=ADMIN).status_code == 404
    assert client.get("/v1/sweeps/nope", headers=ADMIN).json()["error"]["code"] == "not_found"


def test_a_failed_train_job_finishes_its_sweep_without_an_estimate(start) -> None:
    client = with_datasets(start())
    submitted = submit_sweep(client, seeds=[0, 1])
    claimed = claim(client)
    assert claimed is not None
    failed = client.post(f"/v1/jobs/{claimed['job']['id']}/fail", json={"error": "diverged"}, headers=held(claimed["lease"]))
    assert failed.status_code == 200
    train_next(client)
    finish(client, claim_evaluation(client), estimate("fqe", 4.0, SPLIT))
    shown = sweep(client, submitted["id"])
    assert shown["status"] == "finished" and (shown["train"]["failed"], shown["train"]["succeeded"]) == (1, 1)
    entries = shown["leaderboard"]["entries"]
    assert [(entry["rank"], entry["train_status"], entry["error"]) for entry in entries] == [
        (1, "succeeded", None), (None, "failed", "diverged"),
    ]  # fmt: skip


def test_writing_a_sweep_needs_the_write_scope(start) -> None:
    client = with_datasets(start())
    reader = client.post("/v1/tokens", json={"name": "reader", "scopes": ["read"]}, headers=ADMIN).json()["token"]
    headers = {"Authorization": f"Bearer {reader}"}
    assert client.post("/v1/sweeps", json=sweep_body(), headers=headers).status_code == 403
    submitted = submit_sweep(client)
    assert client.get(f"/v1/sweeps/{submitted['id']}", headers=headers).status_code == 200
    assert client.post(f"/v1/sweeps/{submitted['id']}/cancel", headers=headers).status_code == 403


def test_an_estimate_a_stop_cut_off_is_submitted_at_the_next_start(start, make_client) -> None:
    client = with_datasets(start())
    submitted = submit_sweep(client)
    trained = train_next(client)
    [cut_off] = sweep(client, submitted["id"])["evaluate_jobs"]
    # as if the service stopped after the train job completed, before the estimate was recorded as the sweep's
    assert client.post(f"/v1/jobs/{cut_off}/cancel", headers=ADMIN).status_code == 200
    with client.app.state.services.catalog.session() as session:
        session.execute(delete(SweepJobRow).where(SweepJobRow.job_id == cut_off))
    assert sweep(client, submitted["id"])["status"] == "running", "a trained policy awaits its estimate"
    client.__exit__(None, None, None)

    restarted = make_client(redis_url=client.app.state.settings.redis_url)
    shown = sweep(restarted, submitted["id"])
    [estimating] = shown["evaluate_jobs"]
    assert estimating != cut_off and job(restarted, estimating)["evaluate"]["policy"] == trained["policy_id"]
    assert shown["evaluations"]["queued"] == 1
