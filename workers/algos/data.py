"""The training arrays (`TransitionArrays`), how they come from Arrow tables and go to the device, how a
card records the episodes a split held out (`split_summary`), and the normalisation fixed before
training (`Normalisation`).

Reward scale. Users' rewards come at any scale, and only a positive factor keeps the task the same
(an offset changes what a terminal is worth), so rewards are multiplied, never shifted. The factor
follows IQL/CORL: make the spread of episode returns equal the mean episode length, i.e. per-step
rewards vary by about one, the scale IQL's temperature and CQL's alpha were tuned at. Two guards
keep Q-values O(1..100) when that spread says little: the denominator is at least the mean absolute
episode return (near-identical returns, or a large constant offset, would otherwise blow the scale
up), and no scaled reward may exceed `MAX_SCALED_REWARD` in size (so |Q| < 10 / (1 - gamma)).
Without a finished episode, the rewards' standard deviation stands in.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, fields
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import torch

from schemas.dataset import ContinuousActionSpec, DatasetSpec
from schemas.splits import Split
from schemas.transition import POLICY_SOURCE_PREFIX, transition_schema

OBSERVATION_STD_FLOOR = 1e-3
MAX_SCALED_REWARD = 10.0


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
    def from_arrow(cls, table: pa.Table) -> TransitionArrays:
        """From a `pyarrow.Table` with DESIGN's transition columns (`arrays_from_arrow`)."""
        return arrays_from_arrow(table)


def split_summary(split: Split, held_out_episode_ids: np.ndarray) -> dict[str, Any]:
    """The split as a card and a job's result record it: fraction, seed, held-out episode and row counts
    (from the episode ids of the held-out rows)."""
    held = {"held_out_episodes": len(np.unique(held_out_episode_ids)), "held_out_rows": len(held_out_episode_ids)}
    return split.model_dump(mode="json") | held


@dataclass(frozen=True)
class Normalisation:
    """Observation standardisation and reward scaling, fixed before training starts."""

    observation_mean: np.ndarray  # float32 [obs_size]
    observation_std: np.ndarray  # float32 [obs_size], never below a small floor
    reward_scale: float  # rewards are multiplied by this before the Bellman target

    @classmethod
    def from_arrays(cls, data: TransitionArrays) -> Normalisation:
        """Statistics of the arrays themselves (`normalisation_from_arrays`)."""
        return normalisation_from_arrays(data)

    @classmethod
    def from_statistics(cls, statistics: Mapping[str, Any]) -> Normalisation:
        """From a version's statistics (`VersionStats.model_dump()`), as the service computed them."""
        return normalisation_from_statistics(statistics)


def array_to_device(array: np.ndarray, device: torch.device | str, dtype: torch.dtype | None = None) -> torch.Tensor:
    """A numpy array as a tensor on `device`, copied first when read-only.

    Arrays viewing Arrow buffers (a pulled version) are read-only, which torch.from_numpy warns about.
    """
    array = np.ascontiguousarray(array)
    if not array.flags.writeable:
        array = array.copy()
    return torch.from_numpy(array).to(device=device, dtype=dtype)


def arrays_from_arrow(table: pa.Table) -> TransitionArrays:
    """The columns of DESIGN's transition row as flat numpy arrays (fixed-size or plain lists alike)."""
    rows = table.num_rows

    def matrix(column: str) -> np.ndarray:
        values = pc.list_flatten(table.column(column).combine_chunks()).to_numpy(zero_copy_only=False)
        return values.astype(np.float32, copy=False).reshape(rows, -1)

    def vector(column: str, dtype: type) -> np.ndarray:
        return table.column(column).to_numpy().astype(dtype, copy=False)

    action_type = table.schema.field("action").type
    if pa.types.is_integer(action_type):
        actions = vector("action", np.int64)
    else:
        actions = matrix("action")
    return TransitionArrays(
        observations=matrix("observation"),
        actions=actions,
        rewards=vector("reward", np.float32),
        next_observations=matrix("next_observation"),
        terminals=vector("terminal", np.bool_),
        truncateds=vector("truncated", np.bool_),
        episode_ids=vector("episode_id", np.int64),
        steps=vector("step", np.int32),
    )


def collected_by_policy(table: pa.Table) -> np.ndarray:
    """Per row, whether a policy collected it (source `policy:<id>`) rather than it being logged."""
    return pc.starts_with(table.column("source"), POLICY_SOURCE_PREFIX).to_numpy(zero_copy_only=False)


