"""Small datasets and algorithm variants shared by the algorithm tests."""

from __future__ import annotations

import pytest

from workers.algos.data import Normalisation, TransitionArrays
from workers.rollouts.behaviour import CARTPOLE_SPEC, PENDULUM_SPEC, cartpole_dataset, pendulum_dataset

SMALL = {"hidden_sizes": [32, 32], "batch_size": 64}
COMBO_SMALL = {
    **SMALL,
    "sampled_actions": 2,
    "rollout_batch_size": 100,
    "rollout_length": 3,
    "rollout_interval": 10,
    "model_retain_refreshes": 2,
    "dynamics_hidden_sizes": [32, 32],
    "dynamics_batch_size": 64,
    "max_dynamics_epochs": 3,
}

VARIANTS = {
    # id: (algorithm, discrete actions?, params)
    "iql": ("iql", False, SMALL),
    "iql-deterministic": ("iql", False, {**SMALL, "actor": "deterministic"}),
    "iql-discrete": ("iql", True, SMALL),
    "cql": ("cql", False, {**SMALL, "sampled_actions": 4}),
    "cql-lagrange": ("cql", False, {**SMALL, "sampled_actions": 4, "lagrange_threshold": 1.0}),
    "cql-discrete": ("cql", True, SMALL),
    "bc": ("bc", False, SMALL),
    "bc-nll": ("bc", False, {**SMALL, "loss": "nll"}),
    "bc-discrete": ("bc", True, SMALL),
    "combo": ("combo", False, COMBO_SMALL),
    "awac": ("awac", False, SMALL),
    "awac-clipped": ("awac", False, {**SMALL, "weighting": "clipped", "sampled_actions": 3}),
}


@pytest.fixture(scope="session")
def small_pendulum() -> TransitionArrays:
    return pendulum_dataset("medium", 4, seed=0)


@pytest.fixture(scope="session")
def small_cartpole() -> TransitionArrays:
    return cartpole_dataset(4, seed=0, random_action_probability=0.5)


@pytest.fixture
def variant_data(request, small_pendulum, small_cartpole):
    """(algorithm name, spec, data, normalisation, params) for the variant id in request.param."""
    name, discrete, params = VARIANTS[request.param]
    data = small_cartpole if discrete else small_pendulum
    spec = CARTPOLE_SPEC if discrete else PENDULUM_SPEC
    return name, spec, data, Normalisation.from_arrays(data), params
