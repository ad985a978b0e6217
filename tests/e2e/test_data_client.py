"""The Python client against `replaybank serve`: uploads in every content type, idempotent retries,
pulls through the cache (resumed with HTTP Range), streams and queries."""

from __future__ import annotations

import hashlib
import json
import uuid
from collections.abc import Callable, Iterator

import numpy as np
import pyarrow as pa
import pytest

from schemas.dataset import ContinuousActionSpec, DatasetSpec, ObservationSpec
from schemas.transition import CLIENT_COLUMNS, transition_schema
from tests.e2e.conftest import Server, running_server
from workers.client import CONTENT_TYPES, ReplaybankClient, ReplaybankError
from workers.client.pull import pulls as pulls_module
from workers.client.pull.cache import ChecksumMismatch, FileCache
from workers.client.pull.pulls import FETCH_THREADS
from workers.client.uploads import UPLOAD_PIECE
from workers.files import upload_schema

SPEC = DatasetSpec(
    observation=ObservationSpec(shape=[2, 2]),
    action=ContinuousActionSpec(shape=[2], low=[-1.0, -1.0], high=[1.0, 1.0]),
)


def rows(episodes: int, length: int, first_episode: int = 0, seed: int = 0) -> pa.Table:
    rng = np.random.default_rng(seed)
    n = episodes * length
    step = np.tile(np.arange(length), episodes)

    def vectors(size: int) -> pa.FixedSizeListArray:
        return pa.FixedSizeListArray.from_arrays(pa.array(rng.uniform(-1, 1, n * size).astype(np.float32)), size)

    columns = [
        pa.array(first_episode + np.repeat(np.arange(episodes), length), pa.int64()),
        pa.array(step, pa.int32()),
        vectors(4),
        vectors(2),
        pa.array(rng.normal(size=n).astype(np.float32)),
        vectors(4),
        pa.array(step == length - 1),
        pa.array(np.zeros(n, dtype=bool)),
        pa.array(["logged"] * n),
    ]
    return pa.Table.from_arrays(columns, schema=upload_schema(SPEC))


def same_rows(pulled: pa.Table, *uploaded: pa.Table) -> bool:
    expected = pa.concat_tables(uploaded).select(CLIENT_COLUMNS)
    order = [("episode_id", "ascending"), ("step", "ascending")]
    return pulled.select(CLIENT_COLUMNS).sort_by(order).equals(expected.sort_by(order))


@pytest.fixture(scope="module", params=["local", "s3"])
def server(tmp_path_factory, request) -> Iterator[Server]:
    """The service on its local data folder, or on a prefix of its own on the session's SeaweedFS."""
    settings = {}
    if request.param == "s3":
        seaweedfs = request.getfixturevalue("seaweedfs")
        settings = {"REPLAYBANK_STORAGE_URL": f"s3://{seaweedfs.bucket}/{uuid.uuid4().hex}", **seaweedfs.env()}
    with running_server(tmp_path_factory.mktemp("client-e2e"), settings) as running:
        yield running


def rewrite_stored_file(server: Server, request: pytest.FixtureRequest, name: str, change: Callable[[bytes], bytes]) -> None:
    """Change a data file where the service keeps it: in its data folder, or in object storage."""
    storage_url = server.env.get("REPLAYBANK_STORAGE_URL")
    if storage_url is None:
        (stored,) = server.data_dir.rglob(name)
        stored.write_bytes(change(stored.read_bytes()))
        return
    seaweedfs = request.getfixturevalue("seaweedfs")
    prefix = storage_url.removeprefix(f"s3://{seaweedfs.bucket}/")
    (key,) = [key for key in seaweedfs.objects(seaweedfs.bucket, prefix) if key.endswith("/" + name)]
    filesystem = seaweedfs.filesystem()
    with filesystem.open_input_stream(f"{seaweedfs.bucket}/{key}") as source:
        content = source.read()
    with filesystem.open_output_stream(f"{seaweedfs.bucket}/{key}") as target:
        target.write(change(content))


@pytest.fixture
def dataset() -> str:
    return f"grid-{uuid.uuid4().hex[:8]}"


@pytest.fixture(params=["httpx", "bulk-streamed"])
def transfer(request, monkeypatch) -> str:
    """How file bodies come down: the small test files take httpx, unless every file is made "large"
    so it goes through http.client and is decoded while it downloads."""
    if request.param == "bulk-streamed":
        monkeypatch.setattr(pulls_module, "BULK_DOWNLOAD_BYTES", 0)
        monkeypatch.setattr(pulls_module, "STREAMED_DECODE_BYTES", 0)
    return request.param


