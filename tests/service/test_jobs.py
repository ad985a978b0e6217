"""Jobs over HTTP: submission, the worker protocol, cancellation, leases, policies, permissions.

The worker side is driven by hand here (claim, heartbeat, checkpoint, policy, complete), against the
real app on SQLite with the embedded queue and on PostgreSQL with Redis. Leases run on the test's
`ManualClock`: they lapse, and the sweeper runs, when a test moves the clock on.
"""

from __future__ import annotations

import io
import json
import tarfile
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select

from service.catalog.jobs import DynamicsRow
from service.catalog.tables import DatasetRow, EpisodeRow, FileRow, TagRow, VersionRow

from service.settings import Settings
from tests.clock import ManualClock
from tests.factories import upload_rows as rows
from tests.service.conftest import ADMIN, ARROW, BOTH_STORES, GRID, HOPPER, MakeClient, append, arrow_body

LEASE = "Replaybank-Lease"
LEASE_SECONDS = Settings().lease_seconds
IQL = {"kind": "train", "algorithm": "iql", "dataset": "hopper", "steps": 100, "seed": 3}


@pytest.fixture(params=["sqlite+embedded", "postgresql+redis"])
def backend(request: pytest.FixtureRequest) -> dict[str, Any]:
    if request.param == "sqlite+embedded":
        return {"database_url": None}
    return {"database_url": request.getfixturevalue("postgres_url"), "redis_url": request.getfixturevalue("redis_url")}


@pytest.fixture
def database_url(backend: dict[str, Any]) -> str | None:
    return backend["database_url"]


@pytest.fixture
def start(make_client: MakeClient, backend: dict[str, Any], clock: ManualClock):
    """An app on this backend with a `hopper` dataset of one version, its leases on `clock`; settings
    overrides allowed."""

    def make(**overrides: Any) -> TestClient:
        client = make_client(**({"redis_url": backend.get("redis_url")} | overrides))
        assert client.post("/v1/datasets", json=HOPPER, headers=ADMIN).status_code == 201
        assert append(client, rows(episodes=2, length=5)).status_code == 201
        clock.settle()  # the app's sweeper waits on the clock, so the test's moves of it are what it sees
        return client

    return make


def token(client: TestClient, name: str, *scopes: str) -> dict[str, str]:
    response = client.post("/v1/tokens", json={"name": name, "scopes": list(scopes)}, headers=ADMIN)
    assert response.status_code == 201, response.text
    return {"Authorization": f"Bearer {response.json()['token']}"}


def submit(client: TestClient, **fields: Any) -> dict[str, Any]:
    response = client.post("/v1/jobs", json={**IQL, **fields}, headers=ADMIN)
    assert response.status_code == 201, response.text
    return response.json()


def claim(client: TestClient, headers: dict[str, str] = ADMIN, wait: float = 0) -> dict[str, Any] | None:
    response = client.post("/v1/workers/claim", json={"worker": "test", "wait": wait}, headers=headers)
    assert response.status_code in (200, 204), response.text
    return response.json() if response.status_code == 200 else None


def held(lease: str) -> dict[str, str]:
    return {**ADMIN, LEASE: lease}


def policy_tar(card: dict[str, Any] | None = None, extra: dict[str, bytes] | None = None) -> bytes:
    files = {
        "policy.onnx": b"onnx-bytes",
        "policy.pt2": b"program-bytes",
        "card.json": json.dumps(card or {"algorithm": "iql", "normalisation": {}}).encode(),
        "state.pt": b"state-bytes",
        **(extra or {}),
    }
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def upload_policy(client: TestClient, job_id: str, lease: str, body: bytes | None = None):
    headers = {**held(lease), "Content-Type": "application/x-tar"}
    return client.post(f"/v1/jobs/{job_id}/policy", content=body or policy_tar(), headers=headers)


def test_submit_pins_the_version_and_fills_in_default_params(start) -> None:
    client = start()
    job = submit(client, params={"expectile": 0.8})
    assert (job["status"], job["version"], job["requested_version"]) == ("queued", 1, "latest")
    assert job["params"]["expectile"] == 0.8
    assert job["params"]["temperature"] == 3.0  # the paper's default, recorded on the job
    assert job["attempts"] == 0 and job["progress"] == 0.0
    assert client.get(f"/v1/jobs/{job['id']}", headers=ADMIN).json()["id"] == job["id"]
    listed = client.get("/v1/jobs", headers=ADMIN).json()
    assert listed["count"] == 1 and listed["data"][0]["id"] == job["id"]


