"""Jobs: submit and follow them (users), and the worker protocol (claim, heartbeat, checkpoints, finish).

The worker protocol's calls carry the job's lease; a 409 says the lease went to another worker.
"""

from __future__ import annotations

import io
import tarfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from schemas.dataset import Page
from schemas.http import LEASE_HEADER, OCTET_STREAM, STEP_HEADER, TAR
from schemas.jobs import (
    Claim,
    ClaimRequest,
    Heartbeat,
    HeartbeatReply,
    JobComplete,
    JobCreate,
    JobFail,
    JobPublic,
    MetricPoint,
)
from schemas.policies import POLICY_FILES, PolicyPublic
from schemas.workers import WorkerPublic
from workers.client.http import ClientCore, ReplaybankError, segment, service_headers



def _job(job_id: str) -> str:
    return f"/v1/jobs/{segment(job_id)}"


class Jobs(ClientCore):
    # --- users ------------------------------------------------------------------------------------------

    def submit_job(self, job: JobCreate | dict[str, Any]) -> JobPublic:
        body = job.model_dump(mode="json", exclude_none=True) if isinstance(job, JobCreate) else job
        return self._model(JobPublic, "POST", "/v1/jobs", json=body)

    def get_job(self, job_id: str) -> JobPublic:
        return self._model(JobPublic, "GET", _job(job_id))

    def list_jobs(self, *, status: str | None = None, dataset: str | None = None, limit: int = 100) -> Page[JobPublic]:
        params = {key: value for key, value in (("status", status), ("dataset", dataset)) if value is not None}
        return Page[JobPublic].model_validate(self._json("GET", "/v1/jobs", params={**params, "limit": limit}))

    def cancel_job(self, job_id: str) -> JobPublic:
        return self._model(JobPublic, "POST", f"{_job(job_id)}/cancel")

    def job_metrics(self, job_id: str, after_step: int | None = None) -> list[MetricPoint]:
        params = {"after_step": after_step} if after_step is not None else {}
        return [MetricPoint.model_validate(point) for point in self._json("GET", f"{_job(job_id)}/metrics", params=params)]

    def job_events(self, job_id: str) -> Iterator[JobPublic]:
        """The job each time it changes (server-sent events), ending when it finishes."""
        response = self._request("GET", f"{_job(job_id)}/events", stream=True, timeout=None)
        try:
            event, data = "", []
            for line in response.iter_lines():
                if line.startswith("event:"):
                    event = line[6:].strip()
                elif line.startswith("data:"):
                    data.append(line[5:].strip())
                elif not line and data:
                    if event == "job":
                        yield JobPublic.model_validate_json("\n".join(data))
                    event, data = "", []
        finally:
            response.close()

    # --- workers ----------------------------------------------------------------------------------------

    def list_workers(self) -> list[WorkerPublic]:
        """The workers the service saw recently (claims and heartbeats), by name."""
        return self._paginate(WorkerPublic, "/v1/workers")

    def claim_job(self, worker: str, device: str, wait: float, threads: int | None = None) -> Claim | None:
        request = ClaimRequest(worker=worker, device=device, wait=wait, threads=threads)  # type: ignore[arg-type]
        body = request.model_dump(mode="json", exclude_none=True)
        response = self._request("POST", "/v1/workers/claim", json=body, retry=False, timeout=wait + 30)
        if response.status_code == 204:
            return None
        return Claim.model_validate_json(response.content)

    def heartbeat(self, job_id: str, lease: str, beat: Heartbeat) -> HeartbeatReply:
        return self._model(
            HeartbeatReply,
            "POST",
            f"{_job(job_id)}/heartbeat",
            json=beat.model_dump(mode="json"),
            headers={LEASE_HEADER: lease},
            retry=True,
        )

    def complete_job(self, job_id: str, lease: str, done: JobComplete) -> JobPublic:
        return self._model(
            JobPublic, "POST", f"{_job(job_id)}/complete", json=done.model_dump(mode="json"), headers={LEASE_HEADER: lease}
        )

    def fail_job(self, job_id: str, lease: str, error: str, retry: bool = False) -> JobPublic:
        """The job failed with `error`; with `retry` this worker cannot run it (e.g. its environment is
        missing here): it goes back to the queue, the attempt counted, and fails after the last one."""
        body = JobFail(error=error[-8000:], retry=retry).model_dump(mode="json")
        return self._model(JobPublic, "POST", f"{_job(job_id)}/fail", json=body, headers={LEASE_HEADER: lease})

    def release_job(self, job_id: str, lease: str) -> JobPublic:
        return self._model(JobPublic, "POST", f"{_job(job_id)}/release", headers={LEASE_HEADER: lease})

    def put_checkpoint(self, job_id: str, lease: str, step: int, data: bytes) -> None:
        self._request(
            "PUT",
            f"{_job(job_id)}/checkpoint",
            content=data,
            headers={LEASE_HEADER: lease, STEP_HEADER: str(step), "Content-Type": OCTET_STREAM},
        )

    def get_checkpoint(self, job_id: str) -> tuple[int, bytes] | None:
        """The job's latest checkpoint as (step, bytes), or None when it has none."""
        try:
            response = self._request("GET", f"{_job(job_id)}/checkpoint")
        except ReplaybankError as error:
            if error.status == 404:
                return None
            raise
        return int(service_headers(response)[STEP_HEADER]), response.content

    def get_dynamics(self, job_id: str, key: str) -> bytes | None:
        """A COMBO dynamics model stored for the job's dataset version under `key`, or None."""
        try:
            return self._request("GET", f"{_job(job_id)}/dynamics", params={"key": key}).content
        except ReplaybankError as error:
            if error.status == 404:
                return None
            raise

    def put_dynamics(self, job_id: str, lease: str, key: str, data: bytes) -> None:
        self._request(
            "PUT",
            f"{_job(job_id)}/dynamics",
            params={"key": key},
            content=data,
            headers={LEASE_HEADER: lease, "Content-Type": OCTET_STREAM},
        )

    def upload_policy(self, job_id: str, lease: str, folder: str | Path) -> PolicyPublic:
        """Send the files of an exported policy (and state.pt, when there) as one tar."""
        folder = Path(folder)
        buffer = io.BytesIO()
        with tarfile.open(fileobj=buffer, mode="w") as tar:
            for name in POLICY_FILES.values():
                if (folder / name).is_file():
                    tar.add(folder / name, arcname=name)
        return self._model(
            PolicyPublic,
            "POST",
            f"{_job(job_id)}/policy",
            content=buffer.getvalue(),
            headers={LEASE_HEADER: lease, "Content-Type": TAR},
            retry=True,
        )

    @contextmanager
    def holding(self, lease: str) -> Iterator[None]:
        """Send the lease with every request in the block: a worker appends for its collect job this way."""
        self._http.headers[LEASE_HEADER] = lease
        try:
            yield
        finally:
            del self._http.headers[LEASE_HEADER]
