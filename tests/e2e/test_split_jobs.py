"""Held-out episodes end to end: a real `replaybank serve` and `replaybank worker` train with a split,
submitted and followed with `replaybank train --validation-fraction --split-seed --watch`, the version
resident or (a worker with `--memory-budget 1`) streamed; the metric history holds validation metrics
beside the losses, and the card and result record the split."""

from __future__ import annotations

import numpy as np
import pytest

from schemas.splits import Split, held_out
from tests.e2e.test_jobs import (
    SMALL,
    TINY_COMBO,
    cli,
    client,
    pendulum_rows,
    queue_kind,
    service,
    start_worker,
    train,
    wait_for,
)
from workers.algos.data import Normalisation, arrays_from_arrow

pytestmark = pytest.mark.slow

__all__ = ["client", "queue_kind", "service", "start_worker"]  # the fixtures, shared with test_jobs.py

EPISODES, LENGTH = 4, 100
"""The `client` fixture's dataset: episodes 0..3 of 100 rows."""


@pytest.fixture
def service_settings() -> dict[str, str]:
    """A lease no export outlasts on a loaded machine: these jobs each run once, so their results say all."""
    return {"REPLAYBANK_LEASE_SECONDS": "60"}


def a_seed_holding_out_some(fraction: float) -> int:
    return next(
        seed for seed in range(100) if 0 < held_out(np.arange(EPISODES), Split(validation_fraction=fraction, seed=seed)).sum() < EPISODES
    )


@pytest.mark.parametrize("budget", [(), ("--memory-budget", "1")], ids=["resident", "streamed"])
def test_a_train_job_with_a_split_reports_validation_metrics_and_records_the_split(service, client, start_worker, tmp_path, budget) -> None:
    seed = a_seed_holding_out_some(0.5)
    held = int(held_out(np.arange(EPISODES), Split(validation_fraction=0.5, seed=seed)).sum())
    worker = start_worker("--max-jobs", "1", *budget)
    trained = cli(
        service,
        "train", "pendulum", "--algorithm", "iql", "--steps", "60", "--validation-fraction", "0.5", "--split-seed", str(seed),
        "-p", "hidden_sizes=32,32", "-p", "batch_size=64", "--watch",
        timeout=240,
    )  # fmt: skip
    assert trained.returncode == 0, trained.stderr
    assert worker.wait(timeout=60) == 0
    job = client.get_job(trained.stdout.splitlines()[0].strip())
    assert job.status == "succeeded" and job.policy_id is not None

    split = {"validation_fraction": 0.5, "seed": seed}
    recorded = split | {"held_out_episodes": held, "held_out_rows": held * LENGTH}
    assert job.split is not None and job.split.model_dump() == split
    assert job.result["split"] == recorded
    card = client.get_policy(job.policy_id).card
    assert card["split"] == recorded
    assert job.result["streamed"] is card["streamed"] is bool(budget)
    assert card["memory_budget"] == (1 if budget else None)
    # the normalisation is the training episodes' alone (the fixture uploaded these rows)
    rows = arrays_from_arrow(pendulum_rows(episodes=EPISODES, length=LENGTH))
    training = rows.subset(~held_out(rows.episode_ids, Split(**split)))
    expected_mean = Normalisation.from_arrays(training).observation_mean
    np.testing.assert_allclose(card["normalisation"]["observation_mean"], expected_mean, rtol=1e-5)

    history = client.job_metrics(job.id)
    reported = [point for point in history if "critic_loss" in point.values]
    assert [point.step for point in reported][:3] == [20, 40, 60]  # the worker reports every 20 steps
    for point in reported:
        for name in ("validation/td_error", "validation/log_likelihood", "validation/value_mean"):
            assert np.isfinite(point.values[name]), (name, point)
    assert {"validation/td_error", "validation/log_likelihood", "validation/value_mean"} <= set(job.metrics)


def test_combo_with_a_split_keeps_its_dynamics_model_apart_from_the_whole_version(client, start_worker, tmp_path) -> None:
    # the whole version's model saw the held-out episodes: a split job must not reuse it, nor replace it
    split = {"validation_fraction": 0.5, "seed": a_seed_holding_out_some(0.5)}
    jobs = [
        train(client, steps=20, algorithm="combo", params=TINY_COMBO),
        train(client, steps=20, algorithm="combo", params=TINY_COMBO, split=split),
        train(client, steps=20, algorithm="combo", params=TINY_COMBO, split=split, seed=1),
    ]
    worker = start_worker("--max-jobs", "3")
    done = [wait_for(client, job.id, lambda job: job.status == "succeeded", 240, tmp_path) for job in jobs]
    assert worker.wait(timeout=60) == 0
    assert [job.attempts for job in done] == [1, 1, 1]
    assert [job.result["dynamics"] for job in done] == ["trained", "trained", "reused"]