def test_a_job_on_latest_keeps_its_version_while_data_arrives(start) -> None:
    client = start()
    job = submit(client, version="latest")
    assert append(client, rows(episodes=1, length=5, first_episode=10)).status_code == 201
    assert client.get(f"/v1/jobs/{job['id']}", headers=ADMIN).json()["version"] == 1
    claimed = claim(client)
    assert claimed is not None and claimed["job"]["version"] == 1
    assert submit(client, version="latest")["version"] == 2


def test_tags_and_numbers_resolve(start) -> None:
    client = start()
    assert append(client, rows(episodes=1, length=5, first_episode=10)).status_code == 201
    assert client.put("/v1/datasets/hopper/tags/base", json={"version": 1}, headers=ADMIN).status_code == 200
    assert submit(client, version="base")["version"] == 1
    assert submit(client, version=2)["version"] == 2


BAD_JOBS = [
    ({"params": {"expectile": 1.5}}, 422, "params.expectile"),
    ({"params": {"no_such_thing": 1}}, 422, "params.no_such_thing"),
    ({"params": {"hidden_sizes": [0]}}, 422, "params.hidden_sizes.0"),
    ({"algorithm": "ppo"}, 422, "algorithm"),
    ({"steps": 0}, 422, "steps"),
    ({"device": "tpu"}, 422, "device"),
    ({"surprise": True}, 422, "surprise"),
    ({"dataset": "nope"}, 404, "dataset"),
    ({"version": 7}, 404, "version"),
    ({"version": "no-such-tag"}, 404, "version"),
    ({"parent_policy": "iql-missing"}, 404, "parent_policy"),
]


def test_bad_jobs_are_refused_naming_the_field_and_nothing_is_queued(start) -> None:
    client = start()
    for fields, status, field in BAD_JOBS:
        response = client.post("/v1/jobs", json={**IQL, **fields}, headers=ADMIN)
        assert response.status_code == status, (fields, response.text)
        assert response.json()["error"]["field"] == field, fields
    assert client.get("/v1/jobs", headers=ADMIN).json()["count"] == 0
    assert claim(client) is None


@BOTH_STORES
def test_a_worker_runs_a_job_through_the_protocol(start) -> None:
    client = start()
    worker = token(client, "worker-1", "worker")
    job = submit(client)
    claimed = claim(client, worker)
    assert claimed is not None and claimed["job"]["id"] == job["id"]
    assert claimed["job"]["status"] == "running" and claimed["job"]["attempts"] == 1
    assert claim(client, worker) is None  # one job, held
    lease = {**worker, LEASE: claimed["lease"]}
    beat = {
        "progress": 0.5,
        "step": 50,
        "metrics": {"critic_loss": 1.5},
        "history": [{"step": 25, "values": {"critic_loss": 2.0}}, {"step": 50, "values": {"critic_loss": 1.5}}],
    }
    reply = client.post(f"/v1/jobs/{job['id']}/heartbeat", json=beat, headers=lease)
    assert reply.status_code == 200 and reply.json()["cancelled"] is False
    shown = client.get(f"/v1/jobs/{job['id']}", headers=ADMIN).json()
    assert (shown["progress"], shown["step"], shown["metrics"]) == (0.5, 50, {"critic_loss": 1.5})
    history = client.get(f"/v1/jobs/{job['id']}/metrics", headers=ADMIN).json()
    assert [(point["step"], point["values"]["critic_loss"]) for point in history] == [(25, 2.0), (50, 1.5)]

    assert client.get(f"/v1/jobs/{job['id']}/checkpoint", headers=worker).status_code == 404
    put = client.put(
        f"/v1/jobs/{job['id']}/checkpoint", content=b"state at 50", headers={**lease, "Replaybank-Step": "50"}
    )
    assert put.status_code == 200, put.text
    got = client.get(f"/v1/jobs/{job['id']}/checkpoint", headers=worker)
    assert (got.content, got.headers["Replaybank-Step"]) == (b"state at 50", "50")

    early = client.post(f"/v1/jobs/{job['id']}/complete", json={}, headers=lease)
    assert early.status_code == 409  # a train job needs its policy first
    uploaded = client.post(
        f"/v1/jobs/{job['id']}/policy", content=policy_tar(), headers={**lease, "Content-Type": "application/x-tar"}
    )
    assert uploaded.status_code == 201, uploaded.text
    policy = uploaded.json()
    assert (policy["job_id"], policy["dataset"], policy["version"], policy["seed"]) == (job["id"], "hopper", 1, 3)
    assert sorted(policy["formats"]) == ["card", "onnx", "state", "torch"]
    assert policy["card"]["job_id"] == job["id"] and policy["card"]["params"]["expectile"] == 0.7

    done = client.post(f"/v1/jobs/{job['id']}/complete", json={"metrics": {"critic_loss": 1.0}}, headers=lease)
    assert done.status_code == 200, done.text
    assert (done.json()["status"], done.json()["progress"], done.json()["policy_id"]) == ("succeeded", 1.0, policy["id"])
    assert client.get(f"/v1/jobs/{job['id']}/checkpoint", headers=worker).status_code == 404  # cleaned up

    onnx = client.get(f"/v1/policies/{policy['id']}/artifact", params={"format": "onnx"}, headers=ADMIN)
    assert onnx.status_code == 200 and onnx.content == b"onnx-bytes"
    card = client.get(f"/v1/policies/{policy['id']}/artifact", params={"format": "card"}, headers=ADMIN).json()
    assert (card["dataset"], card["version"], card["policy_id"]) == ("hopper", 1, policy["id"])
    listed = client.get("/v1/policies", headers=ADMIN).json()
    assert listed["count"] == 1 and listed["data"][0]["id"] == policy["id"]
    assert client.get(f"/v1/policies/{policy['id']}", headers=ADMIN).json()["card"]["algorithm"] == "iql"


