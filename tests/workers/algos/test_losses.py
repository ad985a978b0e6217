"""Each loss on hand-made cases."""

import math

import numpy as np
import pytest
import torch

from schemas.algorithms import CQLParams
from workers.algos.cql import CQL, conservative_gap
from workers.algos.data import Normalisation
from workers.algos.iql import expectile_loss
from workers.algos.nets import CategoricalActor, DeterministicActor, GaussianActor, behaviour_loss
from workers.algos.replay import Batch
from workers.rollouts.behaviour import PENDULUM_SPEC


def test_expectile_loss_weights_each_side():
    # u = Q - V: a negative difference weighs 1 - tau, a positive one tau
    loss = expectile_loss(torch.tensor([-2.0, 1.0]), expectile=0.7)
    assert float(loss) == pytest.approx((0.3 * 4 + 0.7 * 1) / 2)
    assert float(expectile_loss(torch.tensor([-2.0, 1.0]), expectile=0.5)) == pytest.approx(0.5 * (4 + 1) / 2)


def test_expectile_loss_minimiser_is_the_expectile():
    # For samples {0, 1} the tau-expectile e solves tau (1 - e) = (1 - tau) e, i.e. e = tau.
    samples = torch.tensor([0.0, 1.0])
    value = torch.zeros((), requires_grad=True)
    optimiser = torch.optim.SGD([value], lr=0.5)
    for _ in range(300):
        optimiser.zero_grad()
        expectile_loss(samples - value, 0.8).backward()
        optimiser.step()
    assert float(value.detach()) == pytest.approx(0.8, abs=1e-4)


def test_conservative_gap_is_logsumexp_minus_data_q():
    proposals = torch.tensor([[[0.0, math.log(3.0)], [1.0, 1.0]], [[2.0, 2.0], [0.0, 0.0]]])  # [E=2, B=2, M=2]
    q_data = torch.tensor([[0.5, 1.0], [2.0, -1.0]])
    gap = conservative_gap(proposals, q_data)
    expected_first = ((math.log(4.0) - 0.5) + (1.0 + math.log(2.0) - 1.0)) / 2
    expected_second = ((2.0 + math.log(2.0) - 2.0) + (math.log(2.0) + 1.0)) / 2
    torch.testing.assert_close(gap, torch.tensor([expected_first, expected_second]))


def test_conservative_gap_gradient_pushes_sampled_q_down_and_data_q_up():
    proposals = torch.zeros(1, 1, 3, requires_grad=True)
    q_data = torch.zeros(1, 1, requires_grad=True)
    conservative_gap(proposals, q_data).sum().backward()
    torch.testing.assert_close(proposals.grad, torch.full((1, 1, 3), 1 / 3))  # softmax weights
    torch.testing.assert_close(q_data.grad, torch.tensor([[-1.0]]))


def test_cql_proposals_divide_by_their_sampling_density():
    normalisation = Normalisation(np.zeros(3, np.float32), np.ones(3, np.float32), 1.0)
    cql = CQL(CQLParams(hidden_sizes=[8], sampled_actions=4), PENDULUM_SPEC, normalisation, torch.device("cpu"), 0)
    with torch.no_grad():  # a critic that is 2.5 everywhere
        cql.critic.net.output.weight.zero_()
        cql.critic.net.output.bias.fill_(2.5)
    batch = Batch(torch.randn(5, 3), torch.zeros(5, 1), torch.zeros(5), torch.randn(5, 3), torch.zeros(5))
    proposals = cql._proposal_q(batch)
    assert proposals.shape == (2, 5, 12)
    # uniform actions on [-1, 1]^1 have density 1/2: Q - log(1/2)
    torch.testing.assert_close(proposals[:, :, :4], torch.full((2, 5, 4), 2.5 + math.log(2.0)))
    # policy actions: Q - log pi(a|s), finite and differing per sample
    assert torch.isfinite(proposals).all() and proposals[0, :, 4:].std() > 0


def test_behaviour_loss_is_squared_error_for_a_deterministic_actor():
    actor = DeterministicActor(3, 2, [8])
    observations, actions = torch.randn(5, 3), torch.rand(5, 2) * 2 - 1
    expected = (actor(observations) - actions).square().sum(-1)
    torch.testing.assert_close(behaviour_loss(actor, observations, actions), expected)
    torch.testing.assert_close(behaviour_loss(actor, observations, actions, reduction="mean"), expected.mean())


def test_behaviour_loss_is_the_negative_log_likelihood_for_a_gaussian_actor():
    actor = GaussianActor(3, 1, [8])
    with torch.no_grad():  # mean 0 (tanh of 0) and sigma 1 at every state
        actor.net[-1].weight.zero_()
        actor.net[-1].bias.zero_()
    actions = torch.tensor([[0.0], [1.0], [-0.5]])
    expected = 0.5 * actions[:, 0].square() + 0.5 * math.log(2.0 * math.pi)
    torch.testing.assert_close(behaviour_loss(actor, torch.randn(3, 3), actions), expected)


def test_behaviour_loss_is_the_cross_entropy_for_a_categorical_actor():
    actor = CategoricalActor(3, 3, [8])
    with torch.no_grad():  # logits (0, log 2, 0) at every state: probabilities 1/4, 1/2, 1/4
        actor.net[-1].weight.zero_()
        actor.net[-1].bias.copy_(torch.tensor([0.0, math.log(2.0), 0.0]))
    actions = torch.tensor([0, 1, 2])
    expected = torch.tensor([math.log(4.0), math.log(2.0), math.log(4.0)])
    torch.testing.assert_close(behaviour_loss(actor, torch.randn(3, 3), actions), expected)
    torch.testing.assert_close(behaviour_loss(actor, torch.randn(3, 3), actions, reduction="mean"), expected.mean())
