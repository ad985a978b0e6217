"""Sweeps: submit a grid of train jobs, follow it, read its leaderboard, cancel it."""

from __future__ import annotations

from typing import Any

from schemas.sweeps import SweepCreate, SweepDetail, SweepPublic
from workers.client.http import ClientCore, segment


def _sweep(sweep_id: str) -> str:
    return f"/v1/sweeps/{segment(sweep_id)}"


class Sweeps(ClientCore):
    def submit_sweep(self, sweep: SweepCreate | dict[str, Any]) -> SweepPublic:
        body = sweep.model_dump(mode="json", exclude_none=True) if isinstance(sweep, SweepCreate) else sweep
        return self._model(SweepPublic, "POST", "/v1/sweeps", json=body)

    def get_sweep(self, sweep_id: str) -> SweepDetail:
        """The sweep with its leaderboard."""
        return self._model(SweepDetail, "GET", _sweep(sweep_id))

    def list_sweeps(self, *, dataset: str | None = None) -> list[SweepPublic]:
        return self._paginate(SweepPublic, "/v1/sweeps", {"dataset": dataset} if dataset else None)

    def cancel_sweep(self, sweep_id: str) -> SweepPublic:
        return self._model(SweepPublic, "POST", f"{_sweep(sweep_id)}/cancel")