def test_calls_without_the_current_lease_are_refused(start) -> None:
    client = start()
    job = submit(client)
    claimed = claim(client)
    assert claimed is not None
    beat = {"progress": 0.1}
    wrong = client.post(f"/v1/jobs/{job['id']}/heartbeat", json=beat, headers=held("not-the-lease"))
    assert wrong.status_code == 409 and wrong.json()["error"]["code"] == "lease_lost"
    missing = client.post(f"/v1/jobs/{job['id']}/heartbeat", json=beat, headers=ADMIN)
    assert missing.status_code == 422 and missing.json()["error"]["field"] == LEASE
    bad = client.post(f"/v1/jobs/{job['id']}/heartbeat", json={"progress": 2}, headers=held(claimed["lease"]))
    assert bad.status_code == 422 and bad.json()["error"]["field"] == "progress"
    assert upload_policy(client, job["id"], "not-the-lease").status_code == 409


def pass_time(clock: ManualClock, seconds: float) -> None:
    """Move the service's clock on, and return once its sweeper has done what that made due."""
    clock.advance(seconds)
    clock.settle()


def test_a_lapsed_lease_goes_to_the_next_worker_and_the_first_is_told(start, clock: ManualClock) -> None:
    client = start()
    job = submit(client)
    first = claim(client)
    assert first is not None
    pass_time(clock, LEASE_SECONDS + 1)
    second = claim(client)
    assert second is not None and second["job"]["id"] == job["id"] and second["job"]["attempts"] == 2
    late = client.post(f"/v1/jobs/{job['id']}/heartbeat", json={"progress": 0.2}, headers=held(first["lease"]))
    assert late.status_code == 409 and late.json()["error"]["code"] == "lease_lost"
    ok = client.post(f"/v1/jobs/{job['id']}/heartbeat", json={"progress": 0.2}, headers=held(second["lease"]))
    assert ok.status_code == 200


def test_after_the_last_attempt_lapses_the_next_claim_fails_the_job_with_the_reason(start, clock: ManualClock) -> None:
    client = start(max_attempts=1)
    job = submit(client)
    # The sweeper looks every half lease from the start; claimed a third of a lease in, the lease lapses
    # between two sweeps, so the next claim is the first to notice.
    pass_time(clock, LEASE_SECONDS / 3)
    assert claim(client) is not None
    pass_time(clock, LEASE_SECONDS * 3 / 4)
    assert client.get(f"/v1/jobs/{job['id']}", headers=ADMIN).json()["status"] == "running"
    pass_time(clock, LEASE_SECONDS / 4 + 1)
    assert claim(client) is None
    failed = client.get(f"/v1/jobs/{job['id']}", headers=ADMIN).json()
    assert failed["status"] == "failed" and "gave up after 1 attempts" in failed["error"]


def test_a_job_whose_worker_falls_silent_shows_queued_again_with_the_reason(start, clock: ManualClock) -> None:
    client = start()
    job = submit(client)
    first = claim(client)
    assert first is not None and first["job"]["status"] == "running"
    pass_time(clock, LEASE_SECONDS / 2)
    assert client.get(f"/v1/jobs/{job['id']}", headers=ADMIN).json()["status"] == "running"

    pass_time(clock, LEASE_SECONDS / 2 + 1)  # no heartbeat for a whole lease, and no other worker claiming

    waiting = client.get(f"/v1/jobs/{job['id']}", headers=ADMIN).json()
    assert waiting["status"] == "queued" and waiting["attempts"] == 1 and waiting["worker"] is None
    assert "attempt 1 of 3: worker test was last heard from at" in waiting["error"]
    late = client.post(f"/v1/jobs/{job['id']}/heartbeat", json={"progress": 0.2}, headers=held(first["lease"]))
    assert late.status_code == 409 and late.json()["error"]["code"] == "lease_lost"
    second = claim(client)
    assert second is not None and second["job"]["attempts"] == 2
    assert second["job"]["status"] == "running" and second["job"]["error"] is None