@pytest.fixture
def client(server, tmp_path, dataset):
    with ReplaybankClient(server.url, server.admin_token, cache=tmp_path / "cache") as client:
        client.create_dataset(dataset, SPEC)
        yield client


def test_upload_in_each_content_type_then_pull_and_stream(client, dataset, transfer) -> None:
    arrow_rows, parquet_rows, json_rows = rows(3, 10), rows(2, 5, first_episode=3, seed=1), rows(1, 4, first_episode=5, seed=2)
    progress: list[tuple[int, int]] = []

    assert client.upload(dataset, arrow_rows, on_progress=lambda done, total: progress.append((done, total)), batch_rows=7).version == 1
    assert client.upload(dataset, parquet_rows, content_type="parquet").version == 2
    assert client.upload(dataset, json_rows, content_type="json").version == 3

    assert progress[-1][0] == progress[-1][1] > 0
    assert [done for done, _ in progress] == sorted(done for done, _ in progress)
    pulled = client.pull(dataset)
    assert pulled.schema.equals(transition_schema(SPEC))  # fixed-size lists again, not Delta's plain lists
    assert same_rows(pulled, arrow_rows, parquet_rows, json_rows)
    assert same_rows(client.pull_stream(dataset), arrow_rows, parquet_rows, json_rows)
    assert same_rows(client.pull(dataset, 1), arrow_rows)
    # Three pages of two at most: the cursors are followed.
    assert sorted(v.version for v in client.versions(dataset, page_size=2)) == [0, 1, 2, 3]


def test_a_retried_upload_with_the_same_key_adds_nothing(client, dataset) -> None:
    table = rows(2, 6)

    first = client.upload(dataset, table, idempotency_key="key-1")
    again = client.upload(dataset, table, idempotency_key="key-1")

    assert (again.version, again.rows, again.replayed) == (first.version, first.rows, True)
    assert client.get_dataset(dataset).latest_version == 1
    with pytest.raises(ReplaybankError) as refused:
        client.upload(dataset, rows(2, 6, seed=3), idempotency_key="key-1")
    assert refused.value.status == 409


