"""JSON uploads are parsed as they stream in, a few megabytes of whole rows at a time, or whole when that fails."""

from __future__ import annotations

import io
import json

import pyarrow as pa
import pytest

from schemas.dataset import DatasetSpec
from schemas.http import JSON
from service import uploads
from tests.factories import upload_rows as rows

SPEC = DatasetSpec.model_validate(
    {"observation": {"shape": [11]}, "action": {"kind": "continuous", "shape": [3], "low": [-1, -1, -1], "high": [1, 1, 1]}}
)


class Trickle(io.RawIOBase):
    """A blocking file that hands out at most `step` bytes per read, like a body arriving in pieces."""

    def __init__(self, data: bytes, step: int) -> None:
        self.data, self.step, self.at = data, step, 0

    def read(self, size: int = -1) -> bytes:
        size = self.step if size < 0 else min(size, self.step)
        piece = self.data[self.at : self.at + size]
        self.at += len(piece)
        return piece


@pytest.fixture
def small_documents(monkeypatch: pytest.MonkeyPatch) -> None:
    """Documents of a few rows each, so a small body is cut many times."""
    monkeypatch.setattr(uploads, "JSON_DOCUMENT_BYTES", 1500)


def streamed_parts(body: bytes, step: int = 977) -> list[pa.Table]:
    return list(uploads.json_parts(uploads.JsonRowLines(Trickle(body, step)), SPEC))


@pytest.mark.parametrize(
    ("layout", "cut"),
    [({"separators": (", ", ": ")}, True), ({"separators": (",", ":")}, True), ({"indent": 2}, True), ({"separators": (" , ", " : ")}, False)],
    ids=["spaced", "compact", "indented", "space before a comma"],
)
def test_encoder_layouts_stream_and_match_the_whole_body_parse(small_documents: None, layout: dict, cut: bool) -> None:
    # Rows are cut only after a `},`; a layout without one still streams, as a single document.
    table = rows(episodes=3, length=40, source="policy:x")
    body = json.dumps({"rows": table.to_pylist()}, **layout).encode()
    parts = streamed_parts(body)
    assert (len(parts) > 10) if cut else (len(parts) == 1)
    streamed = pa.concat_tables(parts)
    assert streamed.num_rows == 120
    assert streamed.equals(uploads.parse(body, JSON, SPEC))


def test_an_empty_rows_list_streams_as_no_rows() -> None:
    assert sum(part.num_rows for part in streamed_parts(b'{"rows": []}')) == 0


def test_a_cut_inside_a_string_never_changes_rows(small_documents: None) -> None:
    # Every row's source holds the row separator `},`. Reads of every size between 40 and 120 bytes move
    # where the documents are cut; a cut inside a string must fail (the whole body is then parsed), never
    # give other rows.
    odd = 'odd}, {"source": "x'
    body = json.dumps({"rows": [{**row, "source": odd} for row in rows(episodes=1, length=20).to_pylist()]}).encode()
    expected = uploads.parse(body, JSON, SPEC)
    assert expected.column("source").to_pylist() == [odd] * 20
    for step in range(40, 120):
        lines = uploads.JsonRowLines(Trickle(body, step))
        try:
            streamed = pa.concat_tables(list(uploads.json_parts(lines, SPEC)))
        except uploads.NotRowLines:
            assert lines.whole_body() == body
        else:
            assert streamed.equals(expected)


def test_a_document_cut_inside_a_string_is_refused(small_documents: None) -> None:
    # One row: its only `},` lies inside its source, so the first cut is there.
    row = {**rows(episodes=1, length=1).to_pylist()[0], "source": "a}," + "x" * 8000}
    body = json.dumps({"rows": [row]}).encode()
    lines = uploads.JsonRowLines(Trickle(body, 100))
    with pytest.raises(uploads.NotRowLines):
        list(uploads.json_parts(lines, SPEC))
    assert uploads.parse(lines.whole_body(), JSON, SPEC).column("source").to_pylist() == [row["source"]]


@pytest.mark.parametrize(
    "body",
    [
        b'{"rows": [{"episode_id": 1}], "more": 1}',
        b'{"more": 1, "rows": [{"episode_id": 1}]}',
        json.dumps({"rows": rows(episodes=1, length=2).to_pylist()}).encode() * 2,
        b'[{"rows": []}]',
    ],
    ids=["trailing key", "leading key", "two documents", "not an object"],
)
def test_bodies_other_than_one_rows_object_are_left_to_the_whole_body_path(body: bytes) -> None:
    lines = uploads.JsonRowLines(Trickle(body, 50))
    with pytest.raises(uploads.NotRowLines):
        list(uploads.json_parts(lines, SPEC))
    assert lines.whole_body() == body


def test_a_string_with_a_separator_still_uploads_exactly(client) -> None:
    from tests.service.conftest import ADMIN, HOPPER

    client.post("/v1/datasets", json=HOPPER, headers=ADMIN)
    odd = [{**row, "source": 'odd}, {"source": "x'} for row in rows(episodes=1, length=3).to_pylist()]
    response = client.post("/v1/datasets/hopper/transitions", json={"rows": odd}, headers=ADMIN)
    assert response.status_code == 201, response.text
    assert client.get("/v1/datasets/hopper/versions/1", headers=ADMIN).json()["sources"] == {'odd}, {"source": "x': 3}