def test_a_silent_worker_on_the_last_attempt_fails_the_job_without_waiting_for_a_claim(
    start, clock: ManualClock
) -> None:
    client = start(max_attempts=1)
    job = submit(client)
    assert claim(client) is not None

    pass_time(clock, LEASE_SECONDS + 1)

    failed = client.get(f"/v1/jobs/{job['id']}", headers=ADMIN).json()
    assert failed["status"] == "failed" and "gave up after 1 attempts" in failed["error"]
    assert failed["finished_at"] is not None
    assert claim(client) is None  # and it left the queue


def test_a_worker_that_keeps_beating_keeps_its_job(start, clock: ManualClock) -> None:
    client = start()
    job = submit(client)
    claimed = claim(client)
    assert claimed is not None
    for _ in range(9):  # three leases' worth, a beat every third of a lease
        beat = client.post(f"/v1/jobs/{job['id']}/heartbeat", json={"progress": 0.1}, headers=held(claimed["lease"]))
        assert beat.status_code == 200, beat.text
        pass_time(clock, LEASE_SECONDS / 3)
    assert client.get(f"/v1/jobs/{job['id']}", headers=ADMIN).json()["status"] == "running"


def test_after_a_restart_running_jobs_get_a_whole_lease_to_be_heard_from(
    start, make_client, clock: ManualClock
) -> None:
    client = start()
    job = submit(client)
    claimed = claim(client)
    assert claimed is not None
    client.__exit__(None, None, None)
    clock.advance(LEASE_SECONDS * 2)  # the service was down for two leases; the worker was not

    restarted = make_client(redis_url=client.app.state.settings.redis_url)
    clock.settle()
    pass_time(clock, LEASE_SECONDS * 0.9)  # without the grace, this sweep would judge the job silent
    assert restarted.get(f"/v1/jobs/{job['id']}", headers=ADMIN).json()["status"] == "running"
    beat = restarted.post(f"/v1/jobs/{job['id']}/heartbeat", json={"progress": 0.3}, headers=held(claimed["lease"]))
    assert beat.status_code == 200, beat.text

    pass_time(clock, LEASE_SECONDS + 1)  # the grace is one lease, not forever: silent since the beat
    assert restarted.get(f"/v1/jobs/{job['id']}", headers=ADMIN).json()["status"] == "queued"


def test_release_requeues_without_counting_the_attempt(start) -> None:
    client = start()
    job = submit(client)
    first = claim(client)
    assert first is not None
    released = client.post(f"/v1/jobs/{job['id']}/release", headers=held(first["lease"]))
    assert released.status_code == 200 and released.json()["status"] == "queued"
    again = claim(client)
    assert again is not None and again["job"]["attempts"] == 1
    assert client.post(f"/v1/jobs/{job['id']}/release", headers=held(first["lease"])).status_code == 409


def test_cancel_a_queued_job_and_a_running_one(start) -> None:
    client = start()
    queued = submit(client)
    cancelled = client.post(f"/v1/jobs/{queued['id']}/cancel", headers=ADMIN)
    assert cancelled.status_code == 200 and cancelled.json()["status"] == "cancelled"
    assert claim(client) is None
    assert client.post(f"/v1/jobs/{queued['id']}/cancel", headers=ADMIN).status_code == 409

    running = submit(client)
    claimed = claim(client)
    assert claimed is not None
    assert client.post(f"/v1/jobs/{running['id']}/cancel", headers=ADMIN).json()["status"] == "cancelled"
    reply = client.post(f"/v1/jobs/{running['id']}/heartbeat", json={"progress": 0.3}, headers=held(claimed["lease"]))
    assert reply.status_code == 200 and reply.json()["cancelled"] is True
    late = client.post(f"/v1/jobs/{running['id']}/complete", json={}, headers=held(claimed["lease"]))
    assert late.status_code == 409
    assert client.get(f"/v1/jobs/{running['id']}", headers=ADMIN).json()["status"] == "cancelled"


