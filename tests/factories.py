"""What many tests build: random transitions for a dataset spec, whole episodes as an upload table, and torch
on one thread (small networks on a couple of shared cores train fastest that way, and reproducibly)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import torch

from schemas.dataset import ContinuousActionSpec, DatasetSpec
from workers.algos.data import TransitionArrays


@contextmanager
def torch_threads(count: int = 1) -> Iterator[None]:
    """Torch's intra-op threads set to `count` inside the block, and back as they were after it."""
    before = torch.get_num_threads()
    torch.set_num_threads(count)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def random_transitions(spec: DatasetSpec, rows: int = 256, episode_length: int = 50, seed: int = 0) -> TransitionArrays:
    """Rows of `spec`'s shapes with no dynamics behind them, in episodes of `episode_length` that end truncated.

    Observations are off-centre (mean 3, std 2), so normalising them changes them; actions are uniform within
    the bounds (or over the n actions), rewards standard normal.
    """
    rng = np.random.default_rng(seed)
    size = spec.observation.size
    if isinstance(spec.action, ContinuousActionSpec):
        actions = rng.uniform(spec.action.low, spec.action.high, (rows, spec.action.size)).astype(np.float32)
    else:
        actions = rng.integers(spec.action.n, size=rows)
    step = np.arange(rows) % episode_length
    return TransitionArrays(
        observations=rng.normal(3.0, 2.0, (rows, size)).astype(np.float32),
        actions=actions,
        rewards=rng.normal(size=rows).astype(np.float32),
        next_observations=rng.normal(3.0, 2.0, (rows, size)).astype(np.float32),
        terminals=np.zeros(rows, bool),
        truncateds=step == episode_length - 1,
        episode_ids=np.arange(rows) // episode_length,
        steps=step.astype(np.int32),
    )


def upload_rows(
    episodes: int = 2,
    length: int = 5,
    first_episode: int = 0,
    first_step: int = 0,
    observation_size: int = 11,
    action_size: int | None = 3,
    end: str = "terminal",
    seed: int = 0,
    source: str | None = None,
) -> pa.Table:
    """Whole episodes (the last row ends each, by `end`: terminal, truncated or none) as an upload table;
    `action_size` None gives discrete actions out of 4."""
    rng = np.random.default_rng(seed)
    n = episodes * length
    step = np.tile(np.arange(first_step, first_step + length), episodes).astype(np.int32)
    last = np.tile(np.arange(length) == length - 1, episodes)

    def vectors(size: int) -> pa.FixedSizeListArray:
        return pa.FixedSizeListArray.from_arrays(pa.array(rng.normal(size=n * size).astype(np.float32)), size)

    action = (
        pa.FixedSizeListArray.from_arrays(pa.array(rng.uniform(-1, 1, n * action_size).astype(np.float32)), action_size)
        if action_size
        else pa.array(rng.integers(0, 4, n), pa.int64())
    )
    columns: dict[str, Any] = {
        "episode_id": pa.array(first_episode + np.repeat(np.arange(episodes), length), pa.int64()),
        "step": pa.array(step),
        "observation": vectors(observation_size),
        "action": action,
        "reward": pa.array(rng.normal(size=n).astype(np.float32)),
        "next_observation": vectors(observation_size),
        "terminal": pa.array(last & (end == "terminal")),
        "truncated": pa.array(last & (end == "truncated")),
    }
    if source is not None:
        columns["source"] = pa.array([source] * n)
    return pa.table(columns)


def self_loop(terminal: bool, discrete: bool) -> TransitionArrays:
    """One state that leads back to itself with reward 1, ending (terminal) or not (truncated): its value is
    known exactly (1 with a terminal, 1 / (1 - gamma) without), Pendulum-shaped or CartPole-shaped."""
    n = 64
    observation = np.tile(np.array([[0.5, -0.5, 0.25, 0.0][: 4 if discrete else 3]], np.float32), (n, 1))
    return TransitionArrays(
        observations=observation,
        actions=np.zeros(n, np.int64) if discrete else np.full((n, 1), 0.4, np.float32),
        rewards=np.ones(n, np.float32),
        next_observations=observation.copy(),
        terminals=np.full(n, terminal),
        truncateds=np.full(n, not terminal),
        episode_ids=np.arange(n, dtype=np.int64),
        steps=np.zeros(n, np.int32),
    )


def d4rl_npz(path: Path, episodes: int, seed: int, length: int = 10, observation_size: int = 3) -> Path:
    """A bare D4RL-layout NPZ (no episode ids, so the reader numbers them): every episode ends in a
    terminal, so every row is kept."""
    rng = np.random.default_rng(seed)
    n = episodes * length
    np.savez(
        path,
        observations=rng.normal(size=(n, observation_size)).astype(np.float32),
        actions=rng.uniform(-1, 1, size=(n, 1)).astype(np.float32),
        rewards=rng.normal(size=n).astype(np.float32),
        terminals=np.arange(n) % length == length - 1,
        timeouts=np.zeros(n, bool),
    )
    return path
