"""Datasets, their versions and tags, and SQL queries over a version."""

from __future__ import annotations

from typing import Any

import pyarrow as pa

from schemas.dataset import (
    DatasetCreate,
    DatasetPublic,
    DatasetSpec,
    QueryRequest,
    QueryResult,
    TagPublic,
    VersionPublic,
    VersionStats,
)
from workers.client.http import CONTENT_TYPES, ClientCore, Version, dataset_path, segment, version_path


class Datasets(ClientCore):
    def create_dataset(self, name: str, spec: DatasetSpec, *, metadata: dict[str, Any] | None = None) -> DatasetPublic:
        body = DatasetCreate(
            name=name, observation=spec.observation, action=spec.action, env_id=spec.env_id, metadata=metadata or {}
        )
        return self._model(DatasetPublic, "POST", "/v1/datasets", json=body.model_dump(mode="json"))

    def list_datasets(self, *, page_size: int = 100) -> list[DatasetPublic]:
        return self._paginate(DatasetPublic, "/v1/datasets", limit=page_size)

    def get_dataset(self, name: str) -> DatasetPublic:
        return self._model(DatasetPublic, "GET", dataset_path(name))

    def delete_dataset(self, name: str) -> None:
        self._request("DELETE", dataset_path(name))

    # --- versions and tags ------------------------------------------------------------------------------

    def versions(self, name: str, *, page_size: int = 100) -> list[VersionPublic]:
        return self._paginate(VersionPublic, f"{dataset_path(name)}/versions", limit=page_size)

    def version_stats(self, name: str, version: Version = "latest") -> VersionStats:
        return self._model(VersionStats, "GET", version_path(name, version))

    def tag(self, name: str, tag: str, version: Version) -> TagPublic:
        return self._model(TagPublic, "PUT", f"{dataset_path(name)}/tags/{segment(tag)}", json={"version": version})

    def delete_tag(self, name: str, tag: str) -> None:
        self._request("DELETE", f"{dataset_path(name)}/tags/{segment(tag)}")

    # --- queries ----------------------------------------------------------------------------------------

    def query(
        self, name: str, sql: str, version: Version = "latest", *, format: str = "json", max_rows: int | None = None
    ) -> QueryResult | pa.Table:
        """Run one read-only SELECT over the view `transitions` of a version.

        `format="json"` returns a `QueryResult` (columns, rows, truncated); `"arrow"` a `pa.Table`.
        """
        if format not in ("json", "arrow"):
            raise ValueError("format must be 'json' or 'arrow'")
        body = QueryRequest(sql=sql, version=version, max_rows=max_rows).model_dump(mode="json", exclude_none=True)
        response = self._request("POST", f"{dataset_path(name)}/query", json=body, headers={"Accept": CONTENT_TYPES[format]})
        if format == "arrow":
            return pa.ipc.open_stream(pa.py_buffer(response.content)).read_all()
        return QueryResult.model_validate_json(response.content)

    def next_episode_id(self, name: str, version: Version = "latest") -> int:
        """One more than the largest episode id in a version (0 when it is empty)."""
        table = self.query(name, "SELECT coalesce(max(episode_id) + 1, 0) AS next FROM transitions", version, format="arrow")
        return int(table.column("next")[0].as_py())
