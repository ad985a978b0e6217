"""What becomes of a job when its runner raises: the one place that decides, by what was raised.

- cancelled (`JobCancelled`, or the service answering 409 `cancelled`): the job has ended; report nothing.
- lease lost (`LeaseLost`, or 409 `lease_lost`): another worker holds it; drop it and report nothing.
- the worker is stopping (`WorkerStopping`): one last heartbeat, then give the job back (release), so
  another worker resumes it from its last checkpoint at once.
- this worker cannot make the job's environment (`EnvironmentUnavailable`: not registered here, or a
  package it needs is missing): fail it with `retry`, so it goes back to the queue with the reason for
  a worker that can, and the service fails it, naming the reason, after its last attempt.
- the service is away (a transient `ReplaybankError`: unreachable, 502, 503, 504): drop the job and let
  its lease lapse; the queue hands it out again (bounded attempts) and it resumes from its checkpoint.
- anything else: the job failed, not the worker: report it failed with the traceback, take the next one.

How often a job is retried in all is the service's business (the queue counts attempts); how a single
request is retried is the client's (`workers.client.http`).
"""

from __future__ import annotations

import logging
import traceback
from collections.abc import Callable
from typing import Any

from workers.client import ReplaybankError
from workers.rollouts.evaluate import EnvironmentUnavailable
from workers.runtime.session import JobCancelled, JobSession, LeaseLost, WorkerStopping

log = logging.getLogger("replaybank.worker")


def settle_failure(session: JobSession, error: Exception) -> bool:
    """Act on `error`, raised while running `session`'s job; True when the job ended here, False when it
    goes back to the queue (given back, dropped or taken over). Call it from the `except` block."""
    client, job, lease = session.client, session.job, session.lease
    if isinstance(error, JobCancelled):
        log.info("job %s was cancelled", job.id)
        return True
    if isinstance(error, LeaseLost):
        log.warning("job %s: lease lost to another worker; dropping it", job.id)
        return False
    if isinstance(error, WorkerStopping):
        session.beat()
        quietly(lambda: client.release_job(job.id, lease))
        log.info("job %s given back", job.id)
        return False
    if isinstance(error, EnvironmentUnavailable):
        log.warning("job %s: %s; giving it back for another worker", job.id, error)
        quietly(lambda: client.fail_job(job.id, lease, str(error), retry=True))
        return False
    if isinstance(error, ReplaybankError):
        if error.status == 409 and error.code in ("lease_lost", "cancelled"):
            log.warning("job %s: %s", job.id, error.message)
            return error.code == "cancelled"
        if error.transient:
            log.warning("job %s: the service did not answer (%s); dropping the job", job.id, error)
            return False
        report = f"{error}\n{traceback.format_exc()}"
    else:
        log.exception("job %s failed", job.id)
        report = f"{type(error).__name__}: {error}\n{traceback.format_exc()}"
    quietly(lambda: client.fail_job(job.id, lease, report))
    return True


def quietly(call: Callable[[], Any]) -> None:
    """Report to the service if it answers; a report that cannot be made only costs a log line."""
    try:
        call()
    except ReplaybankError as error:
        log.warning("could not report to the service: %s", error)
