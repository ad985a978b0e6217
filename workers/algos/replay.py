"""Transitions on the training device, sampled there by index.

A dataset version is copied to the device once, already normalised (standardised observations,
actions scaled to [-1, 1], scaled rewards); a batch is an index draw from a device generator and a
gather, with no host round trip. The same buffer, filled with `add`, holds model rollouts (COMBO);
`MixedReplay` draws every batch from two buffers at a fixed ratio (offline and online rows).
"""

from __future__ import annotations

from typing import Any, NamedTuple, Protocol

import numpy as np
import torch

from schemas.dataset import ActionSpec, ContinuousActionSpec
from workers.algos.data import Normalisation, TransitionArrays, array_to_device


class Batch(NamedTuple):
    """A batch of normalised transitions on the training device."""

    observations: torch.Tensor  # float32 [B, obs_size], standardised
    actions: torch.Tensor  # float32 [B, action_size] in [-1, 1], or int64 [B]
    rewards: torch.Tensor  # float32 [B], scaled
    next_observations: torch.Tensor  # float32 [B, obs_size], standardised
    terminals: torch.Tensor  # float32 [B]: 1.0 where the environment ended the episode (no bootstrap)

    @staticmethod
    def cat(first: Batch, second: Batch) -> Batch:
        return Batch(*(torch.cat([a, b]) for a, b in zip(first, second)))


class SamplingMismatch(ValueError):
    """A checkpoint's sampling state is of the other kind (resident or streamed): the run that wrote it
    judged the version against another memory budget. Its networks still resume; see `training.restore`."""


class ReplayBuffer:
    """Fixed-capacity transition tensors on one device; a ring once full."""

    def __init__(
        self,
        capacity: int,
        observation_size: int,
        action_size: int | None,
        device: torch.device,
        seed: int,
    ) -> None:
        """`action_size` None means discrete actions (int64 indices)."""
        if capacity < 1:
            raise ValueError("a replay buffer needs a capacity of at least one transition")
        self.capacity = capacity
        self.device = device
        self.observations = torch.zeros(capacity, observation_size, device=device)
        self.next_observations = torch.zeros(capacity, observation_size, device=device)
        if action_size is None:
            self.actions = torch.zeros(capacity, dtype=torch.int64, device=device)
        else:
            self.actions = torch.zeros(capacity, action_size, device=device)
        self.rewards = torch.zeros(capacity, device=device)
        self.terminals = torch.zeros(capacity, device=device)
        self.size = 0
        self._next = 0
        self.generator = torch.Generator(device=device)
        self.generator.manual_seed(seed)

    @classmethod
    def from_arrays(
        cls,
        data: TransitionArrays,
        normalisation: Normalisation,
        action_spec: ActionSpec,
        device: torch.device,
        seed: int,
    ) -> ReplayBuffer:
        """The whole dataset on `device`, normalised there."""
        if len(data) == 0:
            raise ValueError("the dataset has no transitions to train on")
        continuous = isinstance(action_spec, ContinuousActionSpec)
        buffer = cls(
            len(data),
            data.observations.shape[1],
            action_spec.size if continuous else None,
            device,
            seed,
        )
        buffer.add(normalise_arrays(data, normalisation, action_spec, device))
        return buffer

    def __len__(self) -> int:
        return self.size

    def add(self, batch: Batch) -> None:
        """Append transitions, overwriting the oldest once full (no host synchronisation)."""
        count = batch.rewards.shape[0]
        if count > self.capacity:
            batch = Batch(*(t[-self.capacity :] for t in batch))
            count = self.capacity
        positions = (torch.arange(count, device=self.device) + self._next) % self.capacity
        for store, values in zip(self._stores(), batch):
            store[positions] = values.to(store.dtype)
        self._next = (self._next + count) % self.capacity
        self.size = min(self.size + count, self.capacity)

    def sample(self, batch_size: int) -> Batch:
        """`batch_size` transitions drawn uniformly with replacement."""
        if self.size == 0:
            raise ValueError("cannot sample from an empty replay buffer")
        index = torch.randint(0, self.size, (batch_size,), device=self.device, generator=self.generator)
        # index_select rather than store[index]: the same rows, half the time on CPU.
        return Batch(*(store.index_select(0, index) for store in self._stores()))

    def state_dict(self, include_data: bool = False) -> dict[str, Any]:
        """The sampling state; with `include_data` the contents too (for buffers filled by `add`)."""
        state: dict[str, Any] = {"generator": self.generator.get_state(), "size": self.size, "next": self._next}
        if include_data:
            state["data"] = {name: store[: self.size].clone() for name, store in zip(Batch._fields, self._stores())}
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if "streamed" in state:
            raise SamplingMismatch("this checkpoint streamed its batches, and this run holds the version resident")
        if "generator" not in state:
            raise ValueError("this checkpoint mixed two buffers; it cannot resume a run that samples from one")
        self.generator.set_state(state["generator"])
        if "data" in state:
            for name, store in zip(Batch._fields, self._stores()):
                values = state["data"][name]
                store[: values.shape[0]] = values.to(self.device)
        self.size = state["size"]
        self._next = state["next"]

    def _stores(self) -> tuple[torch.Tensor, ...]:
        return self.observations, self.actions, self.rewards, self.next_observations, self.terminals


