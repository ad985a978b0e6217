"""Generated Gymnasium data and scripted policies of known quality for the off-policy evaluation tests."""

from __future__ import annotations

import numpy as np
import pytest

from tests.factories import torch_threads
from workers.algos.data import TransitionArrays
from workers.algos.export import export_policy
from workers.algos.training import fit
from workers.rollouts.behaviour import PENDULUM_SPEC, cartpole_dataset, pendulum_dataset, pendulum_swing_up, rollout
from workers.ope.fqe import FQESettings

FAST_FQE = FQESettings(hidden_sizes=(64, 64), learning_rate=5e-4, batch_size=128, target_update_interval=50)
"""Small and quick: with discount 0.95 (a horizon of about 20 steps) 3,000 steps converge on these data."""
DISCOUNT = 0.95


def discounted_returns(data: TransitionArrays, discount: float) -> np.ndarray:
    """Each episode's discounted return (a row weighs discount ** step), in episode-id order."""
    ids, inverse = np.unique(data.episode_ids, return_inverse=True)
    weights = discount ** data.steps.astype(np.float64)
    return np.bincount(inverse, weights=weights * data.rewards, minlength=len(ids))


def swing_up(observations: np.ndarray) -> np.ndarray:
    """The scripted expert, noise-free: a batch function."""
    return np.array([[pendulum_swing_up(o)] for o in observations], dtype=np.float32)


class RandomTorques:
    """Uniformly random torques: the poor policy."""

    def __init__(self, seed: int) -> None:
        self.rng = np.random.default_rng(seed)

    def __call__(self, observations: np.ndarray) -> np.ndarray:
        return self.rng.uniform(-2.0, 2.0, size=(len(observations), 1)).astype(np.float32)


@pytest.fixture(scope="session")
def pendulum() -> TransitionArrays:
    """20 episodes of the noisy swing-up (reset seeds 0..19)."""
    return pendulum_dataset("medium", 20, seed=0)


@pytest.fixture(scope="session")
def true_pendulum_values() -> dict[str, float]:
    """Mean discounted return of each scripted policy in the environment, from the data's initial states."""
    good = rollout("Pendulum-v1", [lambda o, rng: swing_up(o[None])[0]], 20, seed=0)
    bad = rollout("Pendulum-v1", [lambda o, rng: rng.uniform(-2.0, 2.0, 1).astype(np.float32)], 20, seed=0)
    return {"good": discounted_returns(good, DISCOUNT).mean(), "bad": discounted_returns(bad, DISCOUNT).mean()}


@pytest.fixture(scope="session")
def cartpole() -> TransitionArrays:
    """20 episodes of the balancing rule with half the actions random: both of the tests' policies are covered."""
    return cartpole_dataset(20, seed=0, random_action_probability=0.5)


@pytest.fixture(scope="session")
def exported(pendulum, tmp_path_factory):
    """A policy folder as a user downloads it (policy.onnx, policy.pt2, card.json), from a quick BC fit."""
    with torch_threads(1):
        trained, _ = fit("bc", pendulum, PENDULUM_SPEC, steps=200, seed=0, params={"hidden_sizes": [32, 32]})
    out = tmp_path_factory.mktemp("policy")
    export_policy(trained, out)
    return out
