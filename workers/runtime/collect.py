"""The collect runner: run a policy in the dataset's environment and append what it saw, chunk by chunk.

Each chunk is one idempotent upload sent with the job's lease; after each, the job's checkpoint stores
the collection cursor and what was appended, so a re-claimed job continues where the last one stopped
(see `workers.rollouts.collect` for why the chunks come out the same).
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

from schemas.jobs import JobComplete
from workers.rollouts.collect import CollectCursor, collect
from workers.runtime.session import JobSession

if TYPE_CHECKING:
    from workers.runtime.loop import Host, WorkerOptions


def run_collect(session: JobSession, host: Host, options: WorkerOptions) -> JobComplete:
    client, job = session.client, session.job
    assert job.collect is not None
    spec = session.dataset_spec()
    saved = client.get_checkpoint(job.id)
    progress = json.loads(saved[1]) if saved is not None else {"cursor": {}, "versions": [], "rows": 0, "returns": []}
    cursor = CollectCursor(**progress["cursor"])
    budget = job.collect.episodes or job.collect.steps or 1
    with tempfile.TemporaryDirectory(prefix="replaybank-collect-") as folder:
        client.download_policy(job.collect.policy, folder, formats=("onnx",))
        chunks = collect(
            Path(folder),
            spec,
            job_id=job.id,
            policy_id=job.collect.policy,
            seed=job.seed,
            episodes=job.collect.episodes,
            steps=job.collect.steps,
            exploration=job.collect.exploration,
            chunk_steps=job.collect.chunk_steps,
            start=cursor,
        )
        for chunk in chunks:
            session.raise_if_stopped()
            with client.holding(session.lease):
                appended = client.upload(job.dataset, chunk.table, idempotency_key=chunk.idempotency_key)
            progress = {
                "cursor": vars(chunk.cursor),
                "versions": [*progress["versions"], appended.version],
                "rows": progress["rows"] + appended.rows,
                "returns": [*progress["returns"], *chunk.returns],
            }
            client.put_checkpoint(job.id, session.lease, chunk.cursor.steps, json.dumps(progress).encode())
            done = chunk.cursor.episodes if job.collect.episodes else chunk.cursor.steps
            returns = progress["returns"]
            session.report(done / budget, chunk.cursor.steps, {"return_mean": sum(returns) / len(returns), "rows": progress["rows"]})
    returns = progress["returns"]
    metrics = {"return_mean": sum(returns) / len(returns)} if returns else {}
    result = {
        "versions": progress["versions"],
        "rows": progress["rows"],
        "episodes": progress["cursor"].get("episodes", 0),
        "returns": returns,
    }
    return JobComplete(metrics=metrics | {"rows": float(progress["rows"])}, result=result)