def test_fail_records_the_error(start) -> None:
    client = start()
    job = submit(client)
    claimed = claim(client)
    assert claimed is not None
    failed = client.post(f"/v1/jobs/{job['id']}/fail", json={"error": "out of memory"}, headers=held(claimed["lease"]))
    assert failed.status_code == 200
    assert (failed.json()["status"], failed.json()["error"]) == ("failed", "out of memory")
    assert claim(client) is None


def test_a_job_handed_back_with_a_reason_is_queued_again_and_fails_after_its_last_attempt(start) -> None:
    client = start(max_attempts=2)
    job = submit(client)
    reason = "cannot make environment 'LunarLander-v3': Box2D is not installed"
    first = claim(client)
    assert first is not None

    handed_back = client.post(
        f"/v1/jobs/{job['id']}/fail", json={"error": reason, "retry": True}, headers=held(first["lease"])
    )

    assert handed_back.status_code == 200, handed_back.text
    waiting = handed_back.json()
    assert (waiting["status"], waiting["attempts"], waiting["worker"]) == ("queued", 1, None)
    assert reason in waiting["error"] and "attempt 1 of 2" in waiting["error"]
    assert client.get(f"/v1/jobs/{job['id']}", headers=ADMIN).json()["status"] == "queued"
    stale = client.post(f"/v1/jobs/{job['id']}/heartbeat", json={"progress": 0.1}, headers=held(first["lease"]))
    assert stale.status_code == 409
    second = claim(client)
    assert second is not None and second["job"]["attempts"] == 2

    last = client.post(f"/v1/jobs/{job['id']}/fail", json={"error": reason, "retry": True}, headers=held(second["lease"]))

    failed = last.json()
    assert failed["status"] == "failed" and failed["finished_at"] is not None
    assert failed["error"] == f"gave up after 2 attempts: {reason}"
    assert claim(client) is None


def test_scopes(start) -> None:
    client = start()
    reader = token(client, "reader", "read")
    writer = token(client, "writer", "write")
    worker = token(client, "worker", "worker")
    assert client.post("/v1/jobs", json=IQL, headers=reader).status_code == 403
    assert client.post("/v1/jobs", json=IQL, headers=worker).status_code == 403
    assert client.post("/v1/jobs", json=IQL, headers=writer).status_code == 201
    assert client.post("/v1/workers/claim", json={"wait": 0}, headers=writer).status_code == 403
    assert client.get("/v1/jobs", headers=reader).status_code == 200
    assert client.get("/v1/jobs", headers={}).status_code == 401
    assert claim(client, worker) is not None


def test_a_dataset_in_use_cannot_be_deleted(start) -> None:
    client = start()
    job = submit(client)
    refused = client.delete("/v1/datasets/hopper", headers=ADMIN)
    assert refused.status_code == 409 and job["id"] in refused.json()["error"]["message"]
    assert refused.json()["error"]["field"] == "name"
    assert client.get("/v1/datasets/hopper", headers=ADMIN).json()["latest_version"] == 1, "a refused delete removes nothing"
    client.post(f"/v1/jobs/{job['id']}/cancel", headers=ADMIN)
    assert client.delete("/v1/datasets/hopper", headers=ADMIN).status_code == 204


@BOTH_STORES
def test_a_deleted_dataset_leaves_no_file_and_no_catalog_row(start) -> None:
    client = start()
    assert client.put("/v1/datasets/hopper/tags/base", json={"version": 1}, headers=ADMIN).status_code == 200
    job = submit(client, algorithm="combo")
    claimed = claim(client)
    assert claimed is not None
    dynamics = client.put(
        f"/v1/jobs/{job['id']}/dynamics", params={"key": "combo-0"}, content=b"model", headers=held(claimed["lease"])
    )
    assert dynamics.status_code == 204
    assert client.post(f"/v1/jobs/{job['id']}/fail", json={"error": "stop"}, headers=held(claimed["lease"])).status_code == 200
    services = client.app.state.services
    dataset_id = services.datasets.get("hopper").id
    data_dir = services.settings.data_dir
    store = services.storage.store

    def paths_of_the_dataset() -> list[str]:
        """Files and folders of the dataset on the local disk, and its files in the store (local or S3)."""
        local = {str(path.relative_to(data_dir)) for path in data_dir.rglob("*") if dataset_id in path.parts}
        return sorted(local | {key for key in store.files("") if dataset_id in key.split("/")})

    def catalog_rows_of_the_dataset() -> dict[str, int]:
        with services.catalog.session() as session:
            counts = {
                table.__tablename__: session.scalar(select(func.count()).select_from(table).where(column == dataset_id))
                for table, column in (
                    (DatasetRow, DatasetRow.id),
                    (VersionRow, VersionRow.dataset_id),
                    (FileRow, FileRow.dataset_id),
                    (EpisodeRow, EpisodeRow.dataset_id),
                    (TagRow, TagRow.dataset_id),
                    (DynamicsRow, DynamicsRow.dataset),
                )
            }
        return {name: count for name, count in counts.items() if count}

    before = paths_of_the_dataset()
    assert any(path.startswith(f"datasets/{dataset_id}/_delta_log/") for path in before), before
    assert f"artifacts/dynamics/{dataset_id}/1/combo-0.bin" in before, before
    assert set(catalog_rows_of_the_dataset()) == {
        "datasets", "dataset_versions", "dataset_files", "dataset_episodes", "dataset_tags", "dynamics_models"
    }, catalog_rows_of_the_dataset()

    assert client.delete("/v1/datasets/hopper", headers=ADMIN).status_code == 204
    assert paths_of_the_dataset() == []
    assert catalog_rows_of_the_dataset() == {}
    assert client.get(f"/v1/jobs/{job['id']}/dynamics", params={"key": "combo-0"}, headers=ADMIN).status_code == 404