def test_incremental_pull_downloads_only_new_files_and_resumes_a_partial_one(client, dataset, tmp_path, transfer) -> None:
    client.upload(dataset, rows(20, 50))
    first = client.pull_files(dataset, 1)
    assert first.transferred_bytes == first.total_bytes > 0

    client.upload(dataset, rows(1, 10, first_episode=20))
    second = client.pull_files(dataset, 2)
    assert second.transferred_bytes == second.total_bytes - first.total_bytes
    assert second.transferred_bytes < second.total_bytes * 0.2

    # A fresh cache holding the first half of the file, as an interrupted download leaves it.
    entry = client.files(dataset, 1).data[0]
    content = first.paths[0].read_bytes()
    assert hashlib.sha256(content).hexdigest() == entry.sha256 and len(content) == entry.size
    client.cache = FileCache(tmp_path / "fresh")
    partial = client.cache.path(entry.sha256).with_name(entry.sha256 + ".partial")
    partial.parent.mkdir(parents=True)
    partial.write_bytes(content[: len(content) // 2])

    resumed = client.pull_files(dataset, 1)

    assert resumed.transferred_bytes == len(content) - len(content) // 2
    assert client.cache.path(entry.sha256).read_bytes() == content


def test_bodies_and_versions_larger_than_one_piece_move_whole(client, dataset, transfer) -> None:
    """Bodies go out in pieces of UPLOAD_PIECE bytes and many files come down at once; nothing is lost."""
    arrow_rows = rows(100, 100, seed=4)
    json_rows = rows(80, 100, first_episode=100, seed=5)
    body = json.dumps({"rows": json_rows.to_pylist()}).encode()
    assert len(body) > 2 * UPLOAD_PIECE
    progress: list[tuple[int, int]] = []

    client.upload(dataset, arrow_rows, batch_rows=3000)
    client.upload_body(dataset, body, content_type=CONTENT_TYPES["json"], on_progress=lambda *p: progress.append(p))
    small = [rows(1, 5, first_episode=episode, seed=episode) for episode in range(180, 180 + 2 * FETCH_THREADS)]
    for table in small:
        client.upload(dataset, table)
    pulled_progress: list[tuple[int, int]] = []
    pulled = client.pull(dataset, on_progress=lambda *p: pulled_progress.append(p))

    assert len(progress) > 2 and progress[-1] == (len(body), len(body))
    assert same_rows(pulled, arrow_rows, json_rows, *small)
    files = client.pull_files(dataset)
    assert len(files.paths) == 2 + 2 * FETCH_THREADS and files.transferred_bytes == 0
    assert pulled_progress[-1] == (files.total_bytes, files.total_bytes)
    assert [done for done, _ in pulled_progress] == sorted(done for done, _ in pulled_progress)


def test_a_file_corrupted_on_the_server_is_refused_and_nothing_is_kept(client, dataset, server, transfer, request) -> None:
    client.upload(dataset, rows(20, 50))
    entry = client.files(dataset, 1).data[0]

    def flip_a_byte(original: bytes) -> bytes:
        content = bytearray(original)
        content[len(content) // 3] ^= 0xFF  # inside the first row group's data: it still decodes
        return bytes(content)

    rewrite_stored_file(server, request, entry.path, flip_a_byte)

    with pytest.raises(ChecksumMismatch):
        client.pull(dataset, 1)

    assert not client.cache.has(entry.sha256)
    assert not list(client.cache.root.rglob("*.partial"))


def test_bulk_download_errors_carry_the_envelope(client, dataset, server, monkeypatch) -> None:
    monkeypatch.setattr(pulls_module, "BULK_DOWNLOAD_BYTES", 0)
    client.upload(dataset, rows(2, 5))
    entry = client.files(dataset, 1).data[0]
    missing = entry.model_copy(update={"path": "part-not-there.parquet"})

    with pytest.raises(ReplaybankError) as refused:
        client._fetch_file(dataset, 1, missing, lambda count: None)
    assert (refused.value.status, refused.value.code, refused.value.field) == (404, "not_found", "file")

    with ReplaybankClient(server.url, "not-a-token", cache=client.cache.root) as stranger:
        with pytest.raises(ReplaybankError) as unauthorised:
            stranger._fetch_file(dataset, 1, entry, lambda count: None)
    assert unauthorised.value.status == 401


def test_query_in_json_and_arrow(client, dataset) -> None:
    client.upload(dataset, rows(4, 5))
    client.tag(dataset, "base", 1)

    client.upload(dataset, rows(1, 5, first_episode=4))
    table = client.query(dataset, "SELECT episode_id, count(*) AS n FROM transitions GROUP BY 1 ORDER BY 1", "base", format="arrow")
    answer = client.query(dataset, "SELECT count(*) AS n FROM transitions", "latest", max_rows=10)

    assert table.column("episode_id").to_pylist() == [0, 1, 2, 3]
    assert table.column("n").to_pylist() == [5, 5, 5, 5]
    assert (answer.version, answer.rows, answer.truncated) == (2, [[25]], False)
    assert [column.name for column in answer.columns] == ["n"]
    with pytest.raises(ReplaybankError) as refused:
        client.query(dataset, "DELETE FROM transitions")
    assert 400 <= refused.value.status < 500


def test_errors_carry_the_envelope(client, dataset) -> None:
    with pytest.raises(ReplaybankError) as missing:
        client.get_dataset("absent-dataset")
    assert (missing.value.status, missing.value.code) == (404, "not_found")

    bad = rows(1, 3).set_column(2, "observation", pa.FixedSizeListArray.from_arrays(pa.array(np.zeros(9, np.float32)), 3))
    with pytest.raises(ReplaybankError) as refused:
        client.upload(dataset, bad)
    assert refused.value.status == 422 and refused.value.field == "observation"


def test_tokens_created_over_http_carry_their_scope_until_revoked(client, server, dataset) -> None:
    created = client.create_token("reader", ["read"])
    assert any(token.name == "reader" and not token.revoked for token in client.list_tokens())

    with ReplaybankClient(server.url, created.token) as reader:
        assert dataset in [d.name for d in reader.list_datasets()]
        with pytest.raises(ReplaybankError) as forbidden:
            reader.upload(dataset, rows(1, 3))
        assert forbidden.value.status == 403

        client.revoke_token(created.id)
        with pytest.raises(ReplaybankError) as revoked:
            reader.list_datasets()
        assert revoked.value.status == 401


def test_datasets_are_listed_across_pages_and_deleted(client, dataset) -> None:
    names = [f"{dataset}-{i}" for i in range(3)]
    for name in names:
        client.create_dataset(name, SPEC, metadata={"note": name})

    listed = [d.name for d in client.list_datasets(page_size=2)]

    assert len(listed) == len(set(listed)) and set(names + [dataset]) <= set(listed)
    assert client.get_dataset(names[1]).metadata == {"note": names[1]}
    client.delete_dataset(names[1])
    assert set(d.name for d in client.list_datasets()) & set(names) == {names[0], names[2]}
