"""SQL over a pinned version: one read-only SELECT, no file access, row cap, time limit, JSON or Arrow out."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pyarrow as pa
import pytest
from fastapi.testclient import TestClient

from tests.factories import upload_rows as rows
from tests.service.conftest import ADMIN, BOTH_STORES, HOPPER, MakeClient, append


@pytest.fixture
def database_url() -> None:
    return None


@pytest.fixture
def two_versions(hopper: TestClient) -> TestClient:
    append(hopper, rows(episodes=2, length=5, seed=1))
    append(hopper, rows(episodes=1, length=5, first_episode=2, seed=2, source="policy:p"))
    hopper.put("/v1/datasets/hopper/tags/first", json={"version": 1}, headers=ADMIN)
    return hopper


def query(client: TestClient, sql: str, **extra: object) -> dict:
    response = client.post("/v1/datasets/hopper/query", json={"sql": sql, **extra}, headers=ADMIN)
    return {"status": response.status_code, **response.json()}


@BOTH_STORES
def test_a_select_sees_exactly_the_pinned_version(two_versions: TestClient) -> None:
    sql = "SELECT count(*) AS n, count(DISTINCT episode_id) AS episodes FROM transitions"
    assert query(two_versions, sql)["rows"] == [[15, 3]]
    assert query(two_versions, sql, version="first")["rows"] == [[10, 2]]
    latest = query(two_versions, "SELECT source, count(*) FROM transitions GROUP BY 1 ORDER BY 1", version=2)
    assert latest["version"] == 2 and latest["rows"] == [["logged", 10], ["policy:p", 5]]
    vector = query(two_versions, "SELECT observation[1] AS first, len(observation) AS size FROM transitions LIMIT 1")
    assert vector["columns"][1] == {"name": "size", "type": "int64"} and vector["rows"][0][1] == 11


@pytest.fixture
def mixed_rows(hopper: TestClient) -> TestClient:
    """Three versions (three files): two sources, episodes ending in terminal and in truncated, rewards both signs."""
    append(hopper, rows(episodes=3, length=7, seed=1))
    append(hopper, rows(episodes=2, length=6, first_episode=3, seed=2, source="policy:p", end="truncated"))
    append(hopper, rows(episodes=2, length=5, first_episode=5, seed=3, source="logged"))
    return hopper


def pulled(client: TestClient) -> dict[str, np.ndarray]:
    response = client.get("/v1/datasets/hopper/versions/latest/transitions", headers=ADMIN)
    table = pa.ipc.open_stream(response.content).read_all()
    return {name: table.column(name).to_numpy(zero_copy_only=False) for name in table.column_names}


Columns = dict[str, np.ndarray]


@pytest.mark.parametrize(
    ("where", "expected"),
    [
        ("source = 'logged'", lambda c: c["source"] == "logged"),
        ("source <> 'logged'", lambda c: c["source"] != "logged"),
        ("source LIKE 'policy:%'", lambda c: np.char.startswith(c["source"].astype(str), "policy:")),
        ("batch_id = (SELECT max(batch_id) FROM transitions)", lambda c: c["batch_id"] == c["batch_id"].max()),
        ("terminal", lambda c: c["terminal"]),
        ("terminal = true", lambda c: c["terminal"]),
        ("truncated", lambda c: c["truncated"]),
        ("NOT truncated", lambda c: ~c["truncated"]),
        ("episode_id = 3", lambda c: c["episode_id"] == 3),
        ("episode_id IN (0, 4, 6)", lambda c: np.isin(c["episode_id"], [0, 4, 6])),
        ("step >= 4", lambda c: c["step"] >= 4),
        ("reward > 0", lambda c: c["reward"] > 0),
        ("reward > 0 AND source = 'policy:p'", lambda c: (c["reward"] > 0) & (c["source"] == "policy:p")),
    ],
)
@BOTH_STORES
def test_filters_match_the_pulled_rows(mixed_rows: TestClient, where: str, expected: Callable[[Columns], np.ndarray]) -> None:
    columns = pulled(mixed_rows)
    mask = expected(columns)
    assert 0 < mask.sum() < mask.size  # every filter here keeps some rows and drops others
    answer = query(mixed_rows, f"SELECT count(*), sum(step) FROM transitions WHERE {where}")
    assert answer["rows"] == [[int(mask.sum()), int(columns["step"][mask].sum())]]


def test_integer_aggregates_are_json_integers(mixed_rows: TestClient) -> None:
    columns = pulled(mixed_rows)
    sql = (
        "SELECT count_if(reward > 0) AS positive, sum(step) AS steps, sum(episode_id) * 100000000000000000000::HUGEINT AS huge,"
        " sum(step::DECIMAL(10, 2)) AS fractional FROM transitions"
    )
    answer = query(mixed_rows, sql)
    positive, steps, huge, fractional = answer["rows"][0]
    assert [type(value) for value in answer["rows"][0]] == [int, int, int, float]
    assert positive == int((columns["reward"] > 0).sum()) and steps == int(columns["step"].sum())
    assert huge == int(columns["episode_id"].sum()) * 10**20 and fractional == float(columns["step"].sum())
    types = {column["name"]: column["type"] for column in answer["columns"]}
    assert types["positive"] == types["steps"] == "int64" and types["huge"] == "decimal128(38, 0)"


@BOTH_STORES
def test_arrow_out(two_versions: TestClient) -> None:
    response = two_versions.post(
        "/v1/datasets/hopper/query",
        json={"sql": "SELECT episode_id, step, reward FROM transitions ORDER BY episode_id, step"},
        headers={**ADMIN, "Accept": "application/vnd.apache.arrow.stream"},
    )
    table = pa.ipc.open_stream(response.content).read_all()
    assert table.num_rows == 15 and table.column_names == ["episode_id", "step", "reward"]
    assert response.headers["x-replaybank-version"] == "2"


@pytest.mark.parametrize(
    ("sql", "message"),
    [
        ("DELETE FROM transitions", "only SELECT"),
        ("CREATE TABLE t AS SELECT 1", "only SELECT"),
        ("SELECT 1; SELECT 2", "exactly one statement"),
        ("SET threads = 64", "only SELECT"),
        ("ATTACH 'x.db'", "only SELECT"),
        ("COPY transitions TO 'out.csv'", "only SELECT"),
        ("SELECT * FROM read_csv('/etc/passwd')", "disabled"),
        ("SELECT * FROM read_parquet('http://example.com/x.parquet')", ""),
        ("SELECT * FROM 'catalog.sqlite'", ""),
        ("SELECT nonsense FROM transitions", "nonsense"),
        ("SELEC 1", "parse"),
    ],
)
def test_anything_but_a_read_only_select_is_refused(two_versions: TestClient, sql: str, message: str) -> None:
    answer = query(two_versions, sql)
    assert answer["status"] == 422 and answer["error"]["field"] == "sql"
    assert message in answer["error"]["message"]


def test_rows_are_capped_and_flagged_with_the_total(two_versions: TestClient) -> None:
    capped = query(two_versions, "SELECT * FROM range(100)", max_rows=7)
    assert capped["row_count"] == 7 and capped["truncated"] is True and capped["total_rows"] == 100
    whole = query(two_versions, "SELECT * FROM range(5)")
    assert whole["row_count"] == 5 and whole["truncated"] is False and whole["total_rows"] == 5
    arrow = two_versions.post(
        "/v1/datasets/hopper/query",
        json={"sql": "SELECT * FROM transitions", "max_rows": 4},
        headers={**ADMIN, "Accept": "application/vnd.apache.arrow.stream"},
    )
    assert arrow.headers["X-Replaybank-Truncated"] == "true" and arrow.headers["X-Replaybank-Total-Rows"] == "15"


def test_a_total_that_cannot_be_counted_in_time_is_left_unknown(make_client: MakeClient) -> None:
    client = make_client(query_timeout_seconds=0.5)
    client.post("/v1/datasets", json=HOPPER, headers=ADMIN)
    answer = query(client, "SELECT * FROM range(10000000000000)", max_rows=3)
    assert answer["status"] == 200 and answer["row_count"] == 3
    assert answer["truncated"] is True and answer["total_rows"] is None


def test_a_long_query_is_interrupted(make_client: MakeClient) -> None:
    client = make_client(query_timeout_seconds=0.5)
    client.post("/v1/datasets", json=HOPPER, headers=ADMIN)
    answer = query(client, "SELECT count(*) FROM range(10000000000) a, range(10) b")
    assert answer["status"] == 422 and answer["error"]["code"] == "query_timeout"


def test_non_finite_results_become_null_in_json(two_versions: TestClient) -> None:
    answer = query(two_versions, "SELECT 'nan'::DOUBLE AS x, 'inf'::DOUBLE AS y, 1.5 AS z, '\x01'::BLOB AS b")
    assert answer["rows"] == [[None, None, 1.5, "01"]]
