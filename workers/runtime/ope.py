"""The offline evaluate runner: an "fqe" or "model" evaluate job, estimated from the pinned version's logged
episodes (or a split's held-out ones) with no environment; the estimate and its interval are the result.

The model-based estimate rolls out in the dynamics model COMBO stored for the version when one with COMBO's
default dynamics parameters is there (and no split is asked for: that model saw every episode, held-out
ones included); otherwise it fits one to the evaluation data.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

from schemas.algorithms import COMBOParams
from schemas.jobs import EvaluateOptions, JobComplete, OPEEvaluateResult
from workers.algos.combo import dynamics_key
from workers.algos.data import arrays_from_arrow
from workers.ope.estimate import DEFAULT_FQE_STEPS, evaluate_offline
from workers.runtime.session import JobSession

if TYPE_CHECKING:
    from workers.runtime.loop import Host, WorkerOptions


def run_offline_evaluate(session: JobSession, host: Host, options: WorkerOptions) -> JobComplete:
    client, job = session.client, session.job
    chosen = job.evaluate
    assert chosen is not None and chosen.method != "env"
    run_device = "cpu" if job.device == "cpu" else host.device
    spec = session.dataset_spec()
    data = arrays_from_arrow(client.pull(job.dataset, job.version))
    session.raise_if_stopped()
    stored_dynamics = _stored_dynamics(session, chosen)
    # FQE reports gradient steps, rollouts the model step; the horizon is unknown until the data is read
    expected = chosen.steps or (DEFAULT_FQE_STEPS if chosen.method == "fqe" else None)

    def on_progress(step: int, metrics: dict[str, float]) -> None:
        session.raise_if_stopped()  # an estimate has no checkpoint: stopping starts it afresh elsewhere
        session.report(step / expected if expected else 0.0, step, metrics)

    with tempfile.TemporaryDirectory(prefix="replaybank-ope-") as folder:
        client.download_policy(chosen.policy, folder, formats=("onnx", "card"))
        estimated = evaluate_offline(
            Path(folder),
            data,
            spec,
            chosen.method,
            chosen.steps,
            job.seed,
            chosen.discount,
            chosen.split,
            run_device,
            dynamics=stored_dynamics,
            on_progress=on_progress,
        )
    metrics = {"estimate": estimated.estimate, "low": estimated.low, "high": estimated.high}
    session.report(1.0, estimated.steps, metrics)
    details = {name: value for name, value in estimated.details.items() if isinstance(value, (bool, int, float, str))}
    result = OPEEvaluateResult(
        method=chosen.method,
        estimate=estimated.estimate,
        low=estimated.low,
        high=estimated.high,
        confidence=estimated.confidence,
        discount=estimated.discount,
        episodes=estimated.episodes,
        rows=estimated.rows,
        split=chosen.split,
        steps=estimated.steps,
        details=details,
    )
    return JobComplete(metrics=metrics, result=result.model_dump(mode="json"))


def _stored_dynamics(session: JobSession, chosen: EvaluateOptions) -> bytes | None:
    if chosen.method != "model" or chosen.split is not None:
        return None
    return session.client.get_dynamics(session.job.id, dynamics_key(COMBOParams()))
