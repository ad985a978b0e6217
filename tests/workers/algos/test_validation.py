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
from workers.algos.data import Normalisation, arrays_to_arrow, split_arrays, training_arrays
from workers.algos.replay import training_replay
from workers.algos.training import VALIDATION_PREFIX, fit, validation_batch
from workers.rollouts.behaviour import PENDULUM_SPEC

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
    training, validation, held = split_arrays(data, SPLIT)
    assert 0 < held.sum() < len(data)
    normalisation = Normalisation.from_arrays(training)
    runs = {}
    for measured in (validation, None):
        reports: list[dict[str, float]] = []
        algorithm, _ = fit(
            name, training, spec, 6, 0, params=params, normalisation=normalisation, validation=measured,
            progress_every=3, on_progress=lambda step, metrics: reports.append(metrics),
        )  # fmt: skip
        runs[measured is not None] = (algorithm, reports)

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


def test_training_never_samples_a_held_out_row_and_the_online_share_stays_online():
    episodes, length = 20, 30
    split = Split(validation_fraction=0.3, seed=0)
    table = marked_table(episodes, length)
    ids = np.arange(episodes)
    held_ids = set(ids[held_out(ids, split)].tolist())
    online_ids = set(range(episodes // 2, episodes))
    assert held_ids & online_ids and held_ids - online_ids, "the split should hold out logged and online episodes"

    training, online, validation = training_arrays(table, split, with_online=True)
    assert online is not None and validation is not None
    assert set(np.unique(validation.episode_ids).tolist()) == held_ids
    assert len(training) + len(validation) == table.num_rows
    np.testing.assert_array_equal(online, np.isin(training.episode_ids, list(online_ids)))

    normalisation = Normalisation.from_arrays(training)
    replay = training_replay(training, normalisation, PENDULUM_SPEC.action, torch.device("cpu"), 0, 0.5, online)
    seen_online, seen_logged = set(), set()
    for _ in range(200):
        batch = replay.sample(64)
        marker = batch.observations[:, 0] * float(normalisation.observation_std[0]) + float(normalisation.observation_mean[0])
        sampled = torch.round(marker).long().tolist()
        seen_online |= set(sampled[:32])
        seen_logged |= set(sampled[32:])
    assert not (seen_online | seen_logged) & held_ids
    assert seen_online == online_ids - held_ids  # every training episode is drawn, on its side of the mix
    assert seen_logged == set(range(episodes // 2)) - held_ids


def test_without_a_split_every_row_trains():
    table = marked_table(4, 10)
    training, online, validation = training_arrays(table)
    assert (len(training), online, validation) == (40, None, None)


def test_validation_batch_is_a_fixed_sample_of_at_most_the_cap():
    data = random_transitions(PENDULUM_SPEC, rows=500, episode_length=50)
    normalisation = Normalisation.from_arrays(data)
    device = torch.device("cpu")
    first = validation_batch(data, normalisation, PENDULUM_SPEC.action, device, seed=3, rows=100)
    again = validation_batch(data, normalisation, PENDULUM_SPEC.action, device, seed=3, rows=100)
    whole = validation_batch(data, normalisation, PENDULUM_SPEC.action, device, seed=3, rows=1000)
    assert first is not None and again is not None and whole is not None
    assert first.rewards.shape == (100,) and whole.rewards.shape == (500,)
    assert all(torch.equal(a, b) for a, b in zip(first, again))
    assert validation_batch(data.subset(np.zeros(len(data), bool)), normalisation, PENDULUM_SPEC.action, device, 0) is None