def _trained_policy(client: TestClient) -> str:
    job = submit(client)
    claimed = claim(client)
    assert claimed is not None
    policy = upload_policy(client, job["id"], claimed["lease"]).json()
    assert client.post(f"/v1/jobs/{job['id']}/complete", json={}, headers=held(claimed["lease"])).status_code == 200
    return policy["id"]


def test_a_worker_token_appends_only_for_the_collect_job_it_holds(start) -> None:
    client = start()
    assert client.post("/v1/datasets", json=GRID, headers=ADMIN).status_code == 201
    policy = _trained_policy(client)
    worker = token(client, "collector", "worker")
    body = arrow_body(rows(episodes=1, length=3, first_episode=100, source=f"policy:{policy}"))

    def append_with(headers: dict[str, str], name: str = "hopper"):
        return client.post(f"/v1/datasets/{name}/transitions", content=body, headers={**worker, **ARROW, **headers})

    assert append_with({}).status_code == 403
    job = submit(client, kind="collect", algorithm=None, steps=None, collect={"policy": policy, "episodes": 1})
    claimed = claim(client, worker)
    assert claimed is not None and claimed["job"]["id"] == job["id"]
    assert append_with({LEASE: "someone-else"}).status_code == 403
    assert append_with({LEASE: claimed["lease"]}, name="grid").status_code == 403
    appended = append_with({LEASE: claimed["lease"]})
    assert appended.status_code == 201, appended.text
    result = {"versions": [appended.json()["version"]], "rows": 3, "episodes": 1, "returns": [1.0]}
    done = client.post(f"/v1/jobs/{job['id']}/complete", json={"result": result}, headers={**worker, LEASE: claimed["lease"]})
    assert done.status_code == 200 and done.json()["result"]["versions"] == [2]
    assert append_with({LEASE: claimed["lease"]}).status_code == 403  # finished: the permit ended with it


def test_collect_and_evaluate_jobs_need_an_environment_and_a_policy(start) -> None:
    client = start()
    policy = _trained_policy(client)
    missing = client.post(
        "/v1/jobs", json={"kind": "collect", "dataset": "hopper", "collect": {"policy": "iql-nope", "steps": 10}}, headers=ADMIN
    )
    assert missing.status_code == 404 and missing.json()["error"]["field"] == "collect.policy"
    both = client.post(
        "/v1/jobs",
        json={"kind": "collect", "dataset": "hopper", "collect": {"policy": policy, "steps": 10, "episodes": 1}},
        headers=ADMIN,
    )
    assert both.status_code == 422
    assert client.post("/v1/datasets", json={**GRID, "name": "no-env"}, headers=ADMIN).status_code == 201
    no_env = client.post(
        "/v1/jobs", json={"kind": "evaluate", "dataset": "no-env", "evaluate": {"policy": policy}}, headers=ADMIN
    )
    assert no_env.status_code == 422 and no_env.json()["error"]["field"] == "evaluate.policy"


def test_an_online_fraction_needs_rows_on_both_sides_of_it(start) -> None:
    client = start()  # version 1: logged rows only
    for fraction in (0.5, 1.0):
        refused = client.post("/v1/jobs", json={**IQL, "online_fraction": fraction}, headers=ADMIN)
        assert refused.status_code == 422 and refused.json()["error"]["field"] == "online_fraction"
        assert "collected by a policy" in refused.json()["error"]["message"] and "logged" in refused.json()["error"]["message"]
    assert submit(client, online_fraction=0.0)["online_fraction"] == 0.0  # logged rows alone: fine

    online = rows(episodes=1, length=5, first_episode=2, source="policy:iql-0123456789ab")
    assert append(client, online).status_code == 201
    job = submit(client, online_fraction=0.5)
    assert job["version"] == 2 and job["online_fraction"] == 0.5
    assert client.get(f"/v1/jobs/{job['id']}", headers=ADMIN).json()["online_fraction"] == 0.5
    out_of_range = client.post("/v1/jobs", json={**IQL, "online_fraction": 1.5}, headers=ADMIN)
    assert out_of_range.status_code == 422 and out_of_range.json()["error"]["field"] == "online_fraction"
    assert submit(client)["online_fraction"] is None


