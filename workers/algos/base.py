"""What every offline algorithm offers, and the parts its training state is made of.

Algorithm files (iql.py, cql.py, combo.py, awac.py, bc.py) subclass `OfflineAlgorithm` and `register` the
attributes holding their networks, target networks, optimisers, schedules and learnable scalars once;
`state_dict`, `load_state_dict` and `optimisers` are built from that registry. Each also measures how
well its networks explain held-out transitions (`validation_metrics`). The training loop, export and
the workers only use this interface.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any, ClassVar, Protocol

import torch
from pydantic import BaseModel
from torch import nn
from torch.optim import Optimizer
from torch.optim.lr_scheduler import LRScheduler

from schemas.dataset import ContinuousActionSpec, DatasetSpec, DiscreteActionSpec
from workers.algos.data import Normalisation, TransitionArrays

Part = nn.Module | Optimizer | LRScheduler | nn.Parameter
"""What an algorithm registers: a network, an optimiser, a learning-rate schedule or a learnable scalar."""


class PreparedParts(Protocol):
    """Where `prepare` finds what an earlier run built for the same dataset version, and leaves what it
    builds, as blobs under keys the algorithm names (the worker keeps them with the service)."""

    def get(self, key: str) -> bytes | None: ...

    def put(self, key: str, blob: bytes) -> None: ...


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
    streams: ClassVar[bool] = True
    """Whether it trains on a version streamed from mapped columns (`streaming`), larger than the memory budget."""
    resident_reason: ClassVar[str] = ""
    """Why not, when it cannot."""

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
        self._part_names: list[str] = []
        # Networks are initialised and noise drawn from torch's global RNG; training checkpoints it.
        torch.manual_seed(seed)
        self._build()

    @abstractmethod
    def _build(self) -> None:
        """Networks, optimisers and the update, from `params`, `spec` and `normalisation`, on `device`;
        every part of the training state goes through `register`."""

    def register(self, *names: str) -> None:
        """Make the attributes `names` (networks, optimisers, schedules, learnable scalars) part of the
        training state, each saved under its name."""
        for name in names:
            if name in self._part_names or name == "step":
                raise ValueError(f"{type(self).__name__} registers {name!r} twice")
            if not isinstance(getattr(self, name), Part):
                raise TypeError(f"{name!r} is a {type(getattr(self, name)).__name__}, not a part of training state")
            self._part_names.append(name)

    def _parts(self) -> dict[str, Part]:
        return {name: getattr(self, name) for name in self._part_names}

    def optimisers(self) -> list[Optimizer]:
        """The registered optimisers, in the order they were registered."""
        return [part for part in self._parts().values() if isinstance(part, Optimizer)]

    @property
    def discrete(self) -> bool:
        return isinstance(self.spec.action, DiscreteActionSpec)

    @property
    def continuous_action(self) -> ContinuousActionSpec:
        assert isinstance(self.spec.action, ContinuousActionSpec)
        return self.spec.action

    def prepare(self, data: TransitionArrays, parts: PreparedParts | None = None) -> dict[str, str]:
        """Work done once before the gradient steps (COMBO trains or reuses its dynamics model here).

        Returns what it did, part by part (e.g. `{"dynamics": "reused"}`); nothing for most algorithms.
        Not called again on resume: what it builds belongs in `state_dict`.
        """
        return {}

    @abstractmethod
    def update(self, batch: Any) -> dict[str, torch.Tensor]:
        """One gradient step on a batch; returns detached scalar metrics."""

    @abstractmethod
    def validation_metrics(self, batch: Any) -> dict[str, torch.Tensor]:
        """How well the networks explain held-out transitions (a batch like `update`'s), as scalar tensors.

        The names, where the algorithm has the network: `td_error` (the critic's TD loss on the batch,
        computed as the training `critic_loss` is), `log_likelihood` (mean log-density of the batch's
        actions under the actor, in the actor's action space) or `action_squared_error` for a
        deterministic actor, and `value_mean` (the mean value estimate at the batch's states). The caller
        runs it under `torch.no_grad()` with torch's RNG forked, so measuring never changes training.
        """

    @abstractmethod
    def policy(self) -> nn.Module:
        """The deterministic deployed policy: raw float32 [N, *obs_shape] -> action in the dataset's space."""

    def state_dict(self) -> dict[str, Any]:
        """Every registered part and the step counter: enough to resume bit-identically."""
        state: dict[str, Any] = {"step": self.step}
        for name, part in self._parts().items():
            state[name] = part.detach().clone() if isinstance(part, nn.Parameter) else part.state_dict()
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """The parts back from `state_dict`; a schedule saved as None keeps its fresh start (fine-tuning)."""
        self.step = state["step"]
        for name, part in self._parts().items():
            if isinstance(part, nn.Parameter):
                with torch.no_grad():
                    part.copy_(state[name])
            elif isinstance(part, LRScheduler):
                if state.get(name) is not None:
                    part.load_state_dict(state[name])
            else:
                part.load_state_dict(state[name])