class MixedReplay:
    """Two buffers sampled at a fixed ratio: `round(batch_size * first_fraction)` rows of every batch
    from `first`, the rest from `second` (fine-tuning with a set share of online rows)."""

    def __init__(self, first: Replay, second: Replay, first_fraction: float) -> None:
        if not 0.0 <= first_fraction <= 1.0:
            raise ValueError("first_fraction must lie in [0, 1]")
        self.first, self.second, self.first_fraction = first, second, first_fraction

    def __len__(self) -> int:
        return len(self.first) + len(self.second)

    def sample(self, batch_size: int) -> Batch:
        first_count = round(batch_size * self.first_fraction)
        if first_count == 0:
            return self.second.sample(batch_size)
        if first_count == batch_size:
            return self.first.sample(batch_size)
        return Batch.cat(self.first.sample(first_count), self.second.sample(batch_size - first_count))

    def state_dict(self) -> dict[str, Any]:
        return {"first": self.first.state_dict(), "second": self.second.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if set(state) != {"first", "second"}:
            raise ValueError("this checkpoint sampled from one buffer; it cannot resume a run that mixes two")
        self.first.load_state_dict(state["first"])
        self.second.load_state_dict(state["second"])


class Replay(Protocol):
    """What the training loop samples batches from: `ReplayBuffer`, `MixedReplay`, or
    `streaming.StreamingReplay` for a version larger than the memory budget."""

    def __len__(self) -> int: ...

    def sample(self, batch_size: int) -> Batch: ...

    def state_dict(self) -> dict[str, Any]: ...

    def load_state_dict(self, state: dict[str, Any]) -> None: ...


class Columns(Protocol):
    """The columns `normalise_arrays` reads: `TransitionArrays`, or rows gathered from mapped files."""

    observations: np.ndarray
    actions: np.ndarray
    rewards: np.ndarray
    next_observations: np.ndarray
    terminals: np.ndarray

    def __len__(self) -> int: ...


def training_replay(
    data: TransitionArrays,
    normalisation: Normalisation,
    action_spec: ActionSpec,
    device: torch.device,
    seed: int,
    online_fraction: float | None = None,
    online: np.ndarray | None = None,
) -> Replay:
    """What a run samples from: every row alike, or `online_fraction` of every batch from the rows the
    boolean mask `online` marks (collected by policies) and the rest from the others."""
    if online_fraction is None:
        return ReplayBuffer.from_arrays(data, normalisation, action_spec, device, seed)
    if online is None:
        raise ValueError("an online_fraction needs the mask of online rows")
    return MixedReplay(
        ReplayBuffer.from_arrays(data.subset(online), normalisation, action_spec, device, seed),
        ReplayBuffer.from_arrays(data.subset(~online), normalisation, action_spec, device, seed + 1),
        online_fraction,
    )


def normalise_arrays(
    data: Columns, normalisation: Normalisation, action_spec: ActionSpec, device: torch.device
) -> Batch:
    """Arrays -> one normalised Batch on `device` (the only numpy-to-device conversion in training)."""

    def to_device(array: np.ndarray, dtype: torch.dtype) -> torch.Tensor:
        return array_to_device(array, device, dtype)

    mean = to_device(normalisation.observation_mean, torch.float32)
    std = to_device(normalisation.observation_std, torch.float32)
    if isinstance(action_spec, ContinuousActionSpec):
        low = torch.tensor(action_spec.low, dtype=torch.float32, device=device)
        high = torch.tensor(action_spec.high, dtype=torch.float32, device=device)
        actions = to_device(data.actions.reshape(len(data), -1), torch.float32)
        actions = (2.0 * (actions - low) / (high - low) - 1.0).clamp(-1.0, 1.0)
    else:
        actions = to_device(data.actions, torch.int64)
    return Batch(
        observations=(to_device(data.observations, torch.float32) - mean) / std,
        actions=actions,
        rewards=to_device(data.rewards, torch.float32) * normalisation.reward_scale,
        next_observations=(to_device(data.next_observations, torch.float32) - mean) / std,
        terminals=to_device(data.terminals, torch.float32),
    )
