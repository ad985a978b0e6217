"""A model-based estimate: the policy's discounted return in rollouts of a learned dynamics ensemble.

From every episode's initial state, `rollouts_per_state` imagined episodes of the policy run for `horizon`
steps in the ensemble COMBO trains (`workers.algos.dynamics`; each step from a randomly chosen elite, with
its predicted noise), stopping at a predicted terminal. An episode's value is the mean discounted return
of its rollouts, in the dataset's reward units. A model the service stored for the version (COMBO's)
can be passed in and is used as it is; otherwise one is fitted to the evaluation data with COMBO's
dynamics defaults. Imagined observations are kept within the range the data covers (with a margin of a
tenth of it), since a model extrapolates wildly outside and one diverging rollout would swamp the mean.

Unlike FQE this is a finite-horizon return (by default the data's mean episode length), which is what a
time-limited episode earns; for a long horizon or a discount well below one the two agree. Continuous
actions only, as the dynamics model is.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from schemas.algorithms import COMBOParams
from schemas.dataset import ContinuousActionSpec, DatasetSpec
from workers.algos.data import TransitionArrays, array_to_device
from workers.algos.dynamics import DynamicsModel, fit_dynamics
from workers.ope.policies import DatasetPolicy

_COMBO = COMBOParams()
OBSERVATION_MARGIN = 0.1
"""Imagined observations stay within the data's range widened by this share of it on each side."""

ProgressCallback = Callable[[int, dict[str, float]], None]


@dataclass(frozen=True)
class DynamicsSettings:
    """How a dynamics ensemble is fitted when none is given (defaults: COMBO's, `schemas.algorithms`)."""

    ensemble_size: int = _COMBO.ensemble_size
    elites: int = _COMBO.elites
    hidden_sizes: tuple[int, ...] = tuple(_COMBO.dynamics_hidden_sizes)
    learning_rate: float = _COMBO.dynamics_lr
    weight_decay: float = _COMBO.dynamics_weight_decay
    batch_size: int = _COMBO.dynamics_batch_size
    holdout_fraction: float = _COMBO.holdout_fraction
    max_holdout: int = _COMBO.max_holdout
    patience: int = _COMBO.early_stopping_patience
    max_epochs: int = _COMBO.max_dynamics_epochs


def fit_model(
    data: TransitionArrays, settings: DynamicsSettings, device: torch.device, seed: int
) -> tuple[DynamicsModel, dict[str, float]]:
    """A dynamics ensemble fitted to `data` (see `workers.algos.dynamics.fit_dynamics`)."""
    return fit_dynamics(
        data,
        ensemble_size=settings.ensemble_size,
        elite_count=settings.elites,
        hidden_sizes=list(settings.hidden_sizes),
        learning_rate=settings.learning_rate,
        weight_decay=settings.weight_decay,
        batch_size=settings.batch_size,
        holdout_fraction=settings.holdout_fraction,
        max_holdout=settings.max_holdout,
        max_epochs=settings.max_epochs,
        patience=settings.patience,
        device=device,
        seed=seed,
    )


def check_model(model: DynamicsModel, spec: DatasetSpec) -> None:
    """The model must take this dataset's observations and actions."""
    if not isinstance(spec.action, ContinuousActionSpec):
        raise ValueError("action: a model-based estimate needs continuous actions; this dataset's are discrete")
    expected = {"observation_size": spec.observation.size, "action_size": spec.action.size}
    found = {name: model.config[name] for name in expected}
    if found != expected:
        raise ValueError(f"the dynamics model has {found}; this dataset needs {expected}")


def rollout_values(
    policy: DatasetPolicy,
    model: DynamicsModel,
    data: TransitionArrays,
    initial: np.ndarray,
    *,
    horizon: int,
    discount: float,
    rollouts_per_state: int,
    seed: int,
    device: torch.device,
    on_progress: ProgressCallback | None = None,
) -> np.ndarray:
    """Mean discounted return of `rollouts_per_state` model rollouts from each row `initial` indexes, float64."""
    if horizon < 1 or rollouts_per_state < 1:
        raise ValueError("horizon and rollouts_per_state must be at least 1")
    model = model.to(device).eval()
    generator = torch.Generator(device=device).manual_seed(seed)
    seen = np.concatenate([data.observations, data.next_observations])
    low, high = seen.min(0), seen.max(0)
    margin = OBSERVATION_MARGIN * (high - low)
    low_bound = array_to_device(low - margin, device)
    high_bound = array_to_device(high + margin, device)

    states = len(initial)
    observations = array_to_device(np.repeat(data.observations[initial], rollouts_per_state, axis=0), device)
    returns = torch.zeros(states * rollouts_per_state, dtype=torch.float64, device=device)
    alive = torch.ones_like(returns, dtype=torch.bool)
    weight = 1.0
    for step in range(1, horizon + 1):
        actions = array_to_device(policy(observations.cpu().numpy()), device)
        observations, rewards, terminals = model.sample(observations, actions, generator)
        returns += weight * rewards.double() * alive
        alive &= ~terminals
        observations = torch.minimum(torch.maximum(observations, low_bound), high_bound)
        weight *= discount
        if on_progress is not None and (step % 50 == 0 or step == horizon):
            on_progress(step, {"alive": float(alive.double().mean())})
        if not alive.any():
            break
    return returns.view(states, rollouts_per_state).mean(1).cpu().numpy()
