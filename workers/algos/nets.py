"""Networks shared by the algorithms, and the small tools that keep their updates fast.

Ensembles (twin critics, the COMBO dynamics ensemble) are one batched network with the ensemble
dimension first, so N members cost one matrix multiply per layer rather than N.
Actors work on standardised observations and actions scaled to [-1, 1]; `DeployedPolicy` wraps one
with the dataset's normalisation and action bounds for export.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Iterable, Sequence
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from schemas.dataset import ContinuousActionSpec, DatasetSpec
from workers.algos.data import Normalisation

Activation = Callable[[], nn.Module]


def mlp(
    input_size: int,
    output_size: int,
    hidden_sizes: Sequence[int],
    activation: Activation = nn.ReLU,
    layer_norm: bool = False,
) -> nn.Sequential:
    """A plain multilayer perceptron; no activation after the last layer."""
    layers: list[nn.Module] = []
    size = input_size
    for hidden in hidden_sizes:
        layers.append(nn.Linear(size, hidden))
        if layer_norm:
            layers.append(nn.LayerNorm(hidden))
        layers.append(activation())
        size = hidden
    layers.append(nn.Linear(size, output_size))
    return nn.Sequential(*layers)


class EnsembleLinear(nn.Module):
    """`ensemble_size` independent linear layers applied as one batched matrix multiply.

    Input [E, B, in] (or [B, in], shared by every member) -> output [E, B, out].
    Each member is initialised like `nn.Linear`.
    """

    def __init__(self, input_size: int, output_size: int, ensemble_size: int) -> None:
        super().__init__()
        self.ensemble_size = ensemble_size
        bound = 1.0 / math.sqrt(input_size)
        self.weight = nn.Parameter(torch.empty(ensemble_size, input_size, output_size).uniform_(-bound, bound))
        self.bias = nn.Parameter(torch.empty(ensemble_size, 1, output_size).uniform_(-bound, bound))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.weight.shape[-1] == 1:
            # One output (a critic's head): multiply-and-sum. As a batched matrix product its backward
            # becomes batched outer and matrix-vector products, which took 1.7x (7,936 rows) to 3.5x
            # (256 rows) as long on one CPU core.
            return (x * self.weight.transpose(1, 2)).sum(-1, keepdim=True) + self.bias
        if x.dim() == 2:
            x = x.expand(self.ensemble_size, *x.shape)
        return torch.baddbmm(self.bias, x, self.weight)


class EnsembleMLP(nn.Module):
    """An ensemble of MLPs as one network: [B, in] or [E, B, in] -> [E, B, out]."""

    def __init__(
        self,
        input_size: int,
        output_size: int,
        ensemble_size: int,
        hidden_sizes: Sequence[int],
        activation: Activation = nn.ReLU,
    ) -> None:
        super().__init__()
        self.ensemble_size = ensemble_size
        sizes = [input_size, *hidden_sizes]
        self.hidden = nn.ModuleList(EnsembleLinear(a, b, ensemble_size) for a, b in zip(sizes[:-1], sizes[1:]))
        self.activations = nn.ModuleList(activation() for _ in hidden_sizes)
        self.output = EnsembleLinear(sizes[-1], output_size, ensemble_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for layer, activation in zip(self.hidden, self.activations):
            x = activation(layer(x))
        return self.output(x)


class ContinuousQEnsemble(nn.Module):
    """E critics Q(s, a) in one network: (obs [B, O], action [B, A]) -> [E, B]."""

    def __init__(self, observation_size: int, action_size: int, hidden_sizes: Sequence[int], ensemble_size: int = 2):
        super().__init__()
        self.net = EnsembleMLP(observation_size + action_size, 1, ensemble_size, hidden_sizes)

    def forward(self, observations: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
        return self.net(torch.cat([observations, actions], dim=-1)).squeeze(-1)


class DiscreteQEnsemble(nn.Module):
    """E critics over all n actions in one network: obs [B, O] -> [E, B, n]."""

    def __init__(self, observation_size: int, action_count: int, hidden_sizes: Sequence[int], ensemble_size: int = 2):
        super().__init__()
        self.net = EnsembleMLP(observation_size, action_count, ensemble_size, hidden_sizes)

    def forward(self, observations: torch.Tensor) -> torch.Tensor:
        return self.net(observations)


class ValueNetwork(nn.Module):
    """V(s): obs [B, O] -> [B]."""

    def __init__(self, observation_size: int, hidden_sizes: Sequence[int]) -> None:
        super().__init__()
        self.net = mlp(observation_size, 1, hidden_sizes)

    def forward(self, observations: torch.Tensor) -> torch.Tensor:
        return self.net(observations).squeeze(-1)


class DeterministicActor(nn.Module):
    """a = tanh(f(s)), in [-1, 1]."""

    def __init__(self, observation_size: int, action_size: int, hidden_sizes: Sequence[int]) -> None:
        super().__init__()
        self.net = mlp(observation_size, action_size, hidden_sizes)

    def forward(self, observations: torch.Tensor) -> torch.Tensor:
        return torch.tanh(self.net(observations))


class GaussianActor(nn.Module):
    """N(tanh(f(s)), sigma) with a state-independent sigma, as in IQL; `forward` is the mean."""

    def __init__(
        self,
        observation_size: int,
        action_size: int,
        hidden_sizes: Sequence[int],
        log_std_bounds: tuple[float, float] = (-5.0, 2.0),
    ) -> None:
        super().__init__()
        self.net = mlp(observation_size, action_size, hidden_sizes)
        self.log_std = nn.Parameter(torch.zeros(action_size))
        self.log_std_bounds = log_std_bounds

    def forward(self, observations: torch.Tensor) -> torch.Tensor:
        return torch.tanh(self.net(observations))

    def log_prob(self, observations: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
        """Log-density of `actions` [B, A]; returns [B]."""
        mean = self(observations)
        log_std = self.log_std.clamp(*self.log_std_bounds)
        return gaussian_log_prob(actions, mean, log_std).sum(-1)

    def sample(self, observations: torch.Tensor, count: int = 1) -> torch.Tensor:
        """`count` actions per state drawn from the policy and clipped to [-1, 1], [B * count, A] (each
        state's `count` rows together; torch's global RNG)."""
        mean = self(observations)
        if count > 1:
            mean = mean.repeat_interleave(count, dim=0)
        log_std = self.log_std.clamp(*self.log_std_bounds)
        return (mean + log_std.exp() * torch.randn_like(mean)).clamp(-1.0, 1.0)


class TanhGaussianActor(nn.Module):
    """SAC's actor: u ~ N(mu(s), sigma(s)), a = tanh(u); `forward` is the deterministic tanh(mu)."""

    def __init__(
        self,
        observation_size: int,
        action_size: int,
        hidden_sizes: Sequence[int],
        log_std_bounds: tuple[float, float] = (-20.0, 2.0),
    ) -> None:
        super().__init__()
        self.net = mlp(observation_size, 2 * action_size, hidden_sizes)
        self.log_std_bounds = log_std_bounds

    def _mean_log_std(self, observations: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        mean, log_std = self.net(observations).chunk(2, dim=-1)
        return mean, log_std.clamp(*self.log_std_bounds)

    def forward(self, observations: torch.Tensor) -> torch.Tensor:
        return torch.tanh(self._mean_log_std(observations)[0])

    def sample(self, observations: torch.Tensor, count: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
        """`count` reparameterised actions per state in [-1, 1], [B * count, A] (each state's `count` rows
        together), and their log-densities [B * count] (torch's global RNG).

        The network runs once per state however many actions are drawn from its distribution.
        """
        mean, log_std = self._mean_log_std(observations)
        if count > 1:
            mean, log_std = mean.repeat_interleave(count, dim=0), log_std.repeat_interleave(count, dim=0)
        pre_tanh = mean + log_std.exp() * torch.randn_like(mean)
        # log|d tanh(u)/du| = 2 (log 2 - u - softplus(-2u)), stable for large |u|
        log_det = 2.0 * (math.log(2.0) - pre_tanh - F.softplus(-2.0 * pre_tanh))
        log_prob = (gaussian_log_prob(pre_tanh, mean, log_std) - log_det).sum(-1)
        return torch.tanh(pre_tanh), log_prob

    def log_prob(self, observations: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
        """Log-density [B] of given actions in [-1, 1] (kept just inside, where tanh is invertible)."""
        mean, log_std = self._mean_log_std(observations)
        pre_tanh = torch.atanh(actions.clamp(-1.0 + 1e-6, 1.0 - 1e-6))
        log_det = 2.0 * (math.log(2.0) - pre_tanh - F.softplus(-2.0 * pre_tanh))
        return (gaussian_log_prob(pre_tanh, mean, log_std) - log_det).sum(-1)


class CategoricalActor(nn.Module):
    """Logits over n discrete actions: obs [B, O] -> [B, n]."""

    def __init__(self, observation_size: int, action_count: int, hidden_sizes: Sequence[int]) -> None:
        super().__init__()
        self.net = mlp(observation_size, action_count, hidden_sizes)

    def forward(self, observations: torch.Tensor) -> torch.Tensor:
        return self.net(observations)


class MeanQHead(nn.Module):
    """Greedy scores from a discrete Q ensemble (the mean over members) for a Q-learning policy."""

    def __init__(self, critic: DiscreteQEnsemble) -> None:
        super().__init__()
        self.critic = critic

    def forward(self, observations: torch.Tensor) -> torch.Tensor:
        return self.critic(observations).mean(0)


def behaviour_loss(
    actor: nn.Module, observations: torch.Tensor, actions: torch.Tensor, reduction: Literal["none", "mean"] = "none"
) -> torch.Tensor:
    """How badly `actor` explains the dataset's actions, per sample [B] or (`reduction="mean"`) their mean:
    cross-entropy for a categorical actor, negative log-likelihood for a Gaussian one, squared error for a
    deterministic one. BC minimises the mean; IQL weights each sample by exp(beta A) first.
    """
    if isinstance(actor, CategoricalActor):
        # torch's own mean, not .mean() of the per-sample losses, which sums in another order (BC's numbers)
        return F.cross_entropy(actor(observations), actions, reduction=reduction)
    if isinstance(actor, GaussianActor):
        per_sample = -actor.log_prob(observations, actions)
    else:
        per_sample = (actor(observations) - actions).square().sum(-1)
    return per_sample.mean() if reduction == "mean" else per_sample


def behaviour_fit(actor: nn.Module, observations: torch.Tensor, actions: torch.Tensor) -> dict[str, torch.Tensor]:
    """How well `actor` explains the actions, for validation: `log_likelihood` (mean log-probability of a
    categorical actor, mean log-density of a Gaussian one) or, for a deterministic actor, which has no
    density, `action_squared_error` (mean over rows of the squared distance, actions scaled to [-1, 1])."""
    loss = behaviour_loss(actor, observations, actions, reduction="mean")
    if isinstance(actor, (CategoricalActor, GaussianActor)):
        return {"log_likelihood": -loss}
    return {"action_squared_error": loss}


def ensemble_td_loss(q: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Each member's mean squared TD error, summed over the members: Q [E, B] against the target [B]."""
    return (q - target.unsqueeze(0)).square().mean(-1).sum()


def gaussian_log_prob(x: torch.Tensor, mean: torch.Tensor, log_std: torch.Tensor) -> torch.Tensor:
    """Element-wise log N(x; mean, exp(log_std))."""
    return -0.5 * ((x - mean) * torch.exp(-log_std)) ** 2 - log_std - 0.5 * math.log(2.0 * math.pi)


class DeployedPolicy(nn.Module):
    """Raw observations [N, *obs_shape] -> actions in the dataset's space.

    `head` maps standardised flat observations to actions in [-1, 1] (continuous) or to scores over
    the n actions (discrete; the policy takes the argmax and returns int64 [N]). Normalisation and
    the affine map to [low, high] are buffers here, so an export carries them.
    """

    def __init__(self, head: nn.Module, spec: DatasetSpec, normalisation: Normalisation) -> None:
        super().__init__()
        self.head = head
        self.observation_shape = tuple(spec.observation.shape)
        self.register_buffer("observation_mean", torch.as_tensor(normalisation.observation_mean, dtype=torch.float32))
        self.register_buffer("observation_std", torch.as_tensor(normalisation.observation_std, dtype=torch.float32))
        self.continuous = isinstance(spec.action, ContinuousActionSpec)
        if isinstance(spec.action, ContinuousActionSpec):
            self.action_shape = tuple(spec.action.shape)
            self.register_buffer("action_low", torch.tensor(spec.action.low, dtype=torch.float32))
            self.register_buffer("action_high", torch.tensor(spec.action.high, dtype=torch.float32))

    def forward(self, observations: torch.Tensor) -> torch.Tensor:
        flat = observations.reshape(observations.shape[0], -1)
        scores = self.head((flat - self.observation_mean) / self.observation_std)
        if not self.continuous:
            return scores.argmax(-1)
        action = self.action_low + (scores + 1.0) * 0.5 * (self.action_high - self.action_low)
        action = torch.minimum(torch.maximum(action, self.action_low), self.action_high)
        return action.reshape(observations.shape[0], *self.action_shape)


@torch.no_grad()
def soft_update_(target: nn.Module, source: nn.Module, tau: float) -> None:
    """target <- (1 - tau) target + tau source, in place (no new tensors, fine inside CUDA graphs)."""
    torch._foreach_lerp_(list(target.parameters()), list(source.parameters()), tau)


def frozen_copy(module: nn.Module) -> nn.Module:
    """A target network: a copy that no optimiser sees and no gradient reaches."""
    target = copy.deepcopy(module)
    target.requires_grad_(False)
    return target


def adam(parameters: Iterable[nn.Parameter], lr: float, device: torch.device, compiled: bool) -> torch.optim.Adam:
    """Adam; capturable on CUDA when the update is compiled, so its step stays on the device.

    Otherwise the fused kernel (CPU and CUDA): one pass over all parameters instead of a handful of
    small ops per tensor; on one CPU core that gave IQL about a fifth more steps per second.
    """
    if compiled:
        capturable = device.type == "cuda"
        lr_value = torch.tensor(lr, device=device) if capturable else lr
        return torch.optim.Adam(parameters, lr=lr_value, capturable=capturable)
    return torch.optim.Adam(parameters, lr=lr, fused=True)


def compile_update(function: Callable, device: torch.device, enabled: bool) -> Callable:
    """torch.compile the update when asked; CUDA graphs ("reduce-overhead") on CUDA."""
    if not enabled:
        return function
    mode = "reduce-overhead" if device.type == "cuda" else None
    return torch.compile(function, mode=mode, fullgraph=False)