def test_a_train_job_holds_out_episodes_and_refuses_a_split_that_leaves_nothing_on_a_side(start) -> None:
    client = start()  # version 1: episodes 0 and 1
    assert append(client, rows(episodes=8, length=5, first_episode=2)).status_code == 201
    job = submit(client, split={"validation_fraction": 0.3, "seed": 4})
    assert job["split"] == {"validation_fraction": 0.3, "seed": 4}
    assert client.get(f"/v1/jobs/{job['id']}", headers=ADMIN).json()["split"] == job["split"]
    assert submit(client)["split"] is None

    jobs_before = client.get("/v1/jobs", headers=ADMIN).json()["count"]
    # with seed 0 the hash holds out none of the ten episodes at 0.01, and all ten at 0.9
    for fraction, words in ((0.01, "holds out none"), (0.9, "holds out all 10")):
        refused = client.post("/v1/jobs", json={**IQL, "split": {"validation_fraction": fraction, "seed": 0}}, headers=ADMIN)
        assert refused.status_code == 422, refused.text
        assert refused.json()["error"]["field"] == "split" and words in refused.json()["error"]["message"]
    collect = client.post(
        "/v1/jobs",
        json={"kind": "collect", "dataset": "hopper", "collect": {"policy": "p", "episodes": 1}, "split": {"validation_fraction": 0.1}},
        headers=ADMIN,
    )
    assert collect.status_code == 422 and collect.json()["error"]["field"] == "split"
    assert client.get("/v1/jobs", headers=ADMIN).json()["count"] == jobs_before


def test_gradient_steps_belong_to_train_jobs_only(start) -> None:
    client = start()
    policy = _trained_policy(client)
    collect = {"kind": "collect", "dataset": "hopper", "collect": {"policy": policy, "episodes": 1}}
    with_steps = client.post("/v1/jobs", json={**collect, "steps": 500}, headers=ADMIN)
    assert with_steps.status_code == 422 and with_steps.json()["error"]["field"] == "steps"
    assert "collect jobs take no gradient steps" in with_steps.json()["error"]["message"]
    with_fraction = client.post("/v1/jobs", json={**collect, "online_fraction": 0.5}, headers=ADMIN)
    assert with_fraction.status_code == 422 and with_fraction.json()["error"]["field"] == "online_fraction"

    collecting = client.post("/v1/jobs", json=collect, headers=ADMIN).json()
    assert collecting["steps"] is None
    assert client.get(f"/v1/jobs/{collecting['id']}", headers=ADMIN).json()["steps"] is None
    training = client.post("/v1/jobs", json={"kind": "train", "algorithm": "bc", "dataset": "hopper"}, headers=ADMIN)
    assert training.json()["steps"] == 100_000  # the default, recorded on the job


def test_an_evaluate_job_records_returns_on_the_card(start) -> None:
    client = start()
    policy = _trained_policy(client)
    job = submit(client, kind="evaluate", algorithm=None, steps=None, evaluate={"policy": policy, "episodes": 2})
    claimed = claim(client)
    assert claimed is not None
    bad = client.post(f"/v1/jobs/{job['id']}/complete", json={"result": {"returns": []}}, headers=held(claimed["lease"]))
    assert bad.status_code == 422 and bad.json()["error"]["field"].startswith("result.returns")
    result = {"returns": [10.0, 20.0], "lengths": [5, 5]}
    assert client.post(f"/v1/jobs/{job['id']}/complete", json={"result": result}, headers=held(claimed["lease"])).status_code == 200
    evaluations = client.get(f"/v1/policies/{policy}", headers=ADMIN).json()["card"]["evaluations"]
    assert [(entry["mean"], entry["job_id"]) for entry in evaluations] == [(15.0, job["id"])]


