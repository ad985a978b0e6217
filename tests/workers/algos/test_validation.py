"""Held-out episodes: training never samples them, and every algorithm measures them at each report."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pyarrow as pa
import pytest
import torch

from schemas.splits import Split, held_out
from tests.factories import random_transitions
from workers.algos.columns import MappedTransitions, write_columns
from workers.algos.data import Normalisation, arrays_from_arrow, arrays_to_arrow, collected_by_policy
from workers.algos.streaming import close_replay
from workers.algos.training import VALIDATION_PREFIX, fit, validation_batch
from workers.rollouts.behaviour import PENDULUM_SPEC
from workers.runtime.job_rows import JobRows

from .conftest import VARIANTS
from .test_algorithms import _flat_state

SPLIT = Split(validation_fraction=0.5, seed=1)
"""Holds out some but not all of the four episodes of the small datasets (checked below)."""

CRITIC = {"td_error", "value_mean"}
EXPECTED = {
    "iql": CRITIC | {"log_likelihood"},
    "iql-deterministic": CRITIC | {"action_squared_error"},
    "iql-discrete": CRITIC | {"log_likelihood"},
    "cql": CRITIC | {"log_likelihood"},
    "cql-lagrange": CRITIC | {"log_likelihood"},
    "cql-discrete": CRITIC | {"action_agreement"},
    "bc": {"action_squared_error"},
    "bc-nll": {"log_likelihood"},
    "bc-discrete": {"log_likelihood"},
    "combo": CRITIC | {"log_likelihood"},
    "awac": CRITIC | {"log_likelihood"},
    "awac-clipped": CRITIC | {"log_likelihood"},
}
"""What each variant measures: BC has no critic; deterministic and greedy policies have no density."""


def test_every_variant_has_its_expected_measures():
    assert set(EXPECTED) == set(VARIANTS)


@pytest.mark.parametrize("variant_data", list(VARIANTS), indirect=True)
def test_validation_metrics_are_reported_finite_and_leave_training_unchanged(variant_data, request):
    variant = request.node.callspec.params["variant_data"]
    name, spec, data, _, params = variant_data
    held = held_out(data.episode_ids, SPLIT)
    assert 0 < held.sum() < len(data)
    training = data.subset(~held)
    runs = {}
    # The whole data with its held-out rows marked, against the training rows alone measuring nothing.
    for rows, mask in ((data, held), (training, None)):
        reports: list[dict[str, float]] = []
        algorithm, _ = fit(
            name, rows, spec, 6, 0, params=params, held_out=mask,
            progress_every=3, on_progress=lambda step, metrics: reports.append(metrics),
        )  # fmt: skip
        runs[mask is not None] = (algorithm, reports)

    algorithm, reports = runs[True]
    assert len(reports) == 2
    for report in reports:
        measures = {key.removeprefix(VALIDATION_PREFIX): value for key, value in report.items() if key.startswith(VALIDATION_PREFIX)}
        assert set(measures) == EXPECTED[variant]
        assert all(math.isfinite(value) for value in measures.values()), measures
    if "action_agreement" in reports[-1]:
        assert 0.0 <= reports[-1][VALIDATION_PREFIX + "action_agreement"] <= 1.0

    # Measuring forks torch's RNG: the run trains exactly as one that measures nothing.
    plain, plain_reports = runs[False]
    assert [{k: v for k, v in r.items() if not k.startswith(VALIDATION_PREFIX)} for r in reports] == plain_reports
    for a, b in zip(_flat_state(algorithm), _flat_state(plain), strict=True):
        assert torch.equal(a, b)


def marked_table(episodes: int, length: int) -> pa.Table:
    """Random Pendulum-shaped episodes whose first observation value is the episode id (a marker that
    survives normalisation); the second half of the episodes was collected by a policy."""
    data = random_transitions(PENDULUM_SPEC, rows=episodes * length, episode_length=length, seed=0)
    observations = data.observations.copy()
    observations[:, 0] = data.episode_ids
    data = dataclasses.replace(data, observations=observations)
    logged = data.episode_ids < episodes // 2
    return pa.concat_tables(
        [arrays_to_arrow(data.subset(logged), PENDULUM_SPEC), arrays_to_arrow(data.subset(~logged), PENDULUM_SPEC, source="policy:p1")]
    )


def job_rows(table: pa.Table, kind: str, folder) -> JobRows:
    """`table` as a job with online rows has it: resident arrays, or mapped columns written into `folder`."""
    if kind == "resident":
        return JobRows(arrays_from_arrow(table), None, collected_by_policy(table), 0, None)
    mapped = MappedTransitions([write_columns(table.to_batches(100), table.num_rows, folder / "columns", PENDULUM_SPEC)])
    return JobRows(None, mapped, None, 0, 1)


def markers(observations: torch.Tensor, normalisation: Normalisation) -> set[int]:
    """The episode ids `marked_table` put in the first observation value, read back through the normalisation."""
    marker = observations[:, 0] * float(normalisation.observation_std[0]) + float(normalisation.observation_mean[0])
    return set(torch.round(marker).long().tolist())


@pytest.mark.parametrize("kind", ["resident", "streamed"])
def test_training_never_samples_a_held_out_row_and_the_online_share_stays_online(kind, tmp_path):
    episodes, length = 20, 30
    split = Split(validation_fraction=0.3, seed=0)
    table = marked_table(episodes, length)
    ids = np.arange(episodes)
    held_ids = set(ids[held_out(ids, split)].tolist())
    online_ids = set(range(episodes // 2, episodes))
    assert held_ids & online_ids and held_ids - online_ids, "the split should hold out logged and online episodes"

    rows = job_rows(table, kind, tmp_path)
    held = held_out(rows.episode_ids(), split)
    assert set(np.unique(rows.episode_ids()[held]).tolist()) == held_ids
    normalisation = rows.normalisation(~held)
    # the normalisation is the training rows' alone, on either path
    expected = Normalisation.from_arrays(arrays_from_arrow(table).subset(~held))
    np.testing.assert_allclose(normalisation.observation_mean, expected.observation_mean, rtol=1e-5)
    np.testing.assert_allclose(normalisation.observation_std, expected.observation_std, rtol=1e-5)
    assert normalisation.reward_scale == pytest.approx(expected.reward_scale, rel=1e-5)

    replay = rows.replay(normalisation, PENDULUM_SPEC.action, torch.device("cpu"), 0, 0.5, rows=~held)
    seen_online, seen_logged = set(), set()
    try:
        for _ in range(200):
            observations = replay.sample(64).observations
            seen_online |= markers(observations[:32], normalisation)
            seen_logged |= markers(observations[32:], normalisation)
    finally:
        close_replay(replay)
    assert not (seen_online | seen_logged) & held_ids
    assert seen_online == online_ids - held_ids  # every training episode is drawn, on its side of the mix
    assert seen_logged == set(range(episodes // 2)) - held_ids

    validation = rows.validation(held, normalisation, PENDULUM_SPEC.action, torch.device("cpu"), 0)
    assert validation is not None and len(validation.rewards) == len(held_ids) * length
    assert markers(validation.observations, normalisation) == held_ids


def test_validation_batch_is_a_fixed_sample_of_at_most_the_cap(tmp_path):
    data = random_transitions(PENDULUM_SPEC, rows=500, episode_length=50)
    normalisation = Normalisation.from_arrays(data)
    device = torch.device("cpu")
    held = data.episode_ids % 2 == 1
    first = validation_batch(data, held, normalisation, PENDULUM_SPEC.action, device, seed=3, rows=100)
    again = validation_batch(data, held, normalisation, PENDULUM_SPEC.action, device, seed=3, rows=100)
    whole = validation_batch(data, held, normalisation, PENDULUM_SPEC.action, device, seed=3, rows=1000)
    assert first is not None and again is not None and whole is not None
    assert first.rewards.shape == (100,) and whole.rewards.shape == (250,)
    assert all(torch.equal(a, b) for a, b in zip(first, again))
    torch.testing.assert_close(whole.rewards, torch.as_tensor(data.rewards[held] * normalisation.reward_scale))
    # mapped columns give the same sample, gathering only its rows
    table = arrays_to_arrow(data, PENDULUM_SPEC)
    mapped = MappedTransitions([write_columns(table.to_batches(64), table.num_rows, tmp_path / "columns", PENDULUM_SPEC)])
    streamed = validation_batch(mapped, held, normalisation, PENDULUM_SPEC.action, device, seed=3, rows=100)
    assert streamed is not None and all(torch.equal(a, b) for a, b in zip(first, streamed))
    assert validation_batch(data, np.zeros(len(data), bool), normalisation, PENDULUM_SPEC.action, device, 0) is None
