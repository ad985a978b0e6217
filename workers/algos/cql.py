"""Conservative Q-Learning (Kumar, Zhou, Tucker and Levine, 2020), the CQL(H) variant.

Continuous actions: SAC (tanh-Gaussian actor, twin critics, automatic entropy temperature) whose
critic loss adds alpha * (logsumexp_a Q(s, a) - Q(s, a_data)). The logsumexp over all actions is
estimated by importance sampling from `sampled_actions` uniform actions, actions of pi(.|s) and of
pi(.|s'), each divided by its proposal density. With `lagrange_threshold`, alpha is tuned so the
gap stays at the threshold; with `bc_steps`, the policy first clones the dataset's actions.
Discrete actions: Q-learning whose logsumexp runs over every action.
Parameters and defaults: `schemas.algorithms.CQLParams`.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from schemas.algorithms import CQLParams
from schemas.dataset import DiscreteActionSpec
from workers.algos.base import OfflineAlgorithm
from workers.algos.nets import (
    ContinuousQEnsemble,
    DeployedPolicy,
    DiscreteQEnsemble,
    MeanQHead,
    TanhGaussianActor,
    adam,
    compile_update,
    ensemble_td_loss,
    frozen_copy,
    soft_update_,
)
from workers.algos.replay import Batch

MAX_LAGRANGE_MULTIPLIER = 1e6


def conservative_gap(q_proposals: torch.Tensor, q_data: torch.Tensor) -> torch.Tensor:
    """Per critic: mean over states of logsumexp_a Q(s, a) - Q(s, a_data).

    `q_proposals` [E, B, M] holds Q at M actions per state (already minus the log proposal density
    when the actions were sampled), `q_data` [E, B] Q at the dataset's actions. Returns [E].
    """
    return (torch.logsumexp(q_proposals, dim=-1) - q_data).mean(-1)


class CQL(OfflineAlgorithm):
    name = "cql"
    Params = CQLParams
    params: CQLParams

    def _build(self) -> None:
        params, spec, device = self.params, self.spec, self.device
        hidden = params.hidden_sizes
        observation_size = spec.observation.size
        compiled = params.compile
        self.critic: nn.Module
        if isinstance(spec.action, DiscreteActionSpec):
            self.critic = DiscreteQEnsemble(observation_size, spec.action.n, hidden).to(device)
        else:
            self.action_size = spec.action.size
            self.critic = ContinuousQEnsemble(observation_size, self.action_size, hidden).to(device)
            self.actor = TanhGaussianActor(observation_size, self.action_size, hidden).to(device)
            self.actor_optimiser = adam(self.actor.parameters(), params.actor_lr, device, compiled)
            self.log_entropy_temperature = nn.Parameter(
                torch.tensor(math.log(params.initial_entropy_temperature), device=device)
            )
            self.entropy_optimiser = adam([self.log_entropy_temperature], params.entropy_lr, device, compiled)
            self.target_entropy = (
                params.target_entropy if params.target_entropy is not None else -float(self.action_size)
            )
            self.register("actor", "actor_optimiser", "log_entropy_temperature", "entropy_optimiser")
        self.target_critic = frozen_copy(self.critic)
        self.critic_optimiser = adam(self.critic.parameters(), params.critic_lr, device, compiled)
        self.log_lagrange_multiplier = nn.Parameter(torch.zeros((), device=device))
        self.lagrange_optimiser = adam([self.log_lagrange_multiplier], params.lagrange_lr, device, compiled)
        self.register("critic", "target_critic", "critic_optimiser", "log_lagrange_multiplier", "lagrange_optimiser")
        step = self._discrete_step if self.discrete else self._continuous_step
        self._update = compile_update(step, device, compiled)

    # continuous actions: SAC + CQL(H)

    def _update_actor(self, batch: Batch) -> dict[str, torch.Tensor]:
        actions, log_prob = self.actor.sample(batch.observations)
        temperature = self.log_entropy_temperature.detach().exp()
        # bc_steps first, so the default (0) never reads the step: a changing int would make a
        # compiled update recompile.
        if self.params.bc_steps and self.step < self.params.bc_steps:
            objective = self.actor.log_prob(batch.observations, batch.actions)
        else:
            objective = self.critic(batch.observations, actions).min(0).values
        actor_loss = (temperature * log_prob - objective).mean()
        self.actor_optimiser.zero_grad(set_to_none=True)
        actor_loss.backward()
        self.actor_optimiser.step()

        # After the actor's backward, so no graph is walked twice (compiled graphs free theirs whole).
        log_prob = log_prob.detach()
        temperature_loss = -(self.log_entropy_temperature * (log_prob + self.target_entropy)).mean()
        self.entropy_optimiser.zero_grad(set_to_none=True)
        temperature_loss.backward()
        self.entropy_optimiser.step()
        return {"actor_loss": actor_loss.detach(), "entropy_temperature": temperature, "entropy": -log_prob.mean()}

    def _proposal_q(self, batch: Batch) -> torch.Tensor:
        """Q at sampled actions minus their log proposal density: [E, B, 3 * sampled_actions]."""
        count = self.params.sampled_actions
        size = batch.observations.shape[0]
        with torch.no_grad():
            observations = batch.observations.repeat_interleave(count, dim=0)
            uniform = torch.rand(size * count, self.action_size, device=self.device) * 2.0 - 1.0
            uniform_log_density = -self.action_size * math.log(2.0)
            current, current_log_prob = self.actor.sample(batch.observations, count)
            following, following_log_prob = self.actor.sample(batch.next_observations, count)
        # All three sets are scored at s; pi(.|s') only proposes actions (as in the paper's code).
        stacked_actions = torch.cat([uniform, current, following])
        q = self.critic(observations.repeat(3, 1), stacked_actions)
        log_density = torch.cat(
            [torch.full_like(current_log_prob, uniform_log_density), current_log_prob, following_log_prob]
        )
        corrected = (q - log_density).reshape(q.shape[0], 3, size, count)
        return corrected.permute(0, 2, 1, 3).reshape(q.shape[0], size, 3 * count)

    @torch.no_grad()
    def _soft_target(self, batch: Batch, temperature: torch.Tensor) -> torch.Tensor:
        """SAC's Bellman target from the twin target critics' minimum, with the entropy bonus when backed up."""
        next_actions, next_log_prob = self.actor.sample(batch.next_observations)
        next_q = self.target_critic(batch.next_observations, next_actions).min(0).values
        if self.params.backup_entropy:
            next_q = next_q - temperature * next_log_prob
        # Only a terminal stops bootstrapping; a truncated row still bootstraps from s'.
        return batch.rewards + self.params.gamma * (1.0 - batch.terminals) * next_q

    def _continuous_step(self, batch: Batch) -> dict[str, torch.Tensor]:
        metrics = self._update_actor(batch)
        target = self._soft_target(batch, metrics["entropy_temperature"])
        q_data = self.critic(batch.observations, batch.actions)
        metrics.update(self._critic_step(q_data, target, self._conservative_gap(batch, q_data)))
        return metrics

    def _conservative_gap(self, batch: Batch, q_data: torch.Tensor) -> torch.Tensor:
        """The term the critic keeps small, per critic [E]: logsumexp over the proposals minus Q on the data.

        `q_data` [E, B] is Q at the batch's own actions. COMBO overrides this to push down at model states.
        """
        return conservative_gap(self._proposal_q(batch), q_data)

    # discrete actions: Q-learning + CQL(H)

    @torch.no_grad()
    def _discrete_target(self, batch: Batch) -> torch.Tensor:
        next_q = self.target_critic(batch.next_observations).min(0).values.max(-1).values
        return batch.rewards + self.params.gamma * (1.0 - batch.terminals) * next_q

    def _discrete_step(self, batch: Batch) -> dict[str, torch.Tensor]:
        target = self._discrete_target(batch)
        q_all = self.critic(batch.observations)
        index = batch.actions.view(1, -1, 1).expand(q_all.shape[0], -1, 1)
        q_data = q_all.gather(-1, index).squeeze(-1)
        return self._critic_step(q_data, target, conservative_gap(q_all, q_data))

    # shared

    def _conservative_weight(self) -> torch.Tensor:
        weight = torch.tensor(self.params.conservative_weight, device=self.device)
        if self.params.lagrange_threshold is None:
            return weight
        multiplier = self.log_lagrange_multiplier.exp().clamp(0.0, MAX_LAGRANGE_MULTIPLIER)
        return weight * multiplier

    def _critic_step(self, q_data: torch.Tensor, target: torch.Tensor, gap: torch.Tensor) -> dict[str, torch.Tensor]:
        metrics: dict[str, torch.Tensor] = {}
        threshold = self.params.lagrange_threshold
        if threshold is not None:
            # Gradient ascent on the multiplier: it grows while the gap exceeds the threshold.
            lagrange_loss = -(self._conservative_weight() * (gap.detach() - threshold)).sum()
            self.lagrange_optimiser.zero_grad(set_to_none=True)
            lagrange_loss.backward()
            self.lagrange_optimiser.step()
            metrics["lagrange_multiplier"] = self.log_lagrange_multiplier.detach().exp()
        weight = self._conservative_weight().detach()
        td_loss = ensemble_td_loss(q_data, target)
        conservative_loss = weight * (gap - (threshold or 0.0)).sum()
        loss = td_loss + conservative_loss
        self.critic_optimiser.zero_grad(set_to_none=True)
        loss.backward()
        self.critic_optimiser.step()
        soft_update_(self.target_critic, self.critic, self.params.tau)
        metrics.update(
            critic_loss=td_loss.detach(),
            conservative_loss=conservative_loss.detach(),
            conservative_gap=gap.detach().mean(),
            q_mean=q_data.detach().mean(),
        )
        return metrics

    def update(self, batch: Batch) -> dict[str, torch.Tensor]:
        return self._update(batch)

    def validation_metrics(self, batch: Batch) -> dict[str, torch.Tensor]:
        """The critic's TD loss (without the conservative term) and the value of the deployed policy's action
        (the critics' minimum); continuous: the actor's log-density of the batch's actions; discrete, where
        the greedy policy has no density: `action_agreement`, the share of rows whose action it takes."""
        if self.discrete:
            q_all = self.critic(batch.observations)
            q_data = q_all.gather(-1, batch.actions.view(1, -1, 1).expand(q_all.shape[0], -1, 1)).squeeze(-1)
            greedy = q_all.mean(0).argmax(-1)
            return {
                "td_error": ensemble_td_loss(q_data, self._discrete_target(batch)),
                "action_agreement": (greedy == batch.actions).float().mean(),
                "value_mean": q_all.min(0).values.gather(-1, greedy.unsqueeze(-1)).mean(),
            }
        target = self._soft_target(batch, self.log_entropy_temperature.exp())
        q_data = self.critic(batch.observations, batch.actions)
        return {
            "td_error": ensemble_td_loss(q_data, target),
            "log_likelihood": self.actor.log_prob(batch.observations, batch.actions).mean(),
            "value_mean": self.critic(batch.observations, self.actor(batch.observations)).min(0).values.mean(),
        }

    def policy(self) -> nn.Module:
        head = MeanQHead(self.critic) if self.discrete else self.actor
        return DeployedPolicy(head, self.spec, self.normalisation)