def arrays_to_arrow(data: TransitionArrays, spec: DatasetSpec, source: str = "logged", batch_id: str = "") -> pa.Table:
    """The arrays as a table in the dataset's Arrow schema."""
    schema = transition_schema(spec)
    rows = len(data)

    def fixed_list(values: np.ndarray, size: int) -> pa.Array:
        return pa.FixedSizeListArray.from_arrays(pa.array(values.reshape(-1).astype(np.float32)), size)

    if isinstance(spec.action, ContinuousActionSpec):
        actions = fixed_list(data.actions, spec.action.size)
    else:
        actions = pa.array(data.actions.astype(np.int64))
    columns = [
        pa.array(data.episode_ids.astype(np.int64)),
        pa.array(data.steps.astype(np.int32)),
        fixed_list(data.observations, spec.observation.size),
        actions,
        pa.array(data.rewards.astype(np.float32)),
        fixed_list(data.next_observations, spec.observation.size),
        pa.array(data.terminals.astype(np.bool_)),
        pa.array(data.truncateds.astype(np.bool_)),
        pa.array([source] * rows, pa.string()),
        pa.array([batch_id] * rows, pa.string()),
    ]
    return pa.Table.from_arrays(columns, schema=schema)


def episode_returns(data: TransitionArrays) -> tuple[np.ndarray, np.ndarray]:
    """Returns and lengths of the finished episodes (those with a terminal or truncated row)."""
    ended = data.terminals | data.truncateds
    finished = np.unique(data.episode_ids[ended])
    keep = np.isin(data.episode_ids, finished)
    ids, inverse = np.unique(data.episode_ids[keep], return_inverse=True)
    returns = np.bincount(inverse, weights=data.rewards[keep].astype(np.float64), minlength=len(ids))
    lengths = np.bincount(inverse, minlength=len(ids))
    return returns, lengths


def normalisation_from_arrays(data: TransitionArrays) -> Normalisation:
    """Observation mean/std and the reward scale of a dataset (see the module docstring)."""
    if len(data) == 0:
        raise ValueError("the dataset has no transitions to compute statistics from")
    observations = data.observations.astype(np.float64)
    returns, lengths = episode_returns(data)
    rewards = data.rewards.astype(np.float64)
    return Normalisation(
        observation_mean=observations.mean(0).astype(np.float32),
        observation_std=np.maximum(observations.std(0), OBSERVATION_STD_FLOOR).astype(np.float32),
        reward_scale=reward_scale(
            return_spread=float(returns.max() - returns.min()) if len(returns) else 0.0,
            mean_absolute_return=float(abs(returns.mean())) if len(returns) else 0.0,
            mean_episode_length=float(lengths.mean()) if len(lengths) else 0.0,
            reward_std=float(rewards.std()),
            largest_reward=float(np.abs(rewards).max()),
        ),
    )


def normalisation_from_statistics(statistics: Mapping[str, Any]) -> Normalisation:
    """The same normalisation from a version's statistics (`VersionStats` as a dict)."""
    observation = statistics.get("observation")
    if not observation:
        raise ValueError("the version's statistics have no observation statistics (is it empty?)")
    reward = statistics["reward"]
    episode_return = statistics["episode_return"]
    episode_length = statistics["episode_length"]
    finished = episode_return.get("count") or 0
    return Normalisation(
        observation_mean=np.asarray(observation["mean"], dtype=np.float32),
        observation_std=np.maximum(np.asarray(observation["std"], dtype=np.float32), OBSERVATION_STD_FLOOR),
        reward_scale=reward_scale(
            return_spread=float(episode_return["max"] - episode_return["min"]) if finished else 0.0,
            mean_absolute_return=abs(float(episode_return["mean"])) if finished else 0.0,
            mean_episode_length=float(episode_length.get("mean") or 0.0),
            reward_std=float(reward.get("std") or 0.0),
            largest_reward=max(abs(reward.get("min") or 0.0), abs(reward.get("max") or 0.0)),
        ),
    )


def reward_scale(
    return_spread: float,
    mean_absolute_return: float,
    mean_episode_length: float,
    reward_std: float,
    largest_reward: float,
) -> float:
    """The positive factor rewards are multiplied by (see the module docstring)."""
    denominator = max(return_spread, mean_absolute_return)
    if denominator > 0.0 and mean_episode_length > 0.0:
        scale = mean_episode_length / denominator
    elif reward_std > 0.0:
        scale = 1.0 / reward_std
    else:
        scale = 1.0
    if largest_reward > 0.0:
        scale = min(scale, MAX_SCALED_REWARD / largest_reward)
    return float(scale)
