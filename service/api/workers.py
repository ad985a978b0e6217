"""The worker protocol: claim (long-poll), heartbeat, checkpoint, policy, complete, fail, release.

Every call about a held job carries the lease token from the claim in the `Replaybank-Lease` header.
With object storage, checkpoint and dynamics downloads answer 307 to a presigned URL (as version files
do); their uploads still come through here, so workers never hold storage credentials.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Annotated

from fastapi import APIRouter, Header, Query, Request, Response
from fastapi.responses import FileResponse

from schemas.http import LEASE_HEADER, OCTET_STREAM, STEP_HEADER, TAR
from schemas.jobs import Claim, ClaimRequest, Heartbeat, HeartbeatReply, JobComplete, JobFail, JobPublic
from schemas.policies import PolicyPublic
from service.api.deps import PoliciesDep, ProtocolDep, WorkerDep
from service.api.responses import PRESIGNED_REDIRECT, PROTECTED, binary_answer, errors, presigned_redirect, raw_body
from service.errors import ApiError
from service.responses import stored_file

DISCONNECT_POLL_SECONDS = 0.5

LeaseHeader = Annotated[str, Header(alias=LEASE_HEADER, min_length=1, max_length=200)]

router = APIRouter(prefix="/v1", tags=["workers"], responses=PROTECTED)
HELD_JOB = errors(404, 409)
"""A call about a held job: it may not exist, or its lease may have lapsed and passed to another worker."""
BYTES = raw_body(OCTET_STREAM)


@router.post(
    "/workers/claim", response_model=Claim, responses={204: {"description": "no job within `wait` seconds"}}
)
async def claim_job(
    request: ClaimRequest, http: Request, protocol: ProtocolDep, _: WorkerDep
) -> Claim | Response:
    """Wait up to `wait` seconds for a job. A worker that hangs up while waiting is not handed one:
    the wait stops, and a job claimed as it left goes straight back to the queue."""
    claiming = asyncio.create_task(protocol.claim(request))
    while not claiming.done():
        await asyncio.wait({claiming}, timeout=DISCONNECT_POLL_SECONDS)
        if not claiming.done() and await http.is_disconnected():
            claiming.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await claiming
            return Response(status_code=204)
    claimed = claiming.result()
    if claimed is None:
        return Response(status_code=204)
    if await http.is_disconnected():
        await protocol.release(claimed.job.id, claimed.lease)
        return Response(status_code=204)
    return claimed


@router.post("/jobs/{job_id}/heartbeat", responses=HELD_JOB)
async def heartbeat(
    job_id: str, beat: Heartbeat, lease: LeaseHeader, protocol: ProtocolDep, _: WorkerDep
) -> HeartbeatReply:
    return await protocol.heartbeat(job_id, lease, beat)


@router.post("/jobs/{job_id}/complete", responses=HELD_JOB)
async def complete(job_id: str, done: JobComplete, lease: LeaseHeader, protocol: ProtocolDep, _: WorkerDep) -> JobPublic:
    return await protocol.complete(job_id, lease, done)


@router.post("/jobs/{job_id}/fail", responses=HELD_JOB)
async def fail(job_id: str, failure: JobFail, lease: LeaseHeader, protocol: ProtocolDep, _: WorkerDep) -> JobPublic:
    """The job failed with `error`; with `retry: true` it goes back to the queue for another worker, this
    attempt counted, and fails with `error` after the last attempt."""
    return await protocol.fail(job_id, lease, failure)


@router.post("/jobs/{job_id}/release", responses=HELD_JOB)
async def release(job_id: str, lease: LeaseHeader, protocol: ProtocolDep, _: WorkerDep) -> JobPublic:
    """Give the job back to the queue now (a worker shutting down); this attempt does not count."""
    return await protocol.release(job_id, lease)


@router.put("/jobs/{job_id}/checkpoint", responses=HELD_JOB, openapi_extra=BYTES)
async def put_checkpoint(
    job_id: str,
    request: Request,
    lease: LeaseHeader,
    step: Annotated[int, Header(alias=STEP_HEADER, ge=0)],
    protocol: ProtocolDep,
    _: WorkerDep,
) -> JobPublic:
    return await protocol.store_checkpoint(job_id, lease, request.stream(), request.headers.get("content-length"), step)


@router.get(
    "/jobs/{job_id}/checkpoint",
    response_class=FileResponse,
    responses={
        **binary_answer("the job's last checkpoint", OCTET_STREAM, headers={STEP_HEADER: "the step it was taken at"}),
        **presigned_redirect({STEP_HEADER: "the step it was taken at (the object store does not repeat it)"}),
        **errors(404),
    },
)
async def get_checkpoint(job_id: str, protocol: ProtocolDep, _: WorkerDep) -> Response:
    stored, step = await protocol.checkpoint(job_id)
    return stored_file(protocol.artifacts.store, stored, OCTET_STREAM, headers={STEP_HEADER: str(step)}, redirect=True)


@router.post(
    "/jobs/{job_id}/policy",
    status_code=201,
    responses={**HELD_JOB, **errors(415)},
    openapi_extra=raw_body(TAR, OCTET_STREAM),
)
async def upload_policy(
    job_id: str, request: Request, lease: LeaseHeader, policies: PoliciesDep, _: WorkerDep
) -> PolicyPublic:
    """Body: a tar of policy.onnx, policy.pt2, card.json and (for fine-tuning) state.pt."""
    content_type = request.headers.get("content-type", "").split(";")[0].strip()
    if content_type not in {TAR, OCTET_STREAM}:
        raise ApiError(415, "unsupported_media_type", f"send the policy as {TAR}", "Content-Type")
    return await policies.store(job_id, lease, request.stream(), request.headers.get("content-length"))


DynamicsKey = Annotated[
    str, Query(pattern=r"^[a-z0-9][a-z0-9-]{0,63}$", description="names the dynamics configuration it was trained with")
]


@router.put("/jobs/{job_id}/dynamics", status_code=204, responses=HELD_JOB, openapi_extra=BYTES)
async def put_dynamics(
    job_id: str, key: DynamicsKey, request: Request, lease: LeaseHeader, protocol: ProtocolDep, _: WorkerDep
) -> Response:
    """Keep a COMBO dynamics model for the job's dataset version, for later jobs on the same version."""
    await protocol.store_dynamics(job_id, lease, key, request.stream(), request.headers.get("content-length"))
    return Response(status_code=204)


@router.get(
    "/jobs/{job_id}/dynamics",
    response_class=FileResponse,
    responses={**binary_answer("the dynamics model kept under `key`", OCTET_STREAM), **PRESIGNED_REDIRECT, **errors(404)},
)
async def get_dynamics(job_id: str, key: DynamicsKey, protocol: ProtocolDep, _: WorkerDep) -> Response:
    return stored_file(protocol.artifacts.store, await protocol.dynamics(job_id, key), OCTET_STREAM, redirect=True)

