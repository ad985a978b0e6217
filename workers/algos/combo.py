"""Conservative Offline Model-Based Policy Optimisation (Yu, Kumar, Rafailov, Rajeswaran, Levine and Finn, 2021).

COMBO is CQL(H) on a richer batch. A dynamics ensemble learnt from the dataset (`workers.algos.dynamics`)
imagines short rollouts of the current policy from dataset states; every batch takes a fraction `real_ratio`
of its rows from the dataset and the rest from those rollouts. The Bellman error covers the whole batch, and
the conservative term pushes Q down at the model's states (logsumexp over sampled actions) and up on the
dataset's own transitions, so values of states the model invents without support stay low.

Rollouts are refreshed every `rollout_interval` updates and kept, on the device, in a model buffer holding
`model_retain_refreshes` refreshes. Their start states come from a pool of dataset observations filled in
`prepare` and renewed from the observations of every batch the training loop hands in. The model buffer, the
pool and the dynamics model are part of `state_dict`, so a resumed run (which skips `prepare`) continues
exactly; with the paper's sizes the model buffer holds 1.25M transitions, which dominates a checkpoint.

The dynamics model depends only on the dataset version and the dynamics parameters (it trains from a fixed
seed, without touching the run's RNG), so a saved one can be handed to any later run on the same version:
`prepare(data, parts)` looks for one in `parts` under `dynamics_key()` (which names the parameters it was
trained with) and stores the one it trains there otherwise; `load_dynamics(blob)` before `prepare` supplies
one directly, and `dynamics_bytes()` gives it back. `prepare` after `load_state_dict` (fine-tuning) trains
a model for the new data unless one is supplied. Parameters and defaults:
`schemas.algorithms.COMBOParams`. Continuous actions only.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

import numpy as np
import torch

from schemas.algorithms import COMBOParams
from workers.algos.base import PreparedParts
from workers.algos.cql import CQL
from workers.algos.data import TransitionArrays
from workers.algos.dynamics import DynamicsModel, fit_dynamics
from workers.algos.replay import Batch, ReplayBuffer

DYNAMICS_SEED = 0
"""Fixed, so a run's result never depends on whether its dynamics model was trained or loaded."""

DYNAMICS_FIELDS = (
    "ensemble_size",
    "elites",
    "dynamics_hidden_sizes",
    "dynamics_lr",
    "dynamics_weight_decay",
    "dynamics_batch_size",
    "holdout_fraction",
    "max_holdout",
    "early_stopping_patience",
    "max_dynamics_epochs",
)
"""The parameters a trained dynamics model depends on (with the dataset version)."""


def dynamics_key(params: COMBOParams) -> str:
    """Names the dynamics parameters: a saved model fits another run when the dataset version and this agree."""
    settings = {name: getattr(params, name) for name in DYNAMICS_FIELDS}
    digest = hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:16]
    return f"combo-dynamics-{digest}"


