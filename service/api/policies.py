"""The policy registry: list, show (with the card), download the artifact, delete (admin)."""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Query, Response
from fastapi.responses import FileResponse

from schemas.dataset import Name, Page
from schemas.http import JSON, ONNX, OCTET_STREAM
from schemas.policies import POLICY_FILES, PolicyFormat, PolicyPublic
from service.api.deps import AdminDep, PoliciesDep, ReadDep
from service.api.responses import PRESIGNED_REDIRECT, PROTECTED, binary_answer, errors
from service.responses import stored_file

MEDIA_TYPES: dict[PolicyFormat, str] = {"onnx": ONNX, "torch": OCTET_STREAM, "state": OCTET_STREAM, "card": JSON}

router = APIRouter(prefix="/v1/policies", tags=["policies"], responses=PROTECTED)


@router.get("", responses=errors(404))
async def list_policies(
    policies: PoliciesDep,
    _: ReadDep,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    cursor: Annotated[str | None, Query(max_length=64)] = None,
    dataset: Name | None = None,
) -> Page[PolicyPublic]:
    return await policies.list(limit, cursor, dataset)


@router.get("/{policy_id}", responses=errors(404))
async def get_policy(policy_id: str, policies: PoliciesDep, _: ReadDep) -> PolicyPublic:
    return await policies.get(policy_id)


@router.get(
    "/{policy_id}/artifact",
    response_class=FileResponse,
    responses={
        **binary_answer("the artifact in the asked format", *sorted(set(MEDIA_TYPES.values()))),
        **PRESIGNED_REDIRECT,
        **errors(404),
    },
)
async def get_artifact(
    policy_id: str,
    policies: PoliciesDep,
    _: ReadDep,
    format: Literal["onnx", "torch", "state", "card"] = "onnx",
) -> Response:
    """`onnx` and `torch` (the exported program) run without replaybank; `state` is the full training state."""
    stored = await policies.file(policy_id, format)
    return stored_file(
        policies.artifacts.store,
        stored,
        MEDIA_TYPES[format],
        filename=f"{policy_id}-{POLICY_FILES[format]}",
        headers={"Cache-Control": "public, max-age=31536000, immutable"} if format != "card" else None,
        redirect=True,
    )


@router.delete("/{policy_id}", status_code=204, responses=errors(404, 409))
async def delete_policy(policy_id: str, policies: PoliciesDep, _: AdminDep) -> Response:
    await policies.delete(policy_id)
    return Response(status_code=204)
