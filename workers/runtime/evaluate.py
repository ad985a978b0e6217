"""The evaluate runner: run a policy for seeded episodes in its dataset's environment; the returns are the result."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

from schemas.jobs import JobComplete
from workers.rollouts.evaluate import evaluate
from workers.runtime.session import JobSession

if TYPE_CHECKING:
    from workers.runtime.loop import Host, WorkerOptions


def run_evaluate(session: JobSession, host: Host, options: WorkerOptions) -> JobComplete:
    client, job = session.client, session.job
    assert job.evaluate is not None
    spec = session.dataset_spec()
    assert spec.env_id is not None
    with tempfile.TemporaryDirectory(prefix="replaybank-evaluate-") as folder:
        client.download_policy(job.evaluate.policy, folder, formats=("onnx",))
        evaluation = evaluate(Path(folder), spec.env_id, episodes=job.evaluate.episodes, seed=job.seed, spec=spec)
    session.report(1.0, job.evaluate.episodes, {"return_mean": evaluation["mean"]})
    return JobComplete(
        metrics={"return_mean": evaluation["mean"], "return_std": evaluation["std"]},
        result={"returns": evaluation["returns"], "lengths": evaluation["lengths"]},
    )
