"""Sweeps: submit a grid of train jobs (their evaluations follow), list, show with the leaderboard, cancel."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query

from schemas.dataset import Name, Page
from schemas.sweeps import SweepCreate, SweepDetail, SweepPublic
from service.api.deps import ReadDep, SweepsDep, WriteDep
from service.api.responses import PROTECTED, errors

SweepId = Annotated[str, "the sweep's id"]

router = APIRouter(prefix="/v1/sweeps", tags=["sweeps"], responses=PROTECTED)


@router.post("", status_code=201, responses=errors(404))
async def submit_sweep(create: SweepCreate, sweeps: SweepsDep, _: WriteDep) -> SweepPublic:
    return await sweeps.submit(create)


@router.get("")
async def list_sweeps(
    sweeps: SweepsDep,
    _: ReadDep,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    cursor: Annotated[str | None, Query(max_length=64)] = None,
    dataset: Name | None = None,
) -> Page[SweepPublic]:
    return await sweeps.list(limit, cursor, dataset)


@router.get("/{sweep_id}", responses=errors(404))
async def get_sweep(sweep_id: SweepId, sweeps: SweepsDep, _: ReadDep) -> SweepDetail:
    return await sweeps.get(sweep_id)


@router.post("/{sweep_id}/cancel", responses=errors(404, 409))
async def cancel_sweep(sweep_id: SweepId, sweeps: SweepsDep, _: WriteDep) -> SweepPublic:
    return await sweeps.cancel(sweep_id)
