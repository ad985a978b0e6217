"""What operators watch, through the real app on SQLite with the embedded queue and on PostgreSQL with Redis:
`/metrics` after uploads and jobs, the workers list after claims and heartbeats, and the request id in
every answer's header and error envelope."""

from __future__ import annotations

import json
import logging
from datetime import timedelta
from typing import Any

import pytest
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import update

from service.catalog.tables import utcnow
from service.catalog.workers import WorkerRow
from service.observability.logs import JsonFormatter
from service.observability.requests import current_request_id

from tests.factories import upload_rows as rows
from tests.service.conftest import ADMIN, ARROW, MakeClient, append, arrow_body
from tests.service.test_jobs import backend, database_url, held, start, submit, token  # noqa: F401  (fixtures)

Sample = tuple[str, tuple[tuple[str, str], ...]]


def scrape(client: TestClient, headers: dict[str, str] = ADMIN) -> dict[Sample, float]:
    """Every sample of `/metrics`, by name and labels, parsed as Prometheus parses it."""
    response = client.get("/metrics", headers=headers)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/plain; version=0.0.4")
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(response.text)
        for sample in family.samples
    }


def value(samples: dict[Sample, float], name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def claim_as(client: TestClient, worker: str, headers: dict[str, str] = ADMIN, **fields: Any) -> dict[str, Any] | None:
    response = client.post("/v1/workers/claim", json={"worker": worker, "wait": 0, **fields}, headers=headers)
    assert response.status_code in (200, 204), response.text
    return response.json() if response.status_code == 200 else None


def test_metrics_count_requests_uploads_jobs_leases_and_heartbeats(start) -> None:
    client = start()
    before = scrape(client)
    table = rows(episodes=3, length=4, first_episode=20)
    body = arrow_body(table)
    assert client.post("/v1/datasets/hopper/transitions", content=body, headers={**ADMIN, **ARROW, "Idempotency-Key": "k1"}).status_code == 201
    assert client.post("/v1/datasets/hopper/transitions", content=body, headers={**ADMIN, **ARROW, "Idempotency-Key": "k1"}).status_code == 200
    failing, waiting, cancelled = submit(client), submit(client), submit(client)
    assert client.post(f"/v1/jobs/{cancelled['id']}/cancel", headers=ADMIN).status_code == 200
    claimed = claim_as(client, "trainer-1", threads=4)
    assert claimed is not None and claimed["job"]["id"] == failing["id"]
    for step in (10, 20):
        beat = {"progress": step / 100, "step": step, "metrics": {"threads": 2.0}}
        assert client.post(f"/v1/jobs/{failing['id']}/heartbeat", json=beat, headers=held(claimed["lease"])).status_code == 200
    stale = client.post(f"/v1/jobs/{failing['id']}/heartbeat", json={"progress": 0.3}, headers=held("not-the-lease"))
    assert stale.status_code == 409
    for _ in range(2):
        assert client.get(f"/v1/jobs/{waiting['id']}", headers=ADMIN).status_code == 200
    assert client.get("/v1/no/such/route", headers=ADMIN).status_code == 404

    during = scrape(client)

    assert value(during, "replaybank_jobs_queued", kind="train") == 1  # `waiting`
    assert value(during, "replaybank_jobs_running", kind="train") == 1  # `failing`, held by trainer-1
    assert value(during, "replaybank_jobs_queued", kind="collect") == 0
    assert value(during, "replaybank_worker_heartbeats_total", worker="trainer-1") == 2
    assert value(during, "replaybank_workers_seen", device="cpu") == 1
    assert value(during, "replaybank_worker_last_heartbeat_timestamp_seconds", worker="trainer-1") > 0
    assert value(during, "replaybank_catalog_up") == 1
    assert value(during, "replaybank_leases_lost_total") - value(before, "replaybank_leases_lost_total") == 1
    # the replay (same key, same body) adds no rows and no bytes
    assert value(during, "replaybank_uploaded_rows_total", dataset="hopper") - value(before, "replaybank_uploaded_rows_total", dataset="hopper") == table.num_rows
    assert value(during, "replaybank_uploaded_bytes_total", dataset="hopper") - value(before, "replaybank_uploaded_bytes_total", dataset="hopper") == len(body)
    # by route template, not raw path: both lookups of one job land on one series
    assert value(during, "replaybank_http_requests_total", method="GET", route="/v1/jobs/{job_id}", status="200") == 2
    assert value(during, "replaybank_http_requests_total", method="GET", route="unmatched", status="404") == 1
    uploads = {"method": "POST", "route": "/v1/datasets/{name}/transitions"}
    assert value(during, "replaybank_http_requests_total", **uploads, status="201") == 2  # the fixture's and ours
    assert value(during, "replaybank_http_requests_total", **uploads, status="200") == 1  # the replay
    assert value(during, "replaybank_http_request_duration_seconds_count", method="POST", route="/v1/jobs/{job_id}/heartbeat") == 3
    assert value(during, "replaybank_job_duration_seconds_count", kind="train", outcome="cancelled") == 1
    assert value(during, "replaybank_job_duration_seconds_count", kind="train", outcome="failed") == 0

    failed = client.post(f"/v1/jobs/{failing['id']}/fail", json={"error": "out of memory"}, headers=held(claimed["lease"]))
    assert failed.status_code == 200
    after = scrape(client)

    assert value(after, "replaybank_job_duration_seconds_count", kind="train", outcome="failed") == 1
    assert value(after, "replaybank_job_duration_seconds_bucket", kind="train", outcome="failed", le="+Inf") == 1
    assert value(after, "replaybank_jobs_running", kind="train") == 0
    assert value(after, "replaybank_jobs_queued", kind="train") == 1


def test_metrics_need_a_read_token(start) -> None:
    client = start()
    assert client.get("/metrics").status_code == 401
    assert client.get("/metrics", headers={"Authorization": "Bearer wrong-token-value"}).status_code == 401
    reader = token(client, "scraper", "read")
    assert value(scrape(client, reader), "replaybank_catalog_up") == 1


def test_two_apps_in_one_process_keep_their_own_metrics(make_client: MakeClient, tmp_path) -> None:
    first = make_client()
    assert first.get("/v1/datasets", headers=ADMIN).status_code == 200
    second = make_client(data_dir=tmp_path / "other")
    counted = value(scrape(second), "replaybank_http_requests_total", method="GET", route="/v1/datasets", status="200")
    assert counted == 0


def test_the_workers_list_shows_idle_and_busy_workers_seen_recently(start) -> None:
    client = start()
    worker = token(client, "worker-1", "worker")
    assert claim_as(client, "idle-box", worker, device="cpu", threads=8) is None  # a long-poll that found nothing
    job = submit(client)
    claimed = claim_as(client, "trainer", worker, threads=4)
    assert claimed is not None
    beat = {"progress": 0.5, "step": 5, "metrics": {"threads": 2.0, "critic_loss": 1.0}}
    assert client.post(f"/v1/jobs/{job['id']}/heartbeat", json=beat, headers={**worker, "Replaybank-Lease": claimed["lease"]}).status_code == 200
    assert claim_as(client, "long-gone", worker) is None
    catalog = client.app.state.services.catalog
    with catalog.session() as session:
        session.execute(update(WorkerRow).where(WorkerRow.name == "long-gone").values(last_seen=utcnow() - timedelta(hours=1)))

    listed = client.get("/v1/workers", headers=token(client, "reader", "read"))

    assert listed.status_code == 200, listed.text
    page = listed.json()
    assert page["count"] == 2
    shown = {item["name"]: item for item in page["data"]}
    assert sorted(shown) == ["idle-box", "trainer"]
    idle, busy = shown["idle-box"], shown["trainer"]
    assert (idle["device"], idle["threads"], idle["current_job"], idle["last_heartbeat"], idle["heartbeats"]) == ("cpu", 8, None, None, 0)
    assert (busy["device"], busy["current_job"], busy["heartbeats"]) == ("cpu", job["id"], 1)
    assert busy["threads"] == 2  # what the training reported, over the claim's 4
    assert busy["last_heartbeat"] is not None and busy["last_heartbeat"] >= busy["first_seen"]

    finished = client.post(f"/v1/jobs/{job['id']}/fail", json={"error": "stop"}, headers={**worker, "Replaybank-Lease": claimed["lease"]})
    assert finished.status_code == 200
    first_page = client.get("/v1/workers", params={"limit": 1}, headers=ADMIN).json()
    assert [item["name"] for item in first_page["data"]] == ["idle-box"] and first_page["next"] == "idle-box"
    second_page = client.get("/v1/workers", params={"limit": 1, "cursor": first_page["next"]}, headers=ADMIN).json()
    assert [(item["name"], item["current_job"]) for item in second_page["data"]] == [("trainer", None)]
    assert second_page["next"] is None


def test_the_workers_list_needs_a_token_and_a_window_setting_bounds_it(make_client: MakeClient) -> None:
    client = make_client(workers_window_seconds=3600)
    assert client.get("/v1/workers").status_code == 401
    assert claim_as(client, "w") is None
    catalog = client.app.state.services.catalog
    with catalog.session() as session:
        session.execute(update(WorkerRow).values(last_seen=utcnow() - timedelta(minutes=30)))
    assert [item["name"] for item in client.get("/v1/workers", headers=ADMIN).json()["data"]] == ["w"]


REQUEST_ID = "X-Request-ID"


def test_every_answer_carries_a_request_id_and_errors_carry_it_in_the_envelope(make_client: MakeClient) -> None:
    client = make_client(max_upload_bytes=2048)
    ok = client.get("/v1/datasets", headers=ADMIN)
    assert len(ok.headers[REQUEST_ID]) == 32
    assert client.get("/healthz").headers[REQUEST_ID] != ok.headers[REQUEST_ID]
    failures = [
        client.get("/v1/no/such/route", headers=ADMIN),  # the router's 404
        client.get("/v1/datasets", headers={}),  # 401
        client.get("/v1/datasets", params={"limit": 0}, headers=ADMIN),  # validation 422
        client.get("/v1/datasets/nope", headers=ADMIN),  # our 404
        client.post("/v1/datasets/x/transitions", content=b"x" * 4096, headers={**ADMIN, **ARROW}),  # the size limit's 413
        client.delete("/healthz"),  # 405
    ]
    for response in failures:
        assert response.status_code >= 400
        assert response.json()["error"]["request_id"] == response.headers[REQUEST_ID], response.text


def test_a_sane_incoming_request_id_is_kept_and_any_other_replaced(make_client: MakeClient) -> None:
    client = make_client()
    kept = client.get("/v1/datasets/nope", headers={**ADMIN, REQUEST_ID: "trace-42.a:b_c"})
    assert kept.headers[REQUEST_ID] == "trace-42.a:b_c" and kept.json()["error"]["request_id"] == "trace-42.a:b_c"
    for offered in ("x" * 129, "has space", "semi;colon", ""):
        replaced = client.get("/healthz", headers={REQUEST_ID: offered})
        assert replaced.headers[REQUEST_ID] != offered and len(replaced.headers[REQUEST_ID]) == 32


def test_a_bug_answers_500_with_the_request_id(make_client: MakeClient, monkeypatch: pytest.MonkeyPatch) -> None:
    client = make_client()

    async def broken(limit: int, cursor: str | None) -> None:
        raise RuntimeError("a bug")

    monkeypatch.setattr(client.app.state.services.roster, "recent", broken)
    response = client.get("/v1/workers", headers=ADMIN)
    assert response.status_code == 500
    assert response.json()["error"]["request_id"] == response.headers[REQUEST_ID]


def test_one_json_access_line_per_request(make_client: MakeClient, caplog: pytest.LogCaptureFixture) -> None:
    client = make_client()
    with caplog.at_level(logging.INFO, logger="replaybank.access"):
        answered = client.get("/v1/datasets/nope", headers={**ADMIN, REQUEST_ID: "req-1"})
    records = [record for record in caplog.records if record.name == "replaybank.access"]
    assert len(records) == 1
    line = json.loads(JsonFormatter().format(records[0]))
    assert answered.status_code == 404
    assert {key: line[key] for key in ("level", "logger", "request_id", "method", "route", "path", "status")} == {
        "level": "info",
        "logger": "replaybank.access",
        "request_id": "req-1",
        "method": "GET",
        "route": "/v1/datasets/{name}",
        "path": "/v1/datasets/nope",
        "status": 404,
    }
    assert line["duration_ms"] >= 0 and "req-1" in line["message"]


def test_log_lines_written_while_a_request_is_handled_carry_its_id() -> None:
    record = logging.LogRecord("replaybank.ingest", logging.INFO, __file__, 1, "dataset %s: done", ("hopper",), None)
    token = current_request_id.set("req-7")
    try:
        inside = json.loads(JsonFormatter().format(record))
    finally:
        current_request_id.reset(token)
    outside = json.loads(JsonFormatter().format(record))
    assert (inside["request_id"], inside["message"]) == ("req-7", "dataset hopper: done")
    assert "request_id" not in outside
