"""Advantage-Weighted Actor-Critic (Nair, Gupta, Dalal and Levine, 2020).

Twin critics learn Q^pi by TD on r + gamma min Q_target(s', a'), with a' drawn from the policy itself
(no entropy term, no V network). The policy is extracted by weighted maximum likelihood of the dataset's
actions: weight exp(A / lambda) with A = min Q(s, a) - V(s) and V(s) the mean of min Q(s, a') over
`sampled_actions` draws a' ~ pi(.|s) (d3rlpy's estimate; CORL draws one). The weights are a softmax over
the batch times its size, as the paper and d3rlpy normalise them, or (`weighting="clipped"`) exp(A / lambda)
capped at `max_advantage_weight`, as CORL does. The critic is updated first and the advantage read from
the updated critic, as both references do.

The actor is a Gaussian around tanh(f(s)) with a state-independent sigma, log sigma in [-6, 0] (d3rlpy's
bounds; CORL's are [-20, 2] around an unsquashed mean); its samples are clipped to the action box.
Continuous actions only: the method weighs a Gaussian density over actions. The critic evaluates the
current policy rather than the data's behaviour, which is the paper's case for AWAC when offline
training is followed by fine-tuning on new (e.g. online) data; a child starts from its parent's
registered parts like every algorithm here. Parameters and defaults: `schemas.algorithms.AWACParams`.
"""

from __future__ import annotations

import torch
from torch import nn

from schemas.algorithms import AWACParams
from workers.algos.base import OfflineAlgorithm
from workers.algos.nets import (
    ContinuousQEnsemble,
    DeployedPolicy,
    GaussianActor,
    adam,
    behaviour_fit,
    behaviour_loss,
    compile_update,
    ensemble_td_loss,
    frozen_copy,
    soft_update_,
)
from workers.algos.replay import Batch

LOG_STD_BOUNDS = (-6.0, 0.0)
"""d3rlpy's bounds on the actor's log sigma: sigma at most 1, half the width of the action box."""


def advantage_weights(advantage: torch.Tensor, params: AWACParams) -> torch.Tensor:
    """The actor's per-sample weights [B] from the advantages [B]."""
    scaled = advantage / params.lam
    if params.weighting == "softmax":
        return torch.softmax(scaled, dim=0) * advantage.shape[0]
    return torch.exp(scaled).clamp(max=params.max_advantage_weight)


class AWAC(OfflineAlgorithm):
    name = "awac"
    Params = AWACParams
    params: AWACParams
    supports_discrete = False

    def _build(self) -> None:
        params, device = self.params, self.device
        hidden = params.hidden_sizes
        observation_size = self.spec.observation.size
        action_size = self.continuous_action.size
        self.critic = ContinuousQEnsemble(observation_size, action_size, hidden).to(device)
        self.actor = GaussianActor(observation_size, action_size, hidden, log_std_bounds=LOG_STD_BOUNDS).to(device)
        self.target_critic = frozen_copy(self.critic)
        self.register("critic", "target_critic", "actor")

        compiled = params.compile
        self.critic_optimiser = adam(self.critic.parameters(), params.critic_lr, device, compiled)
        self.actor_optimiser = adam(self.actor.parameters(), params.actor_lr, device, compiled)
        self.register("critic_optimiser", "actor_optimiser")
        self._update = compile_update(self._update_step, device, compiled)

    @torch.no_grad()
    def _critic_target(self, batch: Batch) -> torch.Tensor:
        """r + gamma min Q_target(s', a'), a' ~ pi(.|s'): [B]."""
        next_actions = self.actor.sample(batch.next_observations)
        next_q = self.target_critic(batch.next_observations, next_actions).min(0).values
        # Only a terminal stops bootstrapping; a truncated row still bootstraps from s'.
        return batch.rewards + self.params.gamma * (1.0 - batch.terminals) * next_q

    def _update_critic(self, batch: Batch) -> tuple[torch.Tensor, torch.Tensor]:
        target = self._critic_target(batch)
        q = self.critic(batch.observations, batch.actions)
        loss = ensemble_td_loss(q, target)
        self.critic_optimiser.zero_grad(set_to_none=True)
        loss.backward()
        self.critic_optimiser.step()
        return loss.detach(), q.detach().mean()

    @torch.no_grad()
    def _advantage(self, batch: Batch) -> torch.Tensor:
        """min Q(s, a) - mean over a' ~ pi(.|s) of min Q(s, a'), from the (just updated) critic: [B]."""
        count = self.params.sampled_actions
        q = self.critic(batch.observations, batch.actions).min(0).values
        policy_actions = self.actor.sample(batch.observations, count)
        repeated = batch.observations.repeat_interleave(count, dim=0)
        value = self.critic(repeated, policy_actions).min(0).values.view(-1, count).mean(1)
        return q - value

    def _update_actor(self, batch: Batch, advantage: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        weight = advantage_weights(advantage, self.params)
        loss = (weight * behaviour_loss(self.actor, batch.observations, batch.actions)).mean()
        self.actor_optimiser.zero_grad(set_to_none=True)
        loss.backward()
        self.actor_optimiser.step()
        return loss.detach(), weight.max()

    def _update_step(self, batch: Batch) -> dict[str, torch.Tensor]:
        critic_loss, q_mean = self._update_critic(batch)
        advantage = self._advantage(batch)
        actor_loss, max_weight = self._update_actor(batch, advantage)
        soft_update_(self.target_critic, self.critic, self.params.tau)
        return {
            "critic_loss": critic_loss,
            "actor_loss": actor_loss,
            "q_mean": q_mean,
            "advantage_mean": advantage.mean(),
            "max_weight": max_weight,
        }

    def update(self, batch: Batch) -> dict[str, torch.Tensor]:
        return self._update(batch)

    def validation_metrics(self, batch: Batch) -> dict[str, torch.Tensor]:
        """The critic's TD loss, the actor's log-density of the batch's actions, and the value of the
        deployed (mean) action by the critics' minimum."""
        q = self.critic(batch.observations, batch.actions)
        return {
            "td_error": ensemble_td_loss(q, self._critic_target(batch)),
            **behaviour_fit(self.actor, batch.observations, batch.actions),
            "value_mean": self.critic(batch.observations, self.actor(batch.observations)).min(0).values.mean(),
        }

    def policy(self) -> nn.Module:
        return DeployedPolicy(self.actor, self.spec, self.normalisation)