@BOTH_STORES
def test_policy_archives_are_checked(start) -> None:
    client = start()
    job = submit(client)
    claimed = claim(client)
    assert claimed is not None
    lease = claimed["lease"]
    stray = upload_policy(client, job["id"], lease, policy_tar(extra={"../evil": b"x"}))
    assert stray.status_code == 422 and "unexpected file" in stray.json()["error"]["message"]
    wrong = upload_policy(client, job["id"], lease, policy_tar(card={"algorithm": "bc"}))
    assert wrong.status_code == 422 and wrong.json()["error"]["field"] == "card.algorithm"
    assert upload_policy(client, job["id"], lease, b"not a tar").status_code == 422
    assert client.get("/v1/policies", headers=ADMIN).json()["count"] == 0
    artifacts = client.app.state.services.artifacts
    assert artifacts.store.files("artifacts/policies") == [] and list(artifacts.tmp.iterdir()) == []


@BOTH_STORES
def test_deleting_a_policy_in_use_is_refused(start) -> None:
    client = start()
    policy = _trained_policy(client)
    job = submit(client, kind="evaluate", algorithm=None, steps=None, evaluate={"policy": policy})
    assert client.delete(f"/v1/policies/{policy}", headers=ADMIN).status_code == 409
    client.post(f"/v1/jobs/{job['id']}/cancel", headers=ADMIN)
    writer = token(client, "writer", "write")
    assert client.delete(f"/v1/policies/{policy}", headers=writer).status_code == 403
    assert client.delete(f"/v1/policies/{policy}", headers=ADMIN).status_code == 204
    assert client.get(f"/v1/policies/{policy}", headers=ADMIN).status_code == 404


def test_events_stream_the_job_until_it_ends(start) -> None:
    client = start()
    job = submit(client)
    client.post(f"/v1/jobs/{job['id']}/cancel", headers=ADMIN)
    with client.stream("GET", f"/v1/jobs/{job['id']}/events", headers=ADMIN) as response:
        assert response.headers["content-type"].startswith("text/event-stream")
        text = "".join(response.iter_text())
    events = [json.loads(line[5:]) for line in text.splitlines() if line.startswith("data:")]
    assert [event["status"] for event in events] == ["cancelled"]
    assert client.get("/v1/jobs/nope/events", headers=ADMIN).status_code == 404


def test_jobs_page_with_a_cursor(start) -> None:
    client = start()
    ids = [submit(client)["id"] for _ in range(3)]
    first = client.get("/v1/jobs", params={"limit": 2}, headers=ADMIN).json()
    assert [job["id"] for job in first["data"]] == ids[::-1][:2] and first["count"] == 3
    second = client.get("/v1/jobs", params={"limit": 2, "cursor": first["next"]}, headers=ADMIN).json()
    assert [job["id"] for job in second["data"]] == ids[:1] and second["next"] is None


def test_gpu_jobs_wait_for_a_gpu_worker(start) -> None:
    client = start()
    job = submit(client, device="cuda")
    cpu = client.post("/v1/workers/claim", json={"device": "cpu", "wait": 0}, headers=ADMIN)
    assert cpu.status_code == 204
    gpu = client.post("/v1/workers/claim", json={"device": "cuda", "wait": 0}, headers=ADMIN)
    assert gpu.status_code == 200 and gpu.json()["job"]["id"] == job["id"]


def test_readiness_names_an_unreachable_redis(make_client: MakeClient) -> None:
    client = make_client(redis_url="redis://127.0.0.1:9/0")
    response = client.get("/readyz")
    assert response.status_code == 503 and response.json()["error"]["field"] == "queue"


@BOTH_STORES
def test_dynamics_models_are_kept_per_dataset_version(start) -> None:
    client = start()
    first = submit(client, algorithm="combo")
    claimed = claim(client)
    assert claimed is not None
    key = {"key": "combo-dynamics-0123456789abcdef"}
    url = f"/v1/jobs/{first['id']}/dynamics"
    assert client.get(url, params=key, headers=ADMIN).status_code == 404
    assert client.put(url, params=key, content=b"model", headers=ADMIN).status_code == 422  # no lease
    assert client.put(url, params=key, content=b"model", headers=held(claimed["lease"])).status_code == 204
    assert client.get(url, params=key, headers=ADMIN).content == b"model"
    bad_key = client.get(url, params={"key": "../../etc"}, headers=ADMIN)
    assert bad_key.status_code == 422 and bad_key.json()["error"]["field"] == "key"

    same_version = submit(client, algorithm="combo")
    assert client.get(f"/v1/jobs/{same_version['id']}/dynamics", params=key, headers=ADMIN).content == b"model"
    assert append(client, rows(episodes=1, length=5, first_episode=10)).status_code == 201
    newer = submit(client, algorithm="combo")
    assert client.get(f"/v1/jobs/{newer['id']}/dynamics", params=key, headers=ADMIN).status_code == 404
