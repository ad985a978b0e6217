"""JSON uploads are parsed as they stream in (one row per line for Arrow's reader), or whole when laid out otherwise."""

from __future__ import annotations

import io
import json

import pyarrow as pa
import pytest

from schemas.dataset import DatasetSpec
from service import uploads
from tests.service.conftest import rows

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


def streamed(body: bytes, step: int = 977) -> pa.Table:
    return pa.concat_tables(list(uploads.json_parts(uploads.JsonRowLines(Trickle(body, step)), SPEC)))


@pytest.mark.parametrize("separators", [(", ", ": "), (",", ":")], ids=["spaced", "compact"])
def test_encoder_layouts_stream_row_by_row_and_match_the_whole_body_parse(separators: tuple[str, str]) -> None:
    table = rows(episodes=3, length=40, source="policy:x")
    body = json.dumps({"rows": table.to_pylist()}, separators=separators).encode()
    fast = streamed(body)
    assert fast.num_rows == 120
    assert fast.equals(uploads.parse(body, uploads.JSON, SPEC))


@pytest.mark.parametrize(
    "body",
    [
        json.dumps({"rows": rows(episodes=1, length=3).to_pylist()}, separators=(" , ", ": ")).encode(),
        json.dumps({"rows": [{**row, "source": 'odd}, {"source": "x'} for row in rows(episodes=1, length=3).to_pylist()]}).encode(),
        b'{"rows": []}',
        b'{"rows": [{"episode_id": 1}], "more": 1}',
    ],
    ids=["space before a comma", "separator inside a string", "empty", "trailing key"],
)
def test_other_layouts_are_left_to_the_whole_body_path(body: bytes) -> None:
    lines = uploads.JsonRowLines(Trickle(body, 50))
    with pytest.raises(uploads.NotRowLines):
        list(uploads.json_parts(lines, SPEC))
    assert lines.whole_body() == body


@pytest.mark.parametrize("length", [1, 40])
def test_indented_bodies_give_the_same_rows_streamed_or_whole(length: int) -> None:
    # A pretty-printed row spans lines; the streaming reader takes it whole or refuses it, never mangles it.
    body = json.dumps({"rows": rows(episodes=3, length=length).to_pylist()}, indent=2).encode()
    lines = uploads.JsonRowLines(Trickle(body, 977))
    try:
        parsed = pa.concat_tables(list(uploads.json_parts(lines, SPEC)))
    except uploads.NotRowLines:
        parsed = uploads.parse(lines.whole_body(), uploads.JSON, SPEC)
    assert parsed.num_rows == 3 * length and parsed.equals(uploads.parse(body, uploads.JSON, SPEC))


def test_a_string_with_a_separator_still_uploads_exactly(client) -> None:
    from tests.service.conftest import ADMIN, HOPPER

    client.post("/v1/datasets", json=HOPPER, headers=ADMIN)
    odd = [{**row, "source": 'odd}, {"source": "x'} for row in rows(episodes=1, length=3).to_pylist()]
    response = client.post("/v1/datasets/hopper/transitions", json={"rows": odd}, headers=ADMIN)
    assert response.status_code == 201, response.text
    assert client.get("/v1/datasets/hopper/versions/1", headers=ADMIN).json()["sources"] == {'odd}, {"source": "x': 3}
