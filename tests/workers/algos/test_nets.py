
import numpy as np
import pytest
import torch
from torch import nn

from schemas.dataset import DatasetSpec
from workers.algos.data import Normalisation
from workers.algos.nets import (
    ContinuousQEnsemble,
    DeployedPolicy,
    EnsembleLinear,
    EnsembleMLP,
    TanhGaussianActor,
    frozen_copy,
    gaussian_log_prob,
    soft_update_,
)


def test_ensemble_linear_is_independent_linear_layers():
    torch.manual_seed(0)
    layer = EnsembleLinear(5, 3, ensemble_size=4)
    x = torch.randn(4, 7, 5)
    out = layer(x)
    for member in range(4):
        expected = x[member] @ layer.weight[member] + layer.bias[member]
        torch.testing.assert_close(out[member], expected)
    shared = torch.randn(7, 5)
    torch.testing.assert_close(layer(shared), layer(shared.expand(4, 7, 5)))


def test_ensemble_members_differ_and_gradients_stay_separate():
    torch.manual_seed(0)
    net = EnsembleMLP(4, 2, ensemble_size=3, hidden_sizes=[8])
    x = torch.randn(6, 4)
    out = net(x)
    assert out.shape == (3, 6, 2)
    assert not torch.allclose(out[0], out[1])
    out[1].sum().backward()
    assert net.output.weight.grad[0].abs().sum() == 0
    assert net.output.weight.grad[1].abs().sum() > 0


def test_twin_critic_shape():
    critic = ContinuousQEnsemble(3, 2, [16], ensemble_size=2)
    assert critic(torch.randn(5, 3), torch.randn(5, 2)).shape == (2, 5)


def test_soft_update_moves_target_by_tau_in_place():
    source = nn.Linear(3, 2)
    target = frozen_copy(source)
    before = target.weight.detach().clone()
    storage = target.weight.data_ptr()
    with torch.no_grad():
        source.weight.add_(1.0)
    soft_update_(target, source, 0.25)
    torch.testing.assert_close(target.weight, before + 0.25)
    assert target.weight.data_ptr() == storage
    assert not target.weight.requires_grad


def test_tanh_gaussian_log_prob_matches_change_of_variables():
    torch.manual_seed(0)
    actor = TanhGaussianActor(3, 2, [16])
    observations = torch.randn(64, 3)
    torch.manual_seed(1)
    actions, log_prob = actor.sample(observations)
    torch.manual_seed(1)
    mean, log_std = actor._mean_log_std(observations)
    pre_tanh = mean + log_std.exp() * torch.randn_like(mean)
    expected = (gaussian_log_prob(pre_tanh, mean, log_std) - torch.log(1 - torch.tanh(pre_tanh) ** 2)).sum(-1)
    torch.testing.assert_close(actions, torch.tanh(pre_tanh))
    torch.testing.assert_close(log_prob, expected, atol=1e-4, rtol=1e-4)


def test_gaussian_log_prob_matches_torch_distributions():
    x, mean, log_std = torch.randn(10), torch.randn(10), torch.randn(10)
    expected = torch.distributions.Normal(mean, log_std.exp()).log_prob(x)
    torch.testing.assert_close(gaussian_log_prob(x, mean, log_std), expected)


class _Constant(nn.Module):
    def __init__(self, value: torch.Tensor):
        super().__init__()
        self.value = value

    def forward(self, x):
        return self.value.expand(x.shape[0], -1)


def test_deployed_policy_normalises_and_scales_to_bounds():
    spec = DatasetSpec.model_validate(
        {
            "observation": {"shape": [2, 2]},
            "action": {"kind": "continuous", "shape": [2], "low": [-2, 0], "high": [2, 10]},
        }
    )
    normalisation = Normalisation(np.full(4, 1.0, np.float32), np.full(4, 2.0, np.float32), 1.0)
    seen = []

    class Spy(nn.Module):
        def forward(self, x):
            seen.append(x)
            return torch.tensor([[-1.0, 0.5]]).expand(x.shape[0], -1)

    policy = DeployedPolicy(Spy(), spec, normalisation)
    action = policy(torch.full((3, 2, 2), 5.0))
    assert seen[0].shape == (3, 4)
    torch.testing.assert_close(seen[0], torch.full((3, 4), 2.0))
    torch.testing.assert_close(action, torch.tensor([[-2.0, 7.5]] * 3))
    # out-of-range head outputs are clipped into the bounds
    too_far = DeployedPolicy(_Constant(torch.tensor([[3.0, -3.0]])), spec, normalisation)
    torch.testing.assert_close(too_far(torch.zeros(1, 2, 2)), torch.tensor([[2.0, 0.0]]))


def test_deployed_policy_discrete_returns_int64_argmax():
    spec = DatasetSpec.model_validate({"observation": {"shape": [3]}, "action": {"kind": "discrete", "n": 4}})
    normalisation = Normalisation(np.zeros(3, np.float32), np.ones(3, np.float32), 1.0)
    policy = DeployedPolicy(nn.Linear(3, 4), spec, normalisation)
    action = policy(torch.randn(5, 3))
    assert action.dtype == torch.int64 and action.shape == (5,)
    assert int(action.min()) >= 0 and int(action.max()) < 4


@pytest.mark.parametrize("tau", [0.0, 1.0])
def test_soft_update_extremes(tau):
    source, target = nn.Linear(2, 2), nn.Linear(2, 2)
    original = target.weight.detach().clone()
    soft_update_(target, source, tau)
    expected = original if tau == 0.0 else source.weight
    torch.testing.assert_close(target.weight.detach(), expected.detach())
