"""Behaviour cloning: supervised learning of the dataset's actions, the baseline every offline RL
algorithm should beat on data of mixed quality.

Continuous actions: a deterministic policy trained by mean squared error, or a Gaussian policy by
negative log-likelihood; discrete actions: cross-entropy. Parameters: `schemas.algorithms.BCParams`.
"""

from __future__ import annotations

import torch
from torch import nn

from schemas.algorithms import BCParams
from schemas.dataset import DiscreteActionSpec
from workers.algos.base import OfflineAlgorithm
from workers.algos.nets import (
    CategoricalActor,
    DeployedPolicy,
    DeterministicActor,
    GaussianActor,
    adam,
    behaviour_fit,
    behaviour_loss,
    compile_update,
)
from workers.algos.replay import Batch


class BC(OfflineAlgorithm):
    name = "bc"
    Params = BCParams
    params: BCParams

    def _build(self) -> None:
        params, spec, device = self.params, self.spec, self.device
        observation_size = spec.observation.size
        self.actor: nn.Module
        if isinstance(spec.action, DiscreteActionSpec):
            self.actor = CategoricalActor(observation_size, spec.action.n, params.hidden_sizes)
        elif params.loss == "nll":
            self.actor = GaussianActor(observation_size, spec.action.size, params.hidden_sizes)
        else:
            self.actor = DeterministicActor(observation_size, spec.action.size, params.hidden_sizes)
        self.actor.to(device)
        self.optimiser = adam(self.actor.parameters(), params.actor_lr, device, params.compile)
        self.register("actor", "optimiser")
        self._update = compile_update(self._update_step, device, params.compile)

    def _update_step(self, batch: Batch) -> dict[str, torch.Tensor]:
        loss = behaviour_loss(self.actor, batch.observations, batch.actions, reduction="mean")
        self.optimiser.zero_grad(set_to_none=True)
        loss.backward()
        self.optimiser.step()
        return {"actor_loss": loss.detach()}

    def update(self, batch: Batch) -> dict[str, torch.Tensor]:
        return self._update(batch)

    def validation_metrics(self, batch: Batch) -> dict[str, torch.Tensor]:
        """The actor's fit to the batch's actions only: BC has no critic, so no TD error and no value."""
        return behaviour_fit(self.actor, batch.observations, batch.actions)

    def policy(self) -> nn.Module:
        return DeployedPolicy(self.actor, self.spec, self.normalisation)
