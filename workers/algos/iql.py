"""Implicit Q-Learning (Kostrikov, Nair and Levine, 2021).

IQL never queries Q at actions outside the dataset. V is an upper expectile of Q over the dataset's
actions (`expectile_loss`), Q regresses on r + gamma V(s'), and the policy is extracted by
advantage-weighted regression: log-likelihood of the dataset's actions weighted by exp(beta A),
clipped. Parameters and defaults: `schemas.algorithms.IQLParams`.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.optim.lr_scheduler import CosineAnnealingLR

from schemas.algorithms import IQLParams
from schemas.dataset import DiscreteActionSpec
from workers.algos.base import OfflineAlgorithm
from workers.algos.nets import (
    CategoricalActor,
    ContinuousQEnsemble,
    DeployedPolicy,
    DeterministicActor,
    DiscreteQEnsemble,
    GaussianActor,
    ValueNetwork,
    adam,
    behaviour_fit,
    behaviour_loss,
    compile_update,
    ensemble_td_loss,
    frozen_copy,
    soft_update_,
)
from workers.algos.replay import Batch


def expectile_loss(difference: torch.Tensor, expectile: float) -> torch.Tensor:
    """Asymmetric squared loss |tau - 1(u < 0)| u^2, mean over the batch; u = Q - V."""
    weight = torch.where(difference < 0, 1.0 - expectile, expectile)
    return (weight * difference.square()).mean()


class IQL(OfflineAlgorithm):
    name = "iql"
    Params = IQLParams
    params: IQLParams

    def _build(self) -> None:
        params, spec, device, total_steps = self.params, self.spec, self.device, self.total_steps
        hidden = params.hidden_sizes
        observation_size = spec.observation.size
        self.critic: nn.Module
        self.actor: nn.Module
        if isinstance(spec.action, DiscreteActionSpec):
            self.critic = DiscreteQEnsemble(observation_size, spec.action.n, hidden)
            self.actor = CategoricalActor(observation_size, spec.action.n, hidden)
        else:
            action_size = spec.action.size
            self.critic = ContinuousQEnsemble(observation_size, action_size, hidden)
            if params.actor == "gaussian":
                self.actor = GaussianActor(observation_size, action_size, hidden)
            else:
                self.actor = DeterministicActor(observation_size, action_size, hidden)
        self.value = ValueNetwork(observation_size, hidden)
        self.critic.to(device)
        self.actor.to(device)
        self.value.to(device)
        self.target_critic = frozen_copy(self.critic)
        self.register("critic", "target_critic", "value", "actor")

        compiled = params.compile
        self.critic_optimiser = adam(self.critic.parameters(), params.critic_lr, device, compiled)
        self.value_optimiser = adam(self.value.parameters(), params.value_lr, device, compiled)
        self.actor_optimiser = adam(self.actor.parameters(), params.actor_lr, device, compiled)
        self.register("critic_optimiser", "value_optimiser", "actor_optimiser")
        self.actor_schedule: CosineAnnealingLR | None = None
        if params.actor_schedule == "cosine":
            self.actor_schedule = CosineAnnealingLR(self.actor_optimiser, T_max=max(total_steps, 1))
            self.register("actor_schedule")
        self._update = compile_update(self._update_step, device, compiled)

    def _q_of_batch(self, critic: nn.Module, observations: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
        """Q(s, a) of every member for the batch's actions: [E, B]."""
        if self.discrete:
            q_all = critic(observations)
            return q_all.gather(-1, actions.view(1, -1, 1).expand(q_all.shape[0], -1, 1)).squeeze(-1)
        return critic(observations, actions)

    def _update_value(self, batch: Batch) -> tuple[torch.Tensor, torch.Tensor]:
        with torch.no_grad():
            target_q = self._q_of_batch(self.target_critic, batch.observations, batch.actions).min(0).values
        value = self.value(batch.observations)
        advantage = target_q - value
        loss = expectile_loss(advantage, self.params.expectile)
        self.value_optimiser.zero_grad(set_to_none=True)
        loss.backward()
        self.value_optimiser.step()
        return loss.detach(), advantage.detach()

    def _critic_target(self, batch: Batch) -> torch.Tensor:
        """r + gamma V(s'): [B]. Only a terminal stops bootstrapping; a truncated row still bootstraps from s'."""
        return batch.rewards + self.params.gamma * (1.0 - batch.terminals) * self.value(batch.next_observations)

    def _update_critic(self, batch: Batch) -> tuple[torch.Tensor, torch.Tensor]:
        with torch.no_grad():
            target = self._critic_target(batch)
        q = self._q_of_batch(self.critic, batch.observations, batch.actions)
        loss = ensemble_td_loss(q, target)
        self.critic_optimiser.zero_grad(set_to_none=True)
        loss.backward()
        self.critic_optimiser.step()
        return loss.detach(), q.detach().mean()

    def _update_actor(self, batch: Batch, advantage: torch.Tensor) -> torch.Tensor:
        weight = torch.exp(self.params.temperature * advantage).clamp(max=self.params.max_advantage_weight)
        loss = (weight * behaviour_loss(self.actor, batch.observations, batch.actions)).mean()
        self.actor_optimiser.zero_grad(set_to_none=True)
        loss.backward()
        self.actor_optimiser.step()
        return loss.detach()

    def _update_step(self, batch: Batch) -> dict[str, torch.Tensor]:
        value_loss, advantage = self._update_value(batch)
        critic_loss, q_mean = self._update_critic(batch)
        actor_loss = self._update_actor(batch, advantage)
        soft_update_(self.target_critic, self.critic, self.params.tau)
        return {
            "value_loss": value_loss,
            "critic_loss": critic_loss,
            "actor_loss": actor_loss,
            "q_mean": q_mean,
            "advantage_mean": advantage.mean(),
        }

    def update(self, batch: Batch) -> dict[str, torch.Tensor]:
        metrics = self._update(batch)
        if self.actor_schedule is not None:
            self.actor_schedule.step()
        return metrics

    def validation_metrics(self, batch: Batch) -> dict[str, torch.Tensor]:
        """The critic's TD loss, the actor's fit to the batch's actions, and V(s) as the value estimate."""
        q = self._q_of_batch(self.critic, batch.observations, batch.actions)
        return {
            "td_error": ensemble_td_loss(q, self._critic_target(batch)),
            **behaviour_fit(self.actor, batch.observations, batch.actions),
            "value_mean": self.value(batch.observations).mean(),
        }

    def policy(self) -> nn.Module:
        return DeployedPolicy(self.actor, self.spec, self.normalisation)