class COMBO(CQL):
    name = "combo"
    Params = COMBOParams
    params: COMBOParams
    supports_discrete = False
    streams = False
    resident_reason = "its dynamics model trains on the whole version on the device"

    def _build(self) -> None:
        super()._build()
        normalisation, device = self.normalisation, self.device
        self.dynamics: DynamicsModel | None = None
        self.dynamics_summary: dict[str, float] = {}
        """How the dynamics fit went, when `prepare` trained it (empty when it was loaded)."""
        self._supplied_dynamics: DynamicsModel | None = None
        self._empty_rollouts()
        self.observation_mean = torch.as_tensor(normalisation.observation_mean, dtype=torch.float32, device=device)
        self.observation_std = torch.as_tensor(normalisation.observation_std, dtype=torch.float32, device=device)
        self.action_low = torch.tensor(self.continuous_action.low, dtype=torch.float32, device=device)
        self.action_high = torch.tensor(self.continuous_action.high, dtype=torch.float32, device=device)

    # the dynamics model: trained once per dataset version, then loaded

    def dynamics_key(self) -> str:
        return dynamics_key(self.params)

    def load_dynamics(self, blob: bytes) -> None:
        """Use a saved dynamics model (from `dynamics_bytes`) instead of training one in `prepare`."""
        model = DynamicsModel.from_bytes(blob, self.device)
        expected = {
            "observation_size": self.spec.observation.size,
            "action_size": self.action_size,
            "ensemble_size": self.params.ensemble_size,
            "elite_count": self.params.elites,
            "hidden_sizes": list(self.params.dynamics_hidden_sizes),
        }
        mismatched = {name: value for name, value in expected.items() if model.config[name] != value}
        if mismatched:
            found = {name: model.config[name] for name in mismatched}
            raise ValueError(f"the saved dynamics model has {found}; this run needs {mismatched}")
        self._supplied_dynamics = model

    def dynamics_bytes(self) -> bytes:
        """The dynamics model, to store beside the dataset version it was trained on."""
        if self.dynamics is None:
            raise RuntimeError("no dynamics model yet: call prepare first")
        return self.dynamics.to_bytes()

    def prepare(self, data: TransitionArrays, parts: PreparedParts | None = None) -> dict[str, str]:
        """Train the dynamics model on `data` unless `parts` holds one under `dynamics_key()` or `load_dynamics`
        supplied one, and start the rollouts afresh; a model trained here goes to `parts`.

        Also when fine-tuning (after `load_state_dict` of a parent run): the parent's model and rollouts
        belong to the parent's data. Says whether the dynamics model was "reused" or "trained".
        """
        key = self.dynamics_key()
        stored = parts.get(key) if parts is not None else None
        if stored is not None:
            self.load_dynamics(stored)
        reused = self._supplied_dynamics is not None
        if reused:
            self.dynamics, self.dynamics_summary = self._supplied_dynamics, {}
        else:
            self.dynamics, self.dynamics_summary = fit_dynamics(
                data,
                ensemble_size=self.params.ensemble_size,
                elite_count=self.params.elites,
                hidden_sizes=self.params.dynamics_hidden_sizes,
                learning_rate=self.params.dynamics_lr,
                weight_decay=self.params.dynamics_weight_decay,
                batch_size=self.params.dynamics_batch_size,
                holdout_fraction=self.params.holdout_fraction,
                max_holdout=self.params.max_holdout,
                max_epochs=self.params.max_dynamics_epochs,
                patience=self.params.early_stopping_patience,
                device=self.device,
                seed=DYNAMICS_SEED,
            )
        self._empty_rollouts()
        count = min(len(data), len(self.start_states))
        chosen = torch.randperm(len(data), generator=torch.Generator().manual_seed(self.seed))[:count].numpy()
        observations = torch.as_tensor(np.ascontiguousarray(data.observations[chosen]), device=self.device)
        self._remember_start_states((observations - self.observation_mean) / self.observation_std)
        if not reused and parts is not None:
            parts.put(key, self.dynamics_bytes())
        return {"dynamics": "reused" if reused else "trained"}

    # the update

    def update(self, batch: Batch) -> dict[str, torch.Tensor]:
        """`batch` is dataset rows; its first `real_ratio` share is kept and the rest comes from the model."""
        if self.dynamics is None:
            raise RuntimeError("COMBO needs its dynamics model: call prepare (or load_state_dict) first")
        self._remember_start_states(batch.observations)
        if self.step % self.params.rollout_interval == 0 or len(self.model_buffer) == 0:
            self._rollout()
        size = batch.rewards.shape[0]
        real_rows = round(size * self.params.real_ratio)
        model_rows = self.model_buffer.sample(size - real_rows)
        metrics = self._update(Batch.cat(Batch(*(part[:real_rows] for part in batch)), model_rows))
        metrics["model_reward_mean"] = model_rows.rewards.mean()
        return metrics

    def _conservative_gap(self, batch: Batch, q_data: torch.Tensor) -> torch.Tensor:
        """CQL's gap on the mixed batch: Q pushed down at the model's states (logsumexp over the proposals)
        and up on the dataset's rows, which are the batch's first `real_ratio` share (see `update`)."""
        real_rows = round(batch.rewards.shape[0] * self.params.real_ratio)
        model_rows = Batch(*(part[real_rows:] for part in batch))
        push_down = torch.logsumexp(self._proposal_q(model_rows), dim=-1).mean(-1)
        push_up = q_data[:, :real_rows].mean(-1)
        return push_down - push_up

    # rollouts: may synchronise with the host (a few times per refresh, not per step)

    def _empty_rollouts(self) -> None:
        params = self.params
        self.model_buffer = ReplayBuffer(
            params.rollout_batch_size * params.rollout_length * params.model_retain_refreshes,
            self.spec.observation.size,
            self.action_size,
            self.device,
            self.seed + 1,
        )
        self.start_states = torch.zeros(params.rollout_batch_size, self.spec.observation.size, device=self.device)
        self.start_states_filled = 0
        self._start_states_next = 0
        self.rollout_generator = torch.Generator(device=self.device)
        self.rollout_generator.manual_seed(self.seed + 2)

    def _remember_start_states(self, observations: torch.Tensor) -> None:
        capacity = len(self.start_states)
        observations = observations[-capacity:]
        count = observations.shape[0]
        positions = (torch.arange(count, device=self.device) + self._start_states_next) % capacity
        self.start_states[positions] = observations
        self._start_states_next = (self._start_states_next + count) % capacity
        self.start_states_filled = min(self.start_states_filled + count, capacity)

    @torch.no_grad()
    def _rollout(self) -> None:
        """`rollout_batch_size` rollouts of `rollout_length` model steps of the current policy; a predicted
        terminal ends its rollout."""
        assert self.dynamics is not None
        starts = torch.randint(
            0,
            self.start_states_filled,
            (self.params.rollout_batch_size,),
            device=self.device,
            generator=self.rollout_generator,
        )
        observations = self.start_states[starts]
        for _ in range(self.params.rollout_length):
            actions, _ = self.actor.sample(observations)
            raw_actions = self.action_low + (actions + 1.0) * 0.5 * (self.action_high - self.action_low)
            raw_next, rewards, terminals = self.dynamics.sample(
                observations * self.observation_std + self.observation_mean, raw_actions, self.rollout_generator
            )
            next_observations = (raw_next - self.observation_mean) / self.observation_std
            self.model_buffer.add(
                Batch(
                    observations,
                    actions,
                    rewards * self.normalisation.reward_scale,
                    next_observations,
                    terminals.float(),
                )
            )
            observations = next_observations[~terminals]
            if observations.shape[0] == 0:
                break

    # state: CQL's, plus everything the rollouts need, so a resumed run continues exactly

    def state_dict(self) -> dict[str, Any]:
        if self.dynamics is None:
            raise RuntimeError("COMBO has no state before prepare: its dynamics model is part of it")
        state = super().state_dict()
        state["dynamics"] = self.dynamics.dynamics_state()
        state["model_buffer"] = self.model_buffer.state_dict(include_data=True)
        state["start_states"] = self.start_states[: self.start_states_filled].clone()
        state["start_states_next"] = self._start_states_next
        state["rollout_generator"] = self.rollout_generator.get_state()
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        super().load_state_dict(state)
        self.dynamics = DynamicsModel.from_dynamics_state(state["dynamics"], self.device)
        self.model_buffer.load_state_dict(state["model_buffer"])
        filled = state["start_states"].shape[0]
        self.start_states[:filled] = state["start_states"].to(self.device)
        self.start_states_filled = filled
        self._start_states_next = state["start_states_next"]
        self.rollout_generator.set_state(state["rollout_generator"])
