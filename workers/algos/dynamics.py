"""A learned model of the environment for model-based offline RL (used by COMBO).

A probabilistic ensemble (Chua et al. 2018, as in MBPO and COMBO): every member predicts a diagonal Gaussian
over the change in observation and the reward, with a log-variance held softly between learned bounds, plus
a terminal logit — a classifier trained on the dataset's `terminals` (truncation is a cut in the logging, not
an event of the environment, so it is not modelled). Members see the same training rows in different orders;
training stops once no member has improved its holdout error by 1% for `patience` epochs, each member keeps
the weights of its best epoch, and the members with the lowest holdout error are the elites used in rollouts.

The model works in the dataset's own units (observations as stored, actions within their bounds), so a
trained model depends on the dataset version alone and any later run on that version can reuse it.
"""

from __future__ import annotations

import io
import pickle
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from workers.algos.data import TransitionArrays, array_to_device
from workers.algos.nets import EnsembleMLP

LOG_VARIANCE_BOUND_WEIGHT = 0.01
"""Pull of the learned log-variance bounds towards each other, so they only widen where the data asks."""

MIN_RELATIVE_IMPROVEMENT = 0.01
"""A member's holdout error must drop by this fraction to count as an improvement for early stopping."""

STD_FLOOR = 1e-6
"""Smallest standard deviation used to standardise an input or target (constant columns)."""


