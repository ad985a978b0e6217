"""Every algorithm through the same checks: update, policy, resume, its registered parts, terminal vs truncated."""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch

from schemas.dataset import ContinuousActionSpec
from tests.factories import self_loop
from workers.algos import ALGORITHMS
from workers.algos.data import Normalisation
from workers.algos.replay import ReplayBuffer
from workers.algos.training import checkpoint, make_algorithm, restore, train
from workers.rollouts.behaviour import CARTPOLE_SPEC, PENDULUM_SPEC

from .conftest import VARIANTS


def build(variant_data, seed=0, total_steps=100, prepare=True):
    """An algorithm and its replay, prepared as `fit` does for a fresh run (a resumed one is not)."""
    name, spec, data, normalisation, params = variant_data
    algorithm = make_algorithm(name, params, spec, normalisation, "cpu", seed, total_steps=total_steps)
    replay = ReplayBuffer.from_arrays(data, normalisation, spec.action, algorithm.device, seed)
    if prepare:
        algorithm.prepare(data)
    return algorithm, replay


@pytest.mark.parametrize("variant_data", list(VARIANTS), indirect=True)
def test_update_returns_detached_finite_scalars(variant_data):
    algorithm, replay = build(variant_data)
    for _ in range(3):
        metrics = algorithm.update(replay.sample(algorithm.params.batch_size))
    assert metrics
    for name, value in metrics.items():
        assert isinstance(value, torch.Tensor) and value.dim() == 0, name
        assert not value.requires_grad, name
        assert torch.isfinite(value), name


@pytest.mark.parametrize("variant_data", list(VARIANTS), indirect=True)
def test_policy_acts_in_the_dataset_space(variant_data):
    algorithm, _ = build(variant_data)
    spec = algorithm.spec
    observations = torch.randn(7, *spec.observation.shape) * 10
    with torch.no_grad():
        actions = algorithm.policy()(observations)
    if isinstance(spec.action, ContinuousActionSpec):
        assert actions.dtype == torch.float32 and actions.shape == (7, *spec.action.shape)
        assert (actions >= torch.tensor(spec.action.low)).all() and (actions <= torch.tensor(spec.action.high)).all()
    else:
        assert actions.dtype == torch.int64 and actions.shape == (7,)
        assert ((actions >= 0) & (actions < spec.action.n)).all()


def _flat_state(algorithm) -> list[torch.Tensor]:
    flat: list[torch.Tensor] = []

    def walk(value):
        if isinstance(value, torch.Tensor):
            flat.append(value)
        elif isinstance(value, dict):
            for key in sorted(value, key=str):
                walk(value[key])
        elif isinstance(value, (list, tuple)):
            for item in value:
                walk(item)

    walk(algorithm.state_dict())
    return flat


@pytest.mark.parametrize("variant_data", list(VARIANTS), indirect=True)
def test_resume_is_bit_identical(variant_data):
    steps = 6
    straight, straight_replay = build(variant_data, total_steps=2 * steps)
    train(straight, straight_replay, 2 * steps, straight.params.batch_size)

    first, first_replay = build(variant_data, total_steps=2 * steps)
    train(first, first_replay, steps, first.params.batch_size)
    saved = io.BytesIO()
    torch.save(checkpoint(first, first_replay), saved)
    torch.manual_seed(12345)  # whatever happens to the global RNG in between
    resumed, resumed_replay = build(variant_data, seed=99, total_steps=2 * steps, prepare=False)
    saved.seek(0)
    restore(resumed, resumed_replay, torch.load(saved, weights_only=False))
    assert resumed.step == steps
    train(resumed, resumed_replay, 2 * steps, resumed.params.batch_size)

    assert resumed.step == straight.step == 2 * steps
    expected, actual = _flat_state(straight), _flat_state(resumed)
    assert len(expected) == len(actual)
    for a, b in zip(expected, actual):
        assert torch.equal(a, b)


@pytest.mark.parametrize("variant_data", list(VARIANTS), indirect=True)
def test_optimisers_are_every_optimiser_the_algorithm_holds(variant_data):
    # fine-tuning resets every learning rate through optimisers(); the resume test checks they are all saved
    algorithm, _ = build(variant_data, prepare=False)
    held = [value for value in vars(algorithm).values() if isinstance(value, torch.optim.Optimizer)]
    assert held and {id(optimiser) for optimiser in algorithm.optimisers()} == {id(optimiser) for optimiser in held}


