"""AWAC's own behaviour: its advantage weights, its TD target, the refusal of discrete actions and
fine-tuning from a parent. The shared checks (update, policy, resume, parts) are in test_algorithms.py."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from schemas.algorithms import AWACParams
from tests.factories import self_loop
from workers.algos.awac import AWAC, advantage_weights
from workers.algos.data import Normalisation, TransitionArrays
from workers.algos.replay import ReplayBuffer
from workers.algos.training import fit, make_algorithm, train
from workers.rollouts.behaviour import CARTPOLE_SPEC, PENDULUM_SPEC, cartpole_dataset
from workers.runtime.train import start_from_parent

from .conftest import SMALL


def test_softmax_weights_average_one_and_sharpen_as_lambda_falls():
    advantage = torch.tensor([-1.0, 0.0, 0.5, 2.0])
    mild = advantage_weights(advantage, AWACParams(lam=1.0))
    sharp = advantage_weights(advantage, AWACParams(lam=0.1))
    for weights in (mild, sharp):
        assert float(weights.mean()) == pytest.approx(1.0)
        assert torch.equal(weights.argsort(), advantage.argsort())  # the better the action, the more weight
    assert float(mild[-1]) == pytest.approx(4 * np.exp(2.0) / np.exp([-1.0, 0.0, 0.5, 2.0]).sum())
    assert sharp[-1] > mild[-1] and sharp[0] < mild[0]
    # a shift of every advantage changes nothing: only the differences between actions count
    assert torch.allclose(advantage_weights(advantage + 100.0, AWACParams()), mild)


def test_clipped_weights_are_exp_advantage_over_lambda_up_to_the_cap():
    params = AWACParams(weighting="clipped", lam=0.5, max_advantage_weight=10.0)
    weights = advantage_weights(torch.tensor([-1.0, 0.0, 1.0, 5.0]), params)
    assert torch.allclose(weights, torch.tensor([np.exp(-2.0), 1.0, np.exp(2.0), 10.0], dtype=torch.float32))


def test_target_bootstraps_through_truncation_only():
    # Critics that are 3 everywhere (whatever action the policy draws at s'): the TD error is 3 - 1 on a
    # terminal row and 3 - (1 + 0.5 * 3) on a truncated one; the loss sums the two critics' mean squares.
    params = {"hidden_sizes": [8], "batch_size": 16, "gamma": 0.5}
    normalisation = Normalisation(np.zeros(3, np.float32), np.ones(3, np.float32), 1.0)
    for terminal, expected in ((True, 2 * (3 - 1) ** 2), (False, 2 * (3 - 1 - 0.5 * 3) ** 2)):
        algorithm = make_algorithm("awac", params, PENDULUM_SPEC, normalisation, "cpu", 0, total_steps=1)
        for critic in (algorithm.critic, algorithm.target_critic):
            with torch.no_grad():
                critic.net.output.weight.zero_()
                critic.net.output.bias.fill_(3.0)
        replay = ReplayBuffer.from_arrays(self_loop(terminal, discrete=False), normalisation, PENDULUM_SPEC.action, "cpu", 0)
        metrics = algorithm.update(replay.sample(16))
        assert float(metrics["critic_loss"]) == pytest.approx(expected, rel=1e-5)


def _policy_mean_after_actor_updates(advantage_per_action: float) -> float:
    """The deployed policy's mean action after 300 actor updates with advantages `advantage_per_action` * a
    (the critic left out), on actions spread evenly over Pendulum's [-2, 2]."""
    normalisation = Normalisation(np.zeros(3, np.float32), np.ones(3, np.float32), 1.0)
    params = {"hidden_sizes": [16], "lam": 0.1, "actor_lr": 1e-3}
    algorithm = make_algorithm("awac", params, PENDULUM_SPEC, normalisation, "cpu", 0, 300)
    rng = np.random.default_rng(0)
    n = 1024
    observations = rng.normal(size=(n, 3)).astype(np.float32)
    data = TransitionArrays(
        observations=observations,
        actions=rng.uniform(-2.0, 2.0, (n, 1)).astype(np.float32),
        rewards=np.zeros(n, np.float32),
        next_observations=observations,
        terminals=np.zeros(n, bool),
        truncateds=np.ones(n, bool),
        episode_ids=np.arange(n, dtype=np.int64),
        steps=np.zeros(n, np.int32),
    )
    replay = ReplayBuffer.from_arrays(data, normalisation, PENDULUM_SPEC.action, "cpu", 0)
    for _ in range(300):
        batch = replay.sample(256)
        algorithm._update_actor(batch, advantage_per_action * batch.actions.squeeze(-1))
    with torch.no_grad():
        return float(algorithm.policy()(torch.from_numpy(observations)).mean())


def test_the_actor_moves_towards_actions_with_more_advantage():
    # With equal advantages the weighted likelihood is behaviour cloning and stays near the data's mean, 0;
    # advantages that grow with the action pull the policy up.
    assert abs(_policy_mean_after_actor_updates(0.0)) < 0.3
    assert _policy_mean_after_actor_updates(3.0) > 1.0


def test_discrete_dataset_is_refused():
    data = cartpole_dataset(episodes=2, seed=0)
    with pytest.raises(ValueError, match="awac supports continuous actions only"):
        AWAC(AWACParams(**SMALL), CARTPOLE_SPEC, Normalisation.from_arrays(data), torch.device("cpu"), 0)
    with pytest.raises(ValueError, match="continuous actions only"):
        fit("awac", data, CARTPOLE_SPEC, steps=1, seed=0, params=SMALL)


def test_a_child_fine_tunes_from_its_parent(small_pendulum):
    normalisation = Normalisation.from_arrays(small_pendulum)
    parent, _ = fit("awac", small_pendulum, PENDULUM_SPEC, steps=20, seed=0, params=SMALL)
    child = make_algorithm("awac", SMALL, PENDULUM_SPEC, normalisation, "cpu", 1, total_steps=10)
    start_from_parent(child, parent.state_dict())
    assert child.step == 0
    for name in ("actor", "critic", "target_critic"):
        for mine, theirs in zip(getattr(child, name).parameters(), getattr(parent, name).parameters()):
            assert torch.equal(mine, theirs)
    before = [parameter.clone() for parameter in child.actor.parameters()]
    replay = ReplayBuffer.from_arrays(small_pendulum, normalisation, PENDULUM_SPEC.action, child.device, 1)
    assert train(child, replay, 10, 64).step == 10
    assert any(not torch.equal(old, new) for old, new in zip(before, child.actor.parameters()))
