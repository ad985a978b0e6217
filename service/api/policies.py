"""The policy registry: list, show (with the card), download the artifact, delete (admin)."""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Query, Response
from fastapi.responses import FileResponse

from schemas.dataset import Name, Page
from schemas.policies import PolicyPublic
from service.api.deps import AdminDep, ReadDep
from service.api.jobs import JobsDep
from service.api.responses import PROTECTED, binary_answer, errors

MEDIA_TYPES = {
    "onnx": ("application/onnx", "policy.onnx"),
    "torch": ("application/octet-stream", "policy.pt2"),
    "state": ("application/octet-stream", "state.pt"),
    "card": ("application/json", "card.json"),
}

router = APIRouter(prefix="/v1/policies", tags=["policies"], responses=PROTECTED)


@router.get("", responses=errors(404))
async def list_policies(
    jobs: JobsDep,
    _: ReadDep,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    cursor: Annotated[str | None, Query(max_length=64)] = None,
    dataset: Name | None = None,
) -> Page[PolicyPublic]:
    return await jobs.policies(limit, cursor, dataset)


@router.get("/{policy_id}", responses=errors(404))
async def get_policy(policy_id: str, jobs: JobsDep, _: ReadDep) -> PolicyPublic:
    return await jobs.policy(policy_id)


@router.get(
    "/{policy_id}/artifact",
    response_class=FileResponse,
    responses={
        **binary_answer("the artifact in the asked format", *sorted({media for media, _ in MEDIA_TYPES.values()})),
        **errors(404),
    },
)
async def get_artifact(
    policy_id: str,
    jobs: JobsDep,
    _: ReadDep,
    format: Literal["onnx", "torch", "state", "card"] = "onnx",
) -> FileResponse:
    """`onnx` and `torch` (the exported program) run without replaybank; `state` is the full training state."""
    path = await jobs.policy_file(policy_id, format)
    media_type, filename = MEDIA_TYPES[format]
    return FileResponse(
        path,
        media_type=media_type,
        filename=f"{policy_id}-{filename}",
        headers={"Cache-Control": "public, max-age=31536000, immutable"} if format != "card" else None,
    )


@router.delete("/{policy_id}", status_code=204, responses=errors(404, 409))
async def delete_policy(policy_id: str, jobs: JobsDep, _: AdminDep) -> Response:
    await jobs.delete_policy(policy_id)
    return Response(status_code=204)
