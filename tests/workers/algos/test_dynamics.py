"""The dynamics ensemble learns a known system, stops early, rolls out with its elites and saves exactly."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch

from tests.factories import torch_threads
from workers.algos.data import TransitionArrays
from workers.algos.dynamics import DynamicsModel, fit_dynamics

STATE_MATRIX = np.array([[0.9, 0.1, 0.0], [0.0, 0.8, 0.2], [0.1, 0.0, 0.95]], dtype=np.float32)
ACTION_MATRIX = np.array([[0.5], [0.0], [-0.3]], dtype=np.float32)
REWARD_WEIGHTS = np.array([1.0, -0.5, 0.2], dtype=np.float32)
NOISE = 0.01

FIT = dict(
    ensemble_size=7,
    elite_count=5,
    hidden_sizes=[64, 64],
    learning_rate=1e-3,
    weight_decay=1e-5,
    batch_size=256,
    holdout_fraction=0.2,
    max_holdout=1000,
    max_epochs=100,
    patience=5,
    device=torch.device("cpu"),
    seed=0,
)


def linear_system(rows: int, seed: int) -> TransitionArrays:
    """s' = A s + B a + noise, r = w.s + 0.3 a, terminal when s[0] > 0.5 (about a third of the rows)."""
    rng = np.random.default_rng(seed)
    observations = rng.normal(size=(rows, 3)).astype(np.float32)
    actions = rng.uniform(-1, 1, size=(rows, 1)).astype(np.float32)
    next_observations = observations @ STATE_MATRIX.T + actions @ ACTION_MATRIX.T
    next_observations += NOISE * rng.normal(size=next_observations.shape).astype(np.float32)
    rewards = observations @ REWARD_WEIGHTS + 0.3 * actions[:, 0]
    return TransitionArrays(
        observations=observations,
        actions=actions,
        rewards=rewards.astype(np.float32),
        next_observations=next_observations.astype(np.float32),
        terminals=observations[:, 0] > 0.5,
        truncateds=np.zeros(rows, dtype=bool),
        episode_ids=np.arange(rows, dtype=np.int64),
        steps=np.zeros(rows, dtype=np.int32),
    )


@pytest.fixture(scope="module")
def fitted() -> tuple[DynamicsModel, dict[str, float]]:
    # module-scoped, so it runs before the conftest's one-thread fixture does
    with torch_threads(1):
        return fit_dynamics(linear_system(4000, seed=0), **FIT)


def tensors(data: TransitionArrays) -> tuple[torch.Tensor, torch.Tensor]:
    return torch.as_tensor(data.observations), torch.as_tensor(data.actions)


def test_learns_linear_dynamics_to_low_holdout_error(fitted: tuple[DynamicsModel, dict[str, float]]) -> None:
    model, summary = fitted
    # Standardised targets have variance 1; the noise alone leaves about (0.01 / 1.2)^2 of it.
    assert summary["dynamics_holdout_mse"] < 0.01
    fresh = linear_system(2000, seed=1)
    next_observations, rewards, terminals = model.mean_prediction(*tensors(fresh))
    assert (next_observations - torch.as_tensor(fresh.next_observations)).abs().mean() < 3 * NOISE
    assert (rewards - torch.as_tensor(fresh.rewards)).abs().mean() < 0.05
    # a constant guess would be right on about 69% of rows
    assert (terminals == torch.as_tensor(fresh.terminals)).float().mean() > 0.9


def test_elites_are_the_members_with_the_lowest_holdout_error(
    fitted: tuple[DynamicsModel, dict[str, float]],
) -> None:
    model, _ = fitted
    elites = model.elites.tolist()
    assert len(elites) == len(set(elites)) == 5
    others = [m for m in range(7) if m not in elites]
    assert model.holdout_error[elites].max() <= model.holdout_error[others].min()


def test_samples_come_from_elites_only(fitted: tuple[DynamicsModel, dict[str, float]]) -> None:
    model = DynamicsModel.from_dynamics_state(fitted[0].dynamics_state())
    others = [m for m in range(7) if m not in model.elites.tolist()]
    with torch.no_grad():
        model.network.output.bias[others] += 1000.0  # a non-elite's prediction would now be absurd
    fresh = linear_system(2000, seed=2)
    next_observations, _, _ = model.sample(*tensors(fresh), generator=torch.Generator().manual_seed(0))
    # model noise is about NOISE per dimension; a single corrupt member would add hundreds
    assert (next_observations - torch.as_tensor(fresh.next_observations)).abs().max() < 1.0


def test_sampled_spread_matches_the_system_noise(fitted: tuple[DynamicsModel, dict[str, float]]) -> None:
    model, _ = fitted
    fresh = linear_system(3, seed=6)
    for row in range(3):
        observations = torch.as_tensor(fresh.observations[row : row + 1]).repeat(4000, 1)
        actions = torch.as_tensor(fresh.actions[row : row + 1]).repeat(4000, 1)
        next_observations, _, _ = model.sample(observations, actions, generator=torch.Generator().manual_seed(row))
        spread = next_observations.std(dim=0)
        assert ((spread > 0.5 * NOISE) & (spread < 2 * NOISE)).all(), spread


def test_stops_early_when_nothing_is_learnable() -> None:
    data = linear_system(3000, seed=3)
    rng = np.random.default_rng(3)
    unpredictable = TransitionArrays(
        observations=data.observations,
        actions=data.actions,
        rewards=rng.normal(size=len(data)).astype(np.float32),
        next_observations=data.observations + rng.normal(size=data.observations.shape).astype(np.float32),
        terminals=data.terminals,
        truncateds=data.truncateds,
        episode_ids=data.episode_ids,
        steps=data.steps,
    )
    _, summary = fit_dynamics(unpredictable, **{**FIT, "max_epochs": 100, "patience": 3})
    assert summary["dynamics_epochs"] <= 12


def test_saved_model_reloads_with_identical_predictions(fitted: tuple[DynamicsModel, dict[str, float]]) -> None:
    model, _ = fitted
    restored = DynamicsModel.from_bytes(model.to_bytes())
    observations, actions = tensors(linear_system(500, seed=4))
    for expected, reloaded in zip(
        model.mean_prediction(observations, actions), restored.mean_prediction(observations, actions)
    ):
        assert torch.equal(expected, reloaded)
    sampled = model.sample(observations, actions, generator=torch.Generator().manual_seed(7))
    sampled_again = restored.sample(observations, actions, generator=torch.Generator().manual_seed(7))
    for a, b in zip(sampled, sampled_again):
        assert torch.equal(a, b)
    assert torch.equal(restored.elites, model.elites)


def test_loading_something_else_is_refused() -> None:
    with pytest.raises(ValueError, match="not a saved dynamics model"):
        DynamicsModel.from_bytes(b"certainly not a model")


def test_refuses_discrete_actions() -> None:
    data = linear_system(1000, seed=5)
    discrete = TransitionArrays(**{**data.__dict__, "actions": np.zeros(len(data), dtype=np.int64)})
    with pytest.raises(ValueError, match="continuous actions"):
        fit_dynamics(discrete, **FIT)


def test_read_only_arrays_as_a_pulled_version_gives_them_fit_without_warnings() -> None:
    """Arrays viewing Arrow buffers are read-only; torch warns when it wraps those directly."""
    data = linear_system(4000, seed=0)
    for array in data.__dict__.values():
        array.flags.writeable = False

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        _, summary = fit_dynamics(data, **{**FIT, "max_epochs": 2})

    assert summary["dynamics_epochs"] == 2
