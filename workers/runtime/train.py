"""The train runner: pull the job's version, train (resuming from the job's checkpoint), export, upload.

Training checkpoints to the service every `checkpoint_seconds` (and when the worker stops), so a job
re-claimed after a crash resumes from its last checkpoint. A job with a parent policy fine-tunes it
(`start_from_parent`); COMBO reuses the dynamics model stored for the dataset version. Training
takes its thread count from a `ThreadTuner` within the worker's share of the cores (or `--threads`).
A job with a split trains on its training episodes alone (normalisation included) and reports validation
metrics on the held-out ones; its card and result say how many it held out.
A policy whose evaluation cannot run is still kept, its card saying why it was not evaluated.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from schemas.dataset import DatasetSpec
from schemas.jobs import JobComplete, JobPublic
from schemas.policies import POLICY_FILES
from schemas.splits import held_out
from workers.algos.base import OfflineAlgorithm
from workers.algos.data import Normalisation, split_summary
from workers.algos.export import export_policy
from workers.algos.streaming import close_replay
from workers.algos.training import make_algorithm, restore, train
from workers.rollouts.evaluate import evaluate
from workers.runtime.job_rows import pull_job_rows
from workers.runtime.session import JobSession
from workers.runtime.threads import ThreadTuner

if TYPE_CHECKING:
    from workers.runtime.loop import Host, WorkerOptions

log = logging.getLogger("replaybank.worker")


def run_train(session: JobSession, host: Host, options: WorkerOptions) -> JobComplete:
    client, job = session.client, session.job
    assert job.algorithm is not None and job.steps is not None
    run_device = "cpu" if job.device == "cpu" else host.device
    # what runs before the tuner takes over (the COMBO dynamics model, a resumed replay) gets the whole share
    torch.set_num_threads(options.threads or host.cores.threads())
    spec = session.dataset_spec()
    rows = pull_job_rows(client, job, spec, options.memory_budget)
    held: np.ndarray | None = None
    split: dict[str, Any] | None = None
    if job.split is not None:
        episode_ids = rows.episode_ids()
        held = held_out(episode_ids, job.split)
        split = split_summary(job.split, episode_ids[held])
    training_rows = None if held is None else ~held
    session.raise_if_stopped()

    parent_state: dict[str, Any] | None = None
    if job.parent_policy is not None:
        parent = client.get_policy(job.parent_policy)
        # the parent's networks expect the parent's inputs: keep its normalisation
        normalisation = _normalisation_of_card(parent.card)
        # weights_only: what comes over the network is loaded as tensors and numbers, never as code
        parent_state = torch.load(io.BytesIO(client.policy_artifact(parent.id, "state")), map_location=run_device, weights_only=True)
    else:
        normalisation = rows.normalisation(training_rows)
    algorithm = make_algorithm(job.algorithm, job.params, spec, normalisation, run_device, job.seed, total_steps=job.steps)
    replay = rows.replay(normalisation, spec.action, algorithm.device, job.seed, job.online_fraction, rows=training_rows)
    validation = None if held is None else rows.validation(held, normalisation, spec.action, algorithm.device, job.seed)

    saved = client.get_checkpoint(job.id)
    prepared: dict[str, str] = {}
    if saved is not None:
        resumed_step, payload = saved
        restore(algorithm, replay, torch.load(io.BytesIO(payload), map_location=run_device, weights_only=True))
        log.info("job %s resumes from step %d", job.id, resumed_step)
    else:
        resumed_step = 0
        if parent_state is not None:
            start_from_parent(algorithm, parent_state)
        prepared = rows.prepare(algorithm, StoredParts(session), training_rows)
    start = time.monotonic()
    last_checkpoint = time.monotonic()

    def on_checkpoint(state: dict[str, Any]) -> None:
        nonlocal last_checkpoint
        if session.cancelled.is_set() or session.lost.is_set():
            return
        if not session.stopping.is_set() and time.monotonic() - last_checkpoint < options.checkpoint_seconds:
            return
        buffer = io.BytesIO()
        torch.save(state, buffer)
        client.put_checkpoint(job.id, session.lease, algorithm.step, buffer.getvalue())
        last_checkpoint = time.monotonic()

    def on_progress(step: int, metrics: dict[str, float]) -> None:
        session.report(step / job.steps, step, metrics | {"threads": float(torch.get_num_threads())})

    try:
        result = train(
            algorithm,
            replay,
            job.steps,
            algorithm.params.batch_size,
            on_progress=on_progress,
            progress_every=options.progress_every,
            should_stop=session.should_stop,
            before_step=_tuning_threads(job.id, host, options),
            on_checkpoint=on_checkpoint,
            checkpoint_every=options.progress_every,
            validation=validation,
        )
    finally:
        close_replay(replay)  # a streamed replay's prefetch thread
    if result.stopped:
        session.raise_if_stopped()
    metrics = dict(result.metrics) | {"threads": float(torch.get_num_threads())}
    sampled = rows.describe()
    outcome: dict[str, Any] = {"resumed_from_step": resumed_step, "step": result.step, **prepared, **sampled}
    if split is not None:
        outcome["split"] = split
    with tempfile.TemporaryDirectory(prefix="replaybank-policy-") as folder:
        card_extra = {
            "dataset": job.dataset,
            "version": job.version,
            "job_id": job.id,
            "parent_policy": job.parent_policy,
            "online_fraction": job.online_fraction,
            "split": split,
            **sampled,
            "training_seconds": time.monotonic() - start,
            "resumed_from_step": resumed_step,
        }
        export_policy(algorithm, folder, card_extra=card_extra)
        torch.save(algorithm.state_dict(), Path(folder) / POLICY_FILES["state"])
        if options.eval_episodes > 0 and spec.env_id:
            mean_return, skipped = _evaluate_onto_card(Path(folder), spec, job, options.eval_episodes)
            if skipped is None:
                metrics["eval/return_mean"] = mean_return
            else:
                outcome["evaluation_skipped"] = skipped
        session.raise_if_abandoned()
        client.upload_policy(job.id, session.lease, folder)
    session.report(1.0, result.step, metrics)
    return JobComplete(metrics=metrics, result=outcome)


@dataclass(frozen=True)
class StoredParts:
    """`PreparedParts` kept with the service, beside the job's dataset version (COMBO's dynamics model).

    A job with a split prepares from its training episodes only, so what it builds is kept under keys
    that name the split, apart from what was built from the whole version (which OPE reuses as such).
    """

    session: JobSession

    def get(self, key: str) -> bytes | None:
        return self.session.client.get_dynamics(self.session.job.id, self._key(key))

    def put(self, key: str, blob: bytes) -> None:
        self.session.client.put_dynamics(self.session.job.id, self.session.lease, self._key(key), blob)

    def _key(self, key: str) -> str:
        split = self.session.job.split
        if split is None:
            return key
        return f"{key}-split-{hashlib.sha256(split.model_dump_json().encode()).hexdigest()[:12]}"


def _tuning_threads(job_id: str, host: Host, options: WorkerOptions) -> Callable[[], None]:
    """`train`'s `before_step`: the thread tuner times the steps, and says once which count it chose."""
    tuner = ThreadTuner(host.cores.threads, torch.set_num_threads, fixed=options.threads)
    announced = False

    def before_step() -> None:
        nonlocal announced
        tuner.between_steps()
        if not announced and tuner.settled:
            announced = True
            log.info("job %s trains on %s", job_id, tuner.describe())

    return before_step