def test_only_parts_registered_once_are_accepted(small_pendulum):
    algorithm = make_algorithm("bc", {}, PENDULUM_SPEC, Normalisation.from_arrays(small_pendulum), "cpu", 0, 10)
    with pytest.raises(ValueError, match="'actor' twice"):
        algorithm.register("actor")
    with pytest.raises(ValueError, match="'step' twice"):
        algorithm.register("step")
    with pytest.raises(TypeError, match="'normalisation' is a Normalisation"):
        algorithm.register("normalisation")
    assert set(algorithm.state_dict()) == {"step", "actor", "optimiser"}


def test_only_combo_prepares_anything(small_pendulum):
    normalisation = Normalisation.from_arrays(small_pendulum)
    for name in ("iql", "cql", "bc", "awac"):
        algorithm = make_algorithm(name, {}, PENDULUM_SPEC, normalisation, "cpu", 0, 10)
        assert algorithm.prepare(small_pendulum) == {}


@pytest.mark.parametrize("discrete", [False, True], ids=["continuous", "discrete"])
def test_iql_bootstraps_through_truncation_only(discrete):
    # With gamma 0.5, Q(s, a) = 1 when the row is terminal and 1 / (1 - 0.5) = 2 when it is only
    # truncated (the next state's value still counts).
    spec = CARTPOLE_SPEC if discrete else PENDULUM_SPEC
    params = {"hidden_sizes": [32, 32], "batch_size": 32, "gamma": 0.5, "tau": 0.05, "critic_lr": 1e-3}
    q_values = {}
    for terminal in (True, False):
        data = self_loop(terminal, discrete)
        size = data.observations.shape[1]
        normalisation = Normalisation(np.zeros(size, np.float32), np.ones(size, np.float32), 1.0)
        algorithm = make_algorithm("iql", params, spec, normalisation, "cpu", 0, total_steps=600)
        replay = ReplayBuffer.from_arrays(data, normalisation, spec.action, algorithm.device, 0)
        train(algorithm, replay, 600, 32)
        batch = replay.sample(1)
        with torch.no_grad():
            q = algorithm._q_of_batch(algorithm.critic, batch.observations, batch.actions)
        q_values[terminal] = float(q.mean())
    assert q_values[True] == pytest.approx(1.0, abs=0.15)
    assert q_values[False] == pytest.approx(2.0, abs=0.3)


@pytest.mark.parametrize("discrete", [False, True], ids=["continuous", "discrete"])
def test_cql_target_bootstraps_through_truncation_only(discrete):
    # A critic that is 3 everywhere: the TD error is 3 - 1 on a terminal row (target r = 1) and
    # 3 - (1 + 0.5 * 3) on a truncated one; the loss sums the two critics' mean squared errors.
    spec = CARTPOLE_SPEC if discrete else PENDULUM_SPEC
    params = {"hidden_sizes": [8], "batch_size": 16, "gamma": 0.5, "conservative_weight": 0.0}
    for terminal, expected in ((True, 2 * (3 - 1) ** 2), (False, 2 * (3 - 1 - 0.5 * 3) ** 2)):
        data = self_loop(terminal, discrete)
        size = data.observations.shape[1]
        normalisation = Normalisation(np.zeros(size, np.float32), np.ones(size, np.float32), 1.0)
        algorithm = make_algorithm("cql", params, spec, normalisation, "cpu", 0, total_steps=1)
        for critic in (algorithm.critic, algorithm.target_critic):
            with torch.no_grad():
                critic.net.output.weight.zero_()
                critic.net.output.bias.fill_(3.0)
        replay = ReplayBuffer.from_arrays(data, normalisation, spec.action, algorithm.device, 0)
        metrics = algorithm.update(replay.sample(16))
        assert float(metrics["critic_loss"]) == pytest.approx(expected, rel=1e-5)


def test_registry_names_match_classes():
    for name, algorithm in ALGORITHMS.items():
        assert algorithm.name == name


def test_unknown_params_are_refused(small_pendulum):
    normalisation = Normalisation.from_arrays(small_pendulum)
    with pytest.raises(ValueError, match="expectiel"):
        make_algorithm("iql", {"expectiel": 0.9}, PENDULUM_SPEC, normalisation, "cpu", 0, 10)
    with pytest.raises(ValueError, match="unknown algorithm"):
        make_algorithm("ppo", {}, PENDULUM_SPEC, normalisation, "cpu", 0, 10)
