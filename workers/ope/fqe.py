"""Fitted Q Evaluation (Le, Voloshin and Yue 2019): the Q function of a fixed policy, fitted to logged data.

FQE regresses Q(s, a) on r + gamma * Q_target(s', pi(s')) over the logged transitions (no bootstrap past a
terminal; a truncated row bootstraps, as in training: the cut is the logging's, not the task's), with the
target network a hard copy refreshed every `target_update_interval` steps; each refresh is one iteration of
fitted policy evaluation. Targets are clipped to the range no discounted return can leave, [min(r, 0),
max(r, 0)] / (1 - gamma): a policy the data barely covers otherwise feeds its own overestimates back until
they diverge (seen on CartPole for a policy that always pushes one way).

The estimate is the mean of Q(s0, pi(s0)) over the episodes' initial states (Paine et al. 2020's
initial-state value, as d3rlpy's `InitialStateValueEstimationEvaluator` computes it), in the dataset's
reward units: the infinite-horizon discounted value, which for episodes cut by a time limit includes what
would follow the cut.

The policy is fixed, so its actions at every next observation are computed once, up front, by whatever
runs it (onnxruntime, an exported program, a callable); the loop then only samples indices on the device
and gathers. A stochastic policy is evaluated by one sampled action per row, which keeps the Bellman target
unbiased. Data lives on the device as the training replay holds it (standardised observations, actions
scaled to [-1, 1], rewards times the data's reward scale, undone at the end).

Defaults follow d3rlpy 2.8's `FQEConfig` (learning rate 1e-4, batch 100, hard target update every 100
steps, one critic, [256, 256] ReLU layers as its default vector encoder), except that several critics are
averaged (d3rlpy's target takes their minimum, a pessimism that biases an estimate down).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace

import numpy as np
import torch

from schemas.dataset import ContinuousActionSpec, DatasetSpec
from workers.algos.data import Normalisation, TransitionArrays
from workers.algos.nets import ContinuousQEnsemble, DiscreteQEnsemble, adam, frozen_copy, soft_update_
from workers.algos.replay import ReplayBuffer, normalise_arrays
from workers.ope.policies import DatasetPolicy

ProgressCallback = Callable[[int, dict[str, float]], None]


@dataclass(frozen=True)
class FQESettings:
    """How FQE fits its Q function (defaults: d3rlpy 2.8's `FQEConfig`)."""

    hidden_sizes: tuple[int, ...] = (256, 256)
    learning_rate: float = 1e-4
    batch_size: int = 100
    target_update_interval: int = 100
    critics: int = 1

    def __post_init__(self) -> None:
        if not self.hidden_sizes or min(self.hidden_sizes) < 1:
            raise ValueError("hidden_sizes needs at least one layer of at least one unit")
        if self.learning_rate <= 0 or self.batch_size < 1 or self.target_update_interval < 1 or self.critics < 1:
            raise ValueError("learning_rate must be positive; batch_size, target_update_interval and critics >= 1")


@dataclass(frozen=True)
class FQEFit:
    initial_values: np.ndarray
    """Q(s0, pi(s0)) of each initial state asked for, float64, in the dataset's reward units."""
    loss: float
    """Mean Bellman error (squared, scaled rewards) over the last progress window."""
    steps: int


def fit_fqe(
    policy: DatasetPolicy,
    data: TransitionArrays,
    spec: DatasetSpec,
    initial: np.ndarray,
    *,
    discount: float,
    steps: int,
    seed: int,
    device: torch.device,
    settings: FQESettings = FQESettings(),
    on_progress: ProgressCallback | None = None,
    progress_every: int = 1000,
) -> FQEFit:
    """Fit FQE of `policy` on `data` for `steps` gradient steps; value the rows `initial` index."""
    normalisation = Normalisation.from_arrays(data)
    buffer = ReplayBuffer.from_arrays(data, normalisation, spec.action, device, seed)
    # pi(s') for every row, normalised like the logged actions: the rows with s' and pi(s') in their place.
    next_rows = replace(data, observations=data.next_observations, actions=policy(data.next_observations))
    next_actions = normalise_arrays(next_rows, normalisation, spec.action, device).actions
    start = data.subset(initial)
    start = normalise_arrays(replace(start, actions=policy(start.observations)), normalisation, spec.action, device)

    continuous = isinstance(spec.action, ContinuousActionSpec)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        if continuous:
            critic: torch.nn.Module = ContinuousQEnsemble(
                spec.observation.size, spec.action.size, list(settings.hidden_sizes), settings.critics
            )
        else:
            critic = DiscreteQEnsemble(
                spec.observation.size, spec.action.n, list(settings.hidden_sizes), settings.critics
            )
    critic.to(device)
    target = frozen_copy(critic)
    optimiser = adam(critic.parameters(), settings.learning_rate, device, compiled=False)

    def q_values(network: torch.nn.Module, observations: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
        """[E, B]: each critic's value of the given actions."""
        if continuous:
            return network(observations, actions)
        scores = network(observations)
        return scores.gather(2, actions.view(1, -1, 1).expand(scores.shape[0], -1, 1)).squeeze(2)

    # No discounted return leaves [min r, max r] / (1 - gamma); clipping targets there keeps a policy the data
    # barely covers from feeding its own overestimates back until they diverge.
    value_low = min(float(buffer.rewards.min()), 0.0) / (1.0 - discount)
    value_high = max(float(buffer.rewards.max()), 0.0) / (1.0 - discount)
    stores = (buffer.observations, buffer.actions, buffer.rewards, buffer.next_observations, buffer.terminals)
    loss_sum = torch.zeros((), device=device)
    window, last_loss = 0, float("nan")
    for step in range(1, steps + 1):
        index = torch.randint(0, len(buffer), (settings.batch_size,), device=device, generator=buffer.generator)
        observations, actions, rewards, next_observations, terminals = (
            store.index_select(0, index) for store in stores
        )
        with torch.no_grad():
            next_value = q_values(target, next_observations, next_actions.index_select(0, index)).mean(0)
            bellman_target = (rewards + discount * (1.0 - terminals) * next_value).clamp_(value_low, value_high)
        predicted = q_values(critic, observations, actions)
        # Summed over critics, so each one learns at the set rate however many there are.
        loss = (predicted - bellman_target).square().mean(1).sum()
        optimiser.zero_grad(set_to_none=True)
        loss.backward()
        optimiser.step()
        if step % settings.target_update_interval == 0:
            soft_update_(target, critic, 1.0)
        loss_sum += loss.detach() / settings.critics
        window += 1
        if step % progress_every == 0 or step == steps:
            last_loss = float(loss_sum) / window
            loss_sum.zero_()
            window = 0
            if on_progress is not None:
                on_progress(step, {"fqe_loss": last_loss})
    with torch.no_grad():
        values = q_values(critic, start.observations, start.actions).mean(0)
    initial_values = values.double().cpu().numpy() / normalisation.reward_scale
    return FQEFit(initial_values=initial_values, loss=last_loss, steps=steps)