def _evaluate_onto_card(folder: Path, spec: DatasetSpec, job: JobPublic, episodes: int) -> tuple[float, None] | tuple[None, str]:
    """Evaluate the exported policy in the dataset's environment and write the outcome onto its card:
    (mean return, None), or (None, why it was not evaluated).

    The training is done by now and worth keeping whatever happens here: an evaluation that cannot run
    (the environment is missing on this worker, raises, or its spaces are not the policy's) is recorded
    on the card as `evaluation_skipped` with the reason instead of failing the job.
    """
    assert spec.env_id is not None
    card_path = folder / POLICY_FILES["card"]
    card = json.loads(card_path.read_text())
    try:
        evaluation = evaluate(folder, spec.env_id, episodes=episodes, seed=job.seed, spec=spec)
    except Exception as error:  # noqa: BLE001 - whatever stops the evaluation: see the docstring
        reason = str(error) if isinstance(error, ValueError) else f"{type(error).__name__}: {error}"
        log.warning("job %s: policy kept without an evaluation: %s", job.id, reason)
        card["evaluation_skipped"] = reason
        card_path.write_text(json.dumps(card, indent=2, sort_keys=True))
        return None, reason
    card["evaluations"] = [evaluation | {"job_id": job.id}]
    card_path.write_text(json.dumps(card, indent=2, sort_keys=True))
    return evaluation["mean"], None



def start_from_parent(algorithm: OfflineAlgorithm, state: dict[str, Any]) -> None:
    """Fine-tuning: the parent's networks and optimiser moments, with a fresh step count and schedules.

    Learning-rate schedules restart, so a parent that finished a cosine decay still learns; the
    optimisers' rates go back to where their schedules began.
    """
    fresh = {name: (None if name.endswith("_schedule") else value) for name, value in state.items()}
    fresh["step"] = 0
    algorithm.load_state_dict(fresh)
    for optimiser in algorithm.optimisers():
        for group in optimiser.param_groups:
            group["lr"] = group.get("initial_lr", group["lr"])


def _normalisation_of_card(card: dict[str, Any]) -> Normalisation:
    values = card["normalisation"]
    return Normalisation(
        observation_mean=np.asarray(values["observation_mean"], dtype=np.float32),
        observation_std=np.asarray(values["observation_std"], dtype=np.float32),
        reward_scale=float(values["reward_scale"]),
    )