class DynamicsModel(nn.Module):
    """Ensemble of Gaussian models of (observation, action) -> (next observation, reward, terminal)."""

    def __init__(
        self,
        observation_size: int,
        action_size: int,
        ensemble_size: int,
        elite_count: int,
        hidden_sizes: list[int],
    ) -> None:
        super().__init__()
        if not 1 <= elite_count <= ensemble_size:
            raise ValueError(f"elite_count must be between 1 and ensemble_size ({ensemble_size}), got {elite_count}")
        self.config = {
            "observation_size": observation_size,
            "action_size": action_size,
            "ensemble_size": ensemble_size,
            "elite_count": elite_count,
            "hidden_sizes": list(hidden_sizes),
        }
        self.observation_size = observation_size
        self.target_size = observation_size + 1  # Δobservation and reward
        input_size = observation_size + action_size
        self.network = EnsembleMLP(
            input_size, 2 * self.target_size + 1, ensemble_size, hidden_sizes, activation=nn.SiLU
        )
        self.max_log_variance = nn.Parameter(torch.full((self.target_size,), 0.5))
        self.min_log_variance = nn.Parameter(torch.full((self.target_size,), -10.0))
        self.register_buffer("input_mean", torch.zeros(input_size))
        self.register_buffer("input_std", torch.ones(input_size))
        self.register_buffer("target_mean", torch.zeros(self.target_size))
        self.register_buffer("target_std", torch.ones(self.target_size))
        self.register_buffer("elites", torch.arange(elite_count))
        self.register_buffer("holdout_error", torch.full((ensemble_size,), float("inf")))

    @property
    def ensemble_size(self) -> int:
        return self.config["ensemble_size"]

    def forward(
        self, observations: torch.Tensor, actions: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Standardised predictions of every member.

        Inputs are [N, size] (the same rows for all members) or [E, N, size] (rows per member). Returns the
        mean and log-variance of the standardised targets, [E, N, obs_size + 1], and the terminal logit [E, N].
        """
        return self._heads(self.network(self._standardised_inputs(observations, actions)))

    def _standardised_inputs(self, observations: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
        return (torch.cat([observations, actions], dim=-1) - self.input_mean) / self.input_std

    def _heads(self, output: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        mean, raw_log_variance, terminal_logit = output.split([self.target_size, self.target_size, 1], dim=-1)
        # Soft clamps keep the gradient alive at the bounds, unlike a hard clip.
        log_variance = self.max_log_variance - F.softplus(self.max_log_variance - raw_log_variance)
        log_variance = self.min_log_variance + F.softplus(log_variance - self.min_log_variance)
        return mean, log_variance, terminal_logit.squeeze(-1)

    def standardise_targets(self, targets: torch.Tensor) -> torch.Tensor:
        return (targets - self.target_mean) / self.target_std

    @torch.no_grad()
    def sample(
        self, observations: torch.Tensor, actions: torch.Tensor, generator: torch.Generator | None = None
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """One imagined step per row from a randomly chosen elite: (next observations, rewards, terminals).

        Rows are dealt to the elites at random in equal shares, and each elite runs on its own rows only,
        which costs one member's forward pass per row rather than the whole ensemble's.
        """
        rows = observations.shape[0]
        elites = len(self.elites)
        share = -(-rows // elites)
        order = torch.randperm(rows, device=observations.device, generator=generator)
        dealt = order.repeat(-(-elites * share // rows))[: elites * share].view(elites, share)
        inputs = self._standardised_inputs(observations, actions)[dealt]
        elite_weights = {name: value[self.elites] for name, value in self.network.named_parameters()}
        output = torch.func.functional_call(self.network, elite_weights, (inputs,))
        mean, log_variance, terminal_logit = self._heads(output.flatten(0, 1)[:rows])
        noise = torch.randn(mean.shape, device=mean.device, generator=generator)
        standardised = torch.empty_like(mean)
        standardised[order] = mean + noise * (0.5 * log_variance).exp()
        terminal = torch.empty_like(terminal_logit)
        terminal[order] = terminal_logit
        return self._to_transition(observations, standardised, terminal)

    @torch.no_grad()
    def mean_prediction(
        self, observations: torch.Tensor, actions: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The elites' average prediction, without sampling noise: (next observations, rewards, terminals)."""
        mean, _, terminal_logit = self(observations, actions)
        return self._to_transition(observations, mean[self.elites].mean(0), terminal_logit[self.elites].mean(0))

    def _to_transition(
        self, observations: torch.Tensor, standardised: torch.Tensor, terminal_logit: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        target = standardised * self.target_std + self.target_mean
        return observations + target[:, : self.observation_size], target[:, self.observation_size], terminal_logit > 0

    def loss(
        self, observations: torch.Tensor, actions: torch.Tensor, targets: torch.Tensor, terminals: torch.Tensor
    ) -> torch.Tensor:
        """Gaussian negative log-likelihood plus terminal cross-entropy, summed over members; inputs are [E, B, ...]."""
        mean, log_variance, terminal_logit = self(observations, actions)
        nll = ((mean - targets).square() * (-log_variance).exp() + log_variance).mean(dim=(1, 2))
        terminal = F.binary_cross_entropy_with_logits(terminal_logit, terminals, reduction="none").mean(dim=1)
        bounds = LOG_VARIANCE_BOUND_WEIGHT * (self.max_log_variance.sum() - self.min_log_variance.sum())
        return (nll + terminal).sum() + bounds

    @torch.no_grad()
    def member_errors(self, observations: torch.Tensor, actions: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """Mean squared error of each member's mean on standardised targets, [E]."""
        mean, _, _ = self(observations, actions)
        return (mean - targets).square().mean(dim=(1, 2))

    # Saving: plain tensors and ints only, so loading needs no pickle of our classes (weights_only=True).

    def dynamics_state(self) -> dict[str, Any]:
        return {"config": dict(self.config), "weights": {k: v.detach().clone() for k, v in self.state_dict().items()}}

    @classmethod
    def from_dynamics_state(cls, state: dict[str, Any], device: torch.device | str = "cpu") -> DynamicsModel:
        # Building the members draws initial weights; keep those draws off the caller's global RNG.
        with torch.random.fork_rng(devices=[]):
            model = cls(**state["config"])
        model.load_state_dict(state["weights"])
        return model.to(device)

    def to_bytes(self) -> bytes:
        buffer = io.BytesIO()
        torch.save({"config": dict(self.config), "weights": {k: v.cpu() for k, v in self.state_dict().items()}}, buffer)
        return buffer.getvalue()

    @classmethod
    def from_bytes(cls, blob: bytes, device: torch.device | str = "cpu") -> DynamicsModel:
        try:
            state = torch.load(io.BytesIO(blob), map_location="cpu", weights_only=True)
            return cls.from_dynamics_state(state, device)
        except (pickle.UnpicklingError, RuntimeError, KeyError, TypeError) as error:
            raise ValueError(f"not a saved dynamics model ({type(error).__name__}: {error})") from error


def transition_targets(data: TransitionArrays) -> np.ndarray:
    """What the model predicts for each row: [Δobservation, reward], float32 [N, obs_size + 1]."""
    return np.concatenate([data.next_observations - data.observations, data.rewards[:, None]], axis=1)


def fit_dynamics(
    data: TransitionArrays,
    *,
    ensemble_size: int,
    elite_count: int,
    hidden_sizes: list[int],
    learning_rate: float,
    weight_decay: float,
    batch_size: int,
    holdout_fraction: float,
    max_holdout: int,
    max_epochs: int,
    patience: int,
    device: torch.device,
    seed: int,
) -> tuple[DynamicsModel, dict[str, float]]:
    """Train a dynamics ensemble on a dataset with a holdout split and early stopping; pick elites.

    Returns the model (each member at its best holdout epoch) and a summary of the fit.
    """
    if data.actions.ndim != 2 or not np.issubdtype(data.actions.dtype, np.floating):
        raise ValueError("a dynamics model needs continuous actions, float32 [N, action_size]")
    rows = len(data)
    holdout_rows = min(max_holdout, max(1, int(rows * holdout_fraction)))
    if rows - holdout_rows < 1:
        raise ValueError(f"a dynamics model needs at least 2 transitions (one held out), the dataset has {rows}")
    batch_size = min(batch_size, rows - holdout_rows)
    generator = torch.Generator(device=device).manual_seed(seed)
    observations = array_to_device(data.observations, device)
    actions = array_to_device(data.actions, device)
    terminals = array_to_device(data.terminals, device, torch.float32)
    targets = array_to_device(transition_targets(data), device)

    order = torch.randperm(rows, device=device, generator=generator)
    train_rows, holdout = order[holdout_rows:], order[:holdout_rows]
    # The initial weights come from `seed` without touching the caller's global RNG, so a run that
    # loads a saved model draws the same random numbers afterwards as one that trained it.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = DynamicsModel(observations.shape[1], actions.shape[1], ensemble_size, elite_count, hidden_sizes)
    model.to(device)
    inputs = torch.cat([observations[train_rows], actions[train_rows]], dim=1)
    model.input_mean.copy_(inputs.mean(0))
    model.input_std.copy_(inputs.std(0).clamp_min(STD_FLOOR))
    model.target_mean.copy_(targets[train_rows].mean(0))
    model.target_std.copy_(targets[train_rows].std(0).clamp_min(STD_FLOOR))
    standardised = model.standardise_targets(targets)

    optimiser = torch.optim.Adam(model.parameters(), lr=learning_rate, weight_decay=weight_decay)
    best_error = model.member_errors(observations[holdout], actions[holdout], standardised[holdout])
    best_weights = {k: v.clone() for k, v in model.network.state_dict().items()}
    epochs_without_improvement = 0
    epoch = 0
    for epoch in range(1, max_epochs + 1):
        # Each member walks the training rows in its own order, which with the random initial weights
        # keeps the members diverse.
        shuffle = torch.rand(ensemble_size, len(train_rows), device=device, generator=generator).argsort(dim=1)
        member_orders = train_rows[shuffle]
        for start in range(0, len(train_rows) - batch_size + 1, batch_size):
            batch = member_orders[:, start : start + batch_size]
            loss = model.loss(observations[batch], actions[batch], standardised[batch], terminals[batch])
            optimiser.zero_grad(set_to_none=True)
            loss.backward()
            optimiser.step()
        error = model.member_errors(observations[holdout], actions[holdout], standardised[holdout])
        improved = best_error - error > MIN_RELATIVE_IMPROVEMENT * best_error
        if improved.any():
            best_error = torch.where(improved, error, best_error)
            for name, value in model.network.state_dict().items():
                best_weights[name][improved] = value[improved]
            epochs_without_improvement = 0
        else:
            epochs_without_improvement += 1
            if epochs_without_improvement >= patience:
                break
    model.network.load_state_dict(best_weights)
    model.holdout_error.copy_(best_error)
    model.elites.copy_(best_error.argsort()[:elite_count])
    model.eval()
    elite_error = best_error[model.elites]
    return model, {
        "dynamics_epochs": float(epoch),
        "dynamics_holdout_mse": float(elite_error.mean()),
        "dynamics_holdout_mse_worst_elite": float(elite_error.max()),
    }
