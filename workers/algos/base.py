"""What every offline algorithm offers, and the arrays it trains on.

Algorithm files (iql.py, cql.py, combo.py, bc.py) subclass `OfflineAlgorithm`; the training loop,
export and the workers only use this interface.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, fields
from typing import Any, ClassVar

import numpy as np
import torch
from pydantic import BaseModel
from torch import nn

from schemas.dataset import ContinuousActionSpec, DatasetSpec, DiscreteActionSpec


@dataclass(frozen=True)
class TransitionArrays:
    """A whole dataset version as flat numpy arrays (observations flattened row-major)."""

    observations: np.ndarray  # float32 [N, obs_size]
    actions: np.ndarray  # float32 [N, action_size] (continuous) or int64 [N] (discrete)
    rewards: np.ndarray  # float32 [N]
    next_observations: np.ndarray  # float32 [N, obs_size]
    terminals: np.ndarray  # bool [N]: the episode ended in the environment; no bootstrap
    truncateds: np.ndarray  # bool [N]: the episode was cut (timeout); bootstrap from next_observation
    episode_ids: np.ndarray  # int64 [N]
    steps: np.ndarray  # int32 [N]

    def __len__(self) -> int:
        return len(self.rewards)

    def subset(self, rows: np.ndarray) -> TransitionArrays:
        """The rows a boolean mask (or an index array) picks, in order."""
        return TransitionArrays(**{field.name: getattr(self, field.name)[rows] for field in fields(self)})

    @classmethod
    def from_arrow(cls, table: Any) -> TransitionArrays:
        """From a `pyarrow.Table` with DESIGN's transition columns (see `workers.algos.data`)."""
        from workers.algos.data import arrays_from_arrow

        return arrays_from_arrow(table)


@dataclass(frozen=True)
class Normalisation:
    """Observation standardisation and reward scaling, fixed before training starts."""

    observation_mean: np.ndarray  # float32 [obs_size]
    observation_std: np.ndarray  # float32 [obs_size], never below a small floor
    reward_scale: float  # rewards are multiplied by this before the Bellman target

    @classmethod
    def from_arrays(cls, data: TransitionArrays) -> Normalisation:
        """Statistics of the arrays themselves (see `workers.algos.data` for the reward scale)."""
        from workers.algos.data import normalisation_from_arrays

        return normalisation_from_arrays(data)

    @classmethod
    def from_statistics(cls, statistics: dict[str, Any]) -> Normalisation:
        """From a version's statistics (`VersionStats.model_dump()`), as the service computed them."""
        from workers.algos.data import normalisation_from_statistics

        return normalisation_from_statistics(statistics)


class OfflineAlgorithm(ABC):
    """One offline RL algorithm: networks, optimisers and the update step.

    `update` takes a batch already on the training device and returns detached scalar tensors
    (no `.item()`, so no host synchronisation per step). `step` counts updates; the training loop
    advances it after each `update`, and `state_dict` carries it. `total_steps` is the planned
    length of the run, for schedules (IQL's cosine actor learning rate).
    """

    name: ClassVar[str]
    Params: ClassVar[type[BaseModel]]
    supports_discrete: ClassVar[bool] = True

    def __init__(
        self,
        params: BaseModel,
        spec: DatasetSpec,
        normalisation: Normalisation,
        device: torch.device,
        seed: int,
        total_steps: int = 1_000_000,
    ) -> None:
        if isinstance(spec.action, DiscreteActionSpec) and not self.supports_discrete:
            raise ValueError(f"{self.name} supports continuous actions only; this dataset's are discrete")
        self.params = params
        self.spec = spec
        self.normalisation = normalisation
        self.device = device
        self.seed = seed
        self.total_steps = total_steps
        self.step = 0
        # Networks are initialised and noise drawn from torch's global RNG; training checkpoints it.
        torch.manual_seed(seed)
        self._build()

    @abstractmethod
    def _build(self) -> None:
        """Networks, optimisers and the update, from `params`, `spec` and `normalisation`, on `device`."""

    @property
    def discrete(self) -> bool:
        return isinstance(self.spec.action, DiscreteActionSpec)

    @property
    def continuous_action(self) -> ContinuousActionSpec:
        assert isinstance(self.spec.action, ContinuousActionSpec)
        return self.spec.action

    def prepare(self, data: TransitionArrays) -> None:
        """Work done once before the gradient steps (COMBO trains or loads its dynamics here).

        Not called again on resume: what it builds belongs in `state_dict`.
        """

    @abstractmethod
    def update(self, batch: Any) -> dict[str, torch.Tensor]:
        """One gradient step on a batch; returns detached scalar metrics."""

    @abstractmethod
    def policy(self) -> nn.Module:
        """The deterministic deployed policy: raw float32 [N, *obs_shape] -> action in the dataset's space."""

    @abstractmethod
    def state_dict(self) -> dict[str, Any]:
        """Networks, optimisers, schedules and the step counter: enough to resume bit-identically."""

    @abstractmethod
    def load_state_dict(self, state: dict[str, Any]) -> None: ...


def array_to_device(array: np.ndarray, device: torch.device | str, dtype: torch.dtype | None = None) -> torch.Tensor:
    """A numpy array as a tensor on `device`, copied first when read-only.

    Arrays viewing Arrow buffers (a pulled version) are read-only, which torch.from_numpy warns about.
    """
    array = np.ascontiguousarray(array)
    if not array.flags.writeable:
        array = array.copy()
    return torch.from_numpy(array).to(device=device, dtype=dtype)
