"""Datasets, their versions and tags, and SQL queries over a version."""

from __future__ import annotations

from typing import Any

import pyarrow as pa

from schemas.dataset import (
    DatasetCreate,
    DatasetPatch,
    DatasetPublic,
    DatasetSpec,
    QueryRequest,
    QueryResult,
    TagMoved,
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

    def edit_dataset(
        self,
        name: str,
        *,
        description: str | None = None,
        metadata: dict[str, Any] | None = None,
        env_id: str | None = None,
        clear_env_id: bool = False,
    ) -> DatasetPublic:
        """Change what may change of a dataset: its description (Markdown), metadata, environment id.

        Only what is given is sent; `clear_env_id` removes the environment id. The spec stays as it is.
        """
        if clear_env_id and env_id is not None:
            raise ValueError("give env_id or clear_env_id, not both")
        given = {"description": description, "metadata": metadata, "env_id": env_id}
        changes: dict[str, Any] = {key: value for key, value in given.items() if value is not None}
        if clear_env_id:
            changes["env_id"] = None
        patch = DatasetPatch.model_validate(changes)
        return self._model(DatasetPublic, "PATCH", dataset_path(name), json=patch.model_dump(mode="json", exclude_unset=True))

    def delete_dataset(self, name: str) -> None:
        self._request("DELETE", dataset_path(name))

    # --- versions and tags ------------------------------------------------------------------------------

    def versions(self, name: str, *, page_size: int = 100) -> list[VersionPublic]:
        return self._paginate(VersionPublic, f"{dataset_path(name)}/versions", limit=page_size)

    def version_stats(self, name: str, version: Version = "latest") -> VersionStats:
        return self._model(VersionStats, "GET", version_path(name, version))

    def tags(self, name: str, *, page_size: int = 100) -> list[TagPublic]:
        return self._paginate(TagPublic, f"{dataset_path(name)}/tags", limit=page_size)

    def tag(self, name: str, tag: str, version: Version) -> TagMoved:
        """Point a tag at a version; the answer says where it pointed before (None: a new tag)."""
        return self._model(TagMoved, "PUT", f"{dataset_path(name)}/tags/{segment(tag)}", json={"version": version})

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
